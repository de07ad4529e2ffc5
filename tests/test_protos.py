"""The committed generated code matches the .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "peergrid" / "transport" / "_pb"
    committed = ROOT / "peergrid" / "transport" / "_pb"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    stale = [name for name in names if (fresh / name).read_bytes() != (committed / name).read_bytes()]
    assert not stale, f"regenerate with: python protos/generate.py (stale: {stale})"
