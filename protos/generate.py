"""Regenerate peergrid's gRPC code from the .proto files beside this script.

    python protos/generate.py            # writes peergrid/transport/_pb/
    python protos/generate.py --out DIR  # writes DIR/peergrid/transport/_pb/ (used by the freshness test)

Needs grpcio-tools (in the ``test`` extra). The protos are mapped onto the
package path so the generated modules import each other as
``peergrid.transport._pb.<name>_pb2``.
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
