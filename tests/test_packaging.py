"""The distributions: what the sdist carries, and the wheel installed in a fresh venv runs.

Both are built with setuptools' own build backend (the one pyproject.toml names), so no
build tool beyond the test environment's setuptools is needed. The venv test installs the
wheel's dependencies from the package index, as a user's ``pip install`` would.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build(kind: str, out: Path) -> Path:
    """Build the sdist or the wheel of the worktree into ``out``; return its path."""
    source = out / "source"  # a copy: building writes peergrid.egg-info and build/ beside it
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", ".hypothesis", "__pycache__", "*.egg-info", "build", "dist", ".*_cache"
        ),
    )
    code = f"from setuptools import build_meta; print(build_meta.build_{kind}({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


def test_the_sdist_carries_what_its_tests_need(tmp_path: Path) -> None:
    sdist = build("sdist", tmp_path)
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        info = archive.extractfile(next(n for n in archive.getnames() if n.endswith("/PKG-INFO")))
        assert info is not None
        metadata = email.message_from_bytes(info.read())
    for needed in (
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "MANIFEST.in",
        "protos/map.proto",
        "protos/generate.py",
        "examples/quickstart.py",
        "docs/fork.md",
        "tests/conftest.py",
        "tests/strategies.py",
        "tests/test_map.py",
        "tests/jepsen/runner.py",
        "peergrid/transport/_pb/map_pb2.py",
        "peergrid/py.typed",
    ):
        assert needed in names, needed
    assert not any("__pycache__" in name for name in names)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Programming Language :: Python :: 3.11" in metadata.get_all("Classifier", [])
    assert metadata["Keywords"]
    requires = metadata.get_all("Requires-Dist", [])
    assert "grpcio>=1.62.3" in requires
    assert "protobuf>=4.25.1" in requires


@pytest.mark.slow  # ~1 min (pip installs grpcio and the rest); runs in the default run too
@pytest.mark.timeout(600)
def test_the_wheel_installs_in_a_fresh_venv_and_runs_the_quickstart(tmp_path: Path) -> None:
    wheel = build("wheel", tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "peergrid/transport/_pb/map_pb2.py" in names
    assert not any(name.startswith(("tests/", "examples/")) for name in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    # Run from an empty folder with a clean environment: only the installed package is found.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    run = tmp_path / "run"
    run.mkdir()
    quickstart = subprocess.run(
        [str(python), str(ROOT / "examples" / "quickstart.py")],
        cwd=run,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert quickstart.returncode == 0, quickstart.stderr[-3000:]
    assert " owns 2 entries" in quickstart.stdout
    where = subprocess.run(
        [str(python), "-c", "import peergrid; print(peergrid.__file__)"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(venv) in where.stdout
    version = subprocess.run(
        [str(venv / "bin" / "peergrid"), "--version"], env=env, capture_output=True, text=True, check=False
    )
    assert version.returncode == 0
    assert version.stdout.startswith("peergrid ")
