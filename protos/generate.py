"""Regenerate peergrid's gRPC code from the .proto files beside this script.

    python protos/generate.py            # writes peergrid/transport/_pb/
    python protos/generate.py --out DIR  # writes DIR/peergrid/transport/_pb/ (used by the freshness test)

Needs grpcio-tools (in the ``test`` extra). The protos are mapped onto the
package path so the generated modules import each other as
``peergrid.transport._pb.<name>_pb2``.

The committed code is generated with grpcio-tools 1.62.3 (protobuf 4.25), the oldest that
supports what the protos use (proto3, streams, ``--pyi_out``): code from grpcio-tools 1.63
and later refuses to import under an older grpcio, and code from protoc 26 and later under
an older protobuf, which would force those floors on every application. Regenerate with it:

    python3.11 -m venv /tmp/tools && /tmp/tools/bin/pip install grpcio-tools==1.62.3
    /tmp/tools/bin/python protos/generate.py

``tests/test_protos.py`` checks freshness with any grpcio-tools (it compares the file
descriptors and service methods, not bytes), and that no version check crept in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "peergrid/transport/_pb"


def generate(out: Path) -> list[Path]:
    """Run protoc on every .proto here; return the files written."""
    from grpc_tools import protoc  # only needed to regenerate

    target = out / PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    protos = sorted(HERE.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PACKAGE}={HERE}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--pyi_out={out}",
        *(f"{PACKAGE}/{p.name}" for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = target / "__init__.py"
    init.write_text('"""Generated gRPC code: do not edit; run python protos/generate.py."""\n')
    return [*sorted(target.glob("*_pb2*.py*")), init]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE.parent, help="root to write under")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out))


if __name__ == "__main__":
    sys.exit(main())
