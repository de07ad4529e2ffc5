"""Every fenced Python block in README.md and docs/*.md runs, as a script of its own.

A block runs as written, in a fresh interpreter, in a temporary folder. HTML comments on the
lines right before its fence (invisible when the page is rendered) say what it needs:

- ``<!-- setup: NAME, NAME -->`` runs the named setups of ``SETUPS`` below first (a block
  that continues the page's story: ``grid`` is a running member, ``users`` a map of it);
  ``async orders`` runs the block inside a coroutine with an ``AsyncGrid`` and its map;
- ``<!-- replace: OLD => NEW; OLD => NEW -->`` replaces text before running: for blocks that
  show a production configuration, whose addresses are other machines' (10.0.0.x);
- ``<!-- not run: WHY -->`` skips the block; WHY must say why (a configuration file that
  another program runs, such as gunicorn's).

A block that defines ``test_*`` functions (as the README's testing example) has them called.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SETUPS = {
    "grid": 'import peergrid\n\ngrid = peergrid.Grid(bind="127.0.0.1:0")\n',
    "users": 'users = grid.get_map("users")\n',
    "orders": 'orders = grid.get_map("orders")\n',
    "orders database": (
        "import sqlite3\n\n"
        'database = sqlite3.connect(":memory:")\n'
        'database.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, state TEXT, fence INTEGER)")\n'
        "database.execute(\"INSERT INTO orders VALUES (42, 'new', 0)\")\n"
    ),
    "dsn": 'import os\n\ndsn = os.environ.get("PEERGRID_TEST_POSTGRES_DSN", "postgresql://app@127.0.0.1/app")\n',
    "tls files": (
        "import trustme\n\n"
        "_ca = trustme.CA()\n"
        '_member = _ca.issue_cert("127.0.0.1")\n'
        '_ca.cert_pem.write_to_path("ca.pem")\n'
        '_member.cert_chain_pems[0].write_to_path("member.pem")\n'
        '_member.private_key_pem.write_to_path("member.key")\n'
    ),
}
ASYNC_SETUPS = {
    "async orders": (
        "import asyncio\n\nimport peergrid\n\n\n"
        "async def _main() -> None:\n"
        '    async with peergrid.AsyncGrid(bind="127.0.0.1:0") as grid:\n'
        '        orders = grid.get_map("orders")\n'
    ),
}
_ASYNC_INDENT = " " * 8
_ASYNC_END = "\n\nasyncio.run(_main())\n"
_CALL_TESTS = (
    "\n\nfor _name, _fn in list(globals().items()):\n"
    '    if _name.startswith("test_") and callable(_fn):\n'
    "        _fn()\n"
)
_MARKER = re.compile(r"^<!--\s*(setup|replace|not run):\s*(.*?)\s*-->$")


@dataclass
class Block:
    page: str
    line: int
    code: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        index = 0
        while index < len(lines):
            if lines[index].strip() != "```python":
                index += 1
                continue
            markers: dict[str, str] = {}
            back = index - 1
            while back >= 0 and (match := _MARKER.match(lines[back].strip())):
                markers[match.group(1)] = match.group(2)
                back -= 1
            end = lines.index("```", index + 1)
            code = "\n".join(lines[index + 1 : end]) + "\n"
            found.append(Block(str(page.relative_to(ROOT)), index + 1, code, markers))
            index = end + 1
    return found


def script_of(block: Block) -> str:
    code = block.code
    for pair in filter(None, (p.strip() for p in block.markers.get("replace", "").split(";"))):
        old, new = (part.strip() for part in pair.split("=>"))
        assert old in code, f"{block.name}: nothing to replace for {old!r}"
        code = code.replace(old, new)
    names = [n.strip() for n in block.markers.get("setup", "").split(",") if n.strip()]
    prelude = "".join(SETUPS[n] for n in names if n in SETUPS)
    asynchronous = [n for n in names if n in ASYNC_SETUPS]
    unknown = set(names) - set(SETUPS) - set(ASYNC_SETUPS)
    assert not unknown, f"{block.name}: unknown setup {unknown}"
    if asynchronous:
        [name] = asynchronous
        return prelude + ASYNC_SETUPS[name] + textwrap.indent(code, _ASYNC_INDENT) + _ASYNC_END
    return prelude + "\n" + code + _CALL_TESTS


ALL = blocks()


def test_every_page_has_its_blocks_found() -> None:
    pages = {b.page for b in ALL}
    assert {"README.md", "docs/fork.md", "docs/compute.md", "docs/stores.md"} <= pages
    for block in ALL:
        if "not run" in block.markers:
            assert len(block.markers["not run"]) > 20, f"{block.name}: say why it does not run"


def run_block(block: Block, folder: Path) -> str | None:
    """None when the block ran; else what went wrong."""
    folder.mkdir()
    script = folder / "block.py"
    script.write_text(script_of(block))
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
            env={**os.environ, "PYTHONPATH": path},
        )
    except subprocess.TimeoutExpired:
        return f"{block.name} did not end within 100 s"
    if done.returncode != 0:
        return f"{block.name} failed:\n{script.read_text()}\n{done.stderr[-3000:]}"
    return None


@pytest.mark.timeout(240)
def test_every_block_runs(tmp_path: Path) -> None:
    # In parallel: each block is mostly an interpreter and a member starting up.
    runnable = [b for b in ALL if "not run" not in b.markers]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        failures = [
            failure
            for failure in pool.map(lambda n: run_block(runnable[n], tmp_path / str(n)), range(len(runnable)))
            if failure is not None
        ]
    assert not failures, "\n\n".join(failures)
    assert len(runnable) >= 20


def test_the_readme_example_is_the_quickstart_script() -> None:
    readme = (ROOT / "README.md").read_text()
    script = (ROOT / "examples" / "quickstart.py").read_text()
    body = script[script.index("import os") :]
    assert f"```python\n{body}```" in readme


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _quickstart(address: str, seeds: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PEERGRID_MEMBERS": seeds},
    )


def _lines_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} line: {lines}; {proc.stderr.read() if proc.stderr else ''}")


@pytest.mark.timeout(120)
def test_the_quickstart_runs_as_the_same_script_in_two_processes() -> None:
    first, second = (f"127.0.0.1:{_free_port()}" for _ in range(2))
    seeds = f"{first},{second}"
    one = _quickstart(first, first)  # the first seed only: it starts alone at once
    two = None
    try:
        _lines_until(one, " owns ")
        two = _quickstart(second, seeds)
        seen = "".join(_lines_until(two, " owns "))
        assert f"members: {sorted([first, second])}" in seen
        assert f"'user:{first}': {{'name': 'written by {first}'}}" in seen  # the first one's entry
        for proc in (one, two):
            _, stderr = proc.communicate(timeout=60)  # end of input: leave
            assert proc.returncode == 0, stderr
    finally:
        for proc in (one, two):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
