"""The ``peergrid`` command as a user runs it: a subprocess, its exit code and its stderr.

Exit 2 and one line on stderr for a usage or configuration error, 1 for a failure at run time,
never a traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

import peergrid


def peergrid_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peergrid", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_version() -> None:
    done = peergrid_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"peergrid {peergrid.__version__}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--entries", "-5"], "--entries: -5 is less than 1"),
        (["demo", "--members", "2"], "--members: 2 is less than 3"),
        (["member", "--backup-count", "x"], "'x' is not a whole number"),
        (["member", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "required: command"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = peergrid_cli(*args)
    assert done.returncode == 2
    assert message in one_line(done.stderr)


def test_a_bad_bind_address_is_one_line_and_exit_2_even_verbose() -> None:
    done = peergrid_cli("member", "-v", "--bind", "256.1.1.1:0")
    assert done.returncode == 2
    assert "BindError: cannot bind 256.1.1.1:0" in one_line(done.stderr)


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = peergrid_cli("member", "--bind", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert "already in use" in one_line(done.stderr)


def test_unreadable_tls_files_are_one_line_and_exit_2(tmp_path) -> None:
    missing = str(tmp_path / "missing.pem")
    done = peergrid_cli("member", "--tls-cert", missing, "--tls-key", missing, "--tls-ca", missing)
    assert done.returncode == 2
    assert "cannot read the TLS certificate file" in one_line(done.stderr)


def test_a_failure_at_run_time_is_one_line_and_exit_1() -> None:
    # A failure no option fixes (here a timeout raised by the member command) exits 1.
    script = (
        "import peergrid, peergrid.cli as cli\n"
        "def fail(args): raise peergrid.OperationTimeoutError('no answer within 1.0s')\n"
        "cli._member = fail\n"
        "cli.main(['member'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert one_line(done.stderr) == "peergrid: OperationTimeoutError: no answer within 1.0s"


def test_verbose_is_accepted_after_the_command_and_a_member_runs_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "peergrid", "member", "-v", "--fast"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "INFO" in stderr  # -v after the command logs at INFO level
    # A dedicated member moves what start-up made out of the collector's reach (full
    # collections during bulk loads held its loop ~25 ms each).
    assert "objects alive at start-up moved out of the garbage collector's reach" in stderr


def test_run_demo_refuses_bad_counts_before_starting_anything() -> None:
    from peergrid.demo import run_demo

    with pytest.raises(peergrid.ConfigError, match="at least 1 entry"):
        run_demo(entries=-5)
    with pytest.raises(peergrid.ConfigError, match="at least 3 members"):
        run_demo(members=2)
