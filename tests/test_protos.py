"""The committed generated code matches the .proto files, and keeps the dependency floors low.

The committed code is generated with the oldest grpcio-tools that supports what the protos
use (see protos/generate.py): code from newer tools checks at import that grpcio and protobuf
are at least as new as the tools, which would force those floors on every application. So
freshness is checked by what the code describes (the serialized file descriptors and the
service methods), regenerated with whichever grpcio-tools is installed, not byte for byte.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "peergrid" / "transport" / "_pb"
_DESCRIPTOR = re.compile(r"AddSerializedFile\((b'.*?')\)", re.S)
_METHOD = re.compile(r"channel\.(unary_unary|unary_stream|stream_unary|stream_stream)\(\s*'([^']+)'")


def described(folder: Path) -> dict[str, object]:
    """What the generated modules describe: each file descriptor, and each service method."""
    found: dict[str, object] = {}
    for path in sorted(folder.glob("*_pb2.py")):
        [literal] = _DESCRIPTOR.findall(path.read_text())
        found[path.name] = ast.literal_eval(literal)
    for path in sorted(folder.glob("*_pb2_grpc.py")):
        found[path.name] = sorted(_METHOD.findall(path.read_text()))
    return found


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "peergrid" / "transport" / "_pb"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in COMMITTED.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    assert described(fresh) == described(COMMITTED), "regenerate: see protos/generate.py"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_generated_code_asks_no_newer_runtime_than_the_floors() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = dict(re.match(r"([\w-]+)>=([\d.]+)", d).groups() for d in project["dependencies"])  # type: ignore[union-attr]
    for path in COMMITTED.glob("*_pb2*.py"):
        text = path.read_text()
        assert "ValidateProtobufRuntimeVersion" not in text, path.name  # protoc >= 26 adds it
        assert "GRPC_GENERATED_VERSION" not in text, path.name  # grpcio-tools >= 1.63 adds it
        made_by = re.search(r"# Protobuf Python Version: ([\d.]+)", text)
        if made_by:
            assert _version(made_by.group(1)) <= _version(floors["protobuf"]), path.name
