"""The command line of a benchmark section that can also run alone (nearcache, concurrency)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from benchmarks._proc import Placement


def run_alone(
    argv: list[str] | None, prog: str, doc: str, measure: Callable[[Placement, Any], str], settings: Any
) -> int:
    """Parse ``--quick/--unpinned/--cpu``, pin, measure with ``settings`` (or its quick form), print."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--unpinned", action="store_true", help="let the OS place every process")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (default: 0)")
    args = parser.parse_args(argv)
    placement = Placement(None if args.unpinned else frozenset({args.cpu}))
    placement.pin_current_process()
    print(measure(placement, settings.quick() if args.quick else settings))
    return 0
