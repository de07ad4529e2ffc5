"""The ``peergrid`` command: run a standalone member, or the demo.

    peergrid member --cluster NAME --bind HOST:PORT --members A,B [--backup-count N] [--discovery mdns]
    peergrid demo
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from peergrid.errors import PeerGridError

log = logging.getLogger("peergrid.cli")


def _member(args: argparse.Namespace) -> int:
    from peergrid.config import Timing
    from peergrid.grid import Grid

    options = {
        "cluster": args.cluster,
        "bind": args.bind,
        "members": [m for m in (args.members or "").split(",") if m],
        "backup_count": args.backup_count,
        "discovery": args.discovery,
        "min_cluster_size": args.min_cluster_size,
    }
    if args.fast:
        options["timing"] = Timing.fast()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with Grid(**options) as grid:
        # The first line is machine-readable: tests and scripts wait for it.
        print(f"peergrid member {grid.uuid} listening on {grid.address}", flush=True)
        stop.wait()
        log.info("member %s leaving the cluster", grid.address)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from peergrid.demo import run_demo

    return run_demo(members=args.members, entries=args.entries)


def parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    root = argparse.ArgumentParser(prog="peergrid", description="An embedded peer-to-peer data grid.")
    root.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = root.add_subparsers(dest="command", required=True)

    member = commands.add_parser("member", help="run a standalone member until SIGINT/SIGTERM")
    member.add_argument("--cluster", default="peergrid", help="cluster name (default: peergrid)")
    member.add_argument("--bind", default="127.0.0.1:0", help="HOST:PORT to serve on (port 0: any free)")
    member.add_argument("--members", default="", help="comma-separated seed addresses HOST:PORT")
    member.add_argument("--backup-count", type=int, default=1, help="synchronous backups (default 1)")
    member.add_argument("--discovery", choices=("static", "mdns"), default="static")
    member.add_argument("--min-cluster-size", type=int, default=1, help="refuse writes below this size")
    member.add_argument("--fast", action="store_true", help="short test timings (loopback test clusters)")
    member.set_defaults(run=_member)

    demo = commands.add_parser("demo", help="start a small cluster, write, kill a member, read everything")
    demo.add_argument("--members", type=int, default=4, help="members to run (default 4)")
    demo.add_argument("--entries", type=int, default=5000, help="entries to write (default 5000)")
    demo.set_defaults(run=_demo)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``peergrid`` command."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        sys.exit(args.run(args))
    except PeerGridError as exc:
        print(f"peergrid: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
