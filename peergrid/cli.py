"""The ``peergrid`` command: run a standalone member, or the demo.

peergrid member --cluster NAME --bind HOST:PORT --members A,B [--backup-count N] [--discovery mdns]
                [--tls-cert FILE --tls-key FILE --tls-ca FILE [--tls-server-name NAME]]
peergrid demo [--members N] [--entries N]
peergrid --version

Exit codes: 0 done; 2 a usage or configuration error (a bad option, an address that cannot be
bound, unusable TLS files, a seed of another cluster name); 1 a failure at run time.
Errors are one line on stderr, never a traceback (``-v``, before or after the command, logs more).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from peergrid.errors import (
    ArgumentError,
    BindError,
    ClusterNameMismatchError,
    ConfigError,
    PeerGridError,
    TLSError,
)

if TYPE_CHECKING:
    from peergrid.grid import Grid

log = logging.getLogger("peergrid.cli")


def _tls(args: argparse.Namespace) -> Any:
    """The TLS config the ``--tls-*`` options name, or None without them."""
    from peergrid.config import TLSConfig
    from peergrid.errors import ConfigError

    files = (args.tls_cert, args.tls_key, args.tls_ca)
    if not any(files) and not args.tls_server_name:
        return None
    if not all(files):
        raise ConfigError("mutual TLS needs all three of --tls-cert, --tls-key and --tls-ca")
    return TLSConfig.from_files(args.tls_cert, args.tls_key, args.tls_ca, args.tls_server_name or "")


def _member(args: argparse.Namespace) -> int:
    from peergrid.config import Timing
    from peergrid.grid import Grid

    options: dict[str, Any] = {
        "cluster": args.cluster,
        "bind": args.bind,
        "members": [m for m in (args.members or "").split(",") if m],
        "backup_count": args.backup_count,
        "discovery": args.discovery,
        "min_cluster_size": args.min_cluster_size,
        "heartbeat_fanout": args.heartbeat_fanout,
        "serializer": args.serializer,
        "tls": _tls(args),
    }
    if args.fast:
        options["timing"] = Timing.fast()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with Grid(**options) as grid:
        _freeze_collector()
        # The first line is machine-readable: tests and scripts wait for it.
        print(f"peergrid member {grid.uuid} listening on {grid.address}", flush=True)
        if args.commands:
            threading.Thread(target=_serve_commands, args=(grid, stop), daemon=True).start()
        stop.wait()
        log.info("member %s leaving the cluster", grid.address)
    return 0


def _freeze_collector() -> None:
    """Move everything alive once the member started (grpc, protobuf, the modules: ~34,000
    objects) out of Python's cyclic collector's reach, so that a full collection walks only what
    was made since: ~2 ms rather than ~25 ms of a loop step on a slow core during a bulk load
    (docs/operations.md, "Python's garbage collector"). This process is the member's own; an
    application embedding one decides for its process."""
    gc.collect()
    gc.freeze()
    log.info("%d objects alive at start-up moved out of the garbage collector's reach", gc.get_freeze_count())


def _serve_commands(grid: Grid, stop: threading.Event) -> None:
    """Run JSON commands from stdin through this member, one answer line each.

    A line is ``{"op": "put", "map": "m", "key": "k", "value": 1}`` (ops: put,
    set, get, delete, increment with an optional "delta", get_all with "keys", size, safe with
    "timeout", members,
    owner with "key": the address of the key's owner; fill and check with "count": write keys
    "0".."count-1" with their number as value, count those missing or wrong). ``"near_cache": S`` gives
    the map a near cache with ``max_staleness=S`` (configure a map the same way
    in every command that names it); the
    answer is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error":
    "TypeName", "message": "..."}``. End of input stops the member.
    """
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            answer = {"ok": True, "result": _run_command(grid, command)}
        except PeerGridError as exc:
            answer = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            answer = {"ok": False, "error": "BadCommand", "message": repr(exc)}
        print(json.dumps(answer), flush=True)
    stop.set()


def _run_command(grid: Grid, command: dict[str, Any]) -> Any:
    op = command["op"]
    if op == "safe":
        return grid.wait_until_safe(float(command.get("timeout", 10)))
    if op == "members":
        return [m.address for m in grid.members()]
    if op == "owner":
        owner = grid.owner_of(command["key"])
        return owner.address if owner is not None else None
    options: dict[str, Any] = {}
    if "near_cache" in command:
        from peergrid.config import NearCacheConfig

        options["near_cache"] = NearCacheConfig(max_staleness=float(command["near_cache"]))
    m = grid.get_map(command.get("map", "default"), **options)
    if op in ("put", "set"):
        return getattr(m, op)(command["key"], command["value"])
    if op in ("get", "delete"):
        return getattr(m, op)(command["key"])
    if op == "increment":
        return m.increment(command["key"], int(command.get("delta", 1)))
    if op == "get_all":
        return m.get_all(command["keys"])
    if op == "size":
        return m.size()
    if op == "fill":  # keys "0".."count-1", value = key, in batches (benchmarks/scale.py)
        count = int(command["count"])
        for start in range(0, count, 1000):
            m.put_all({str(i): i for i in range(start, min(count, start + 1000))})
        return count
    if op == "check":  # how many of the keys "fill" wrote are missing or wrong
        count = int(command["count"])
        missing = 0
        for start in range(0, count, 1000):
            keys = [str(i) for i in range(start, min(count, start + 1000))]
            found = m.get_all(keys)
            missing += sum(found.get(k) != int(k) for k in keys)
        return missing
    raise ValueError(f"unknown op {op!r}")


def _demo(args: argparse.Namespace) -> int:
    from peergrid.demo import run_demo

    return run_demo(members=args.members, entries=args.entries)


#: Errors that a change of options or configuration fixes: exit code 2, as for a usage error.
USAGE_ERRORS = (ConfigError, ArgumentError, BindError, TLSError, ClusterNameMismatchError)


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors are one line on stderr (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _count(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    from peergrid import __version__

    root = _Parser(prog="peergrid", description="An embedded peer-to-peer data grid.")
    root.add_argument("--version", action="version", version=f"peergrid {__version__}")
    verbose = _Parser(add_help=False)
    # SUPPRESS: `peergrid -v member` and `peergrid member -v` both set it; neither unsets it.
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at INFO level"
    )
    root.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = root.add_subparsers(dest="command", required=True, parser_class=_Parser)

    member = commands.add_parser(
        "member", parents=[verbose], help="run a standalone member until SIGINT/SIGTERM"
    )
    member.add_argument("--cluster", default="peergrid", help="cluster name (default: peergrid)")
    member.add_argument("--bind", default="127.0.0.1:0", help="HOST:PORT to serve on (port 0: any free)")
    member.add_argument("--members", default="", help="comma-separated seed addresses HOST:PORT")
    member.add_argument("--backup-count", type=_count(0), default=1, help="synchronous backups (default 1)")
    member.add_argument("--discovery", choices=("static", "mdns"), default="static")
    member.add_argument("--min-cluster-size", type=_count(1), default=1, help="refuse writes below this size")
    member.add_argument(
        "--heartbeat-fanout",
        type=_count(1),
        default=10,
        help="most members whose heartbeats one member receives for the master (10000: no relays)",
    )
    member.add_argument(
        "--serializer", choices=("msgpack", "pickle"), default="msgpack", help="pickle needs the TLS options"
    )
    member.add_argument("--tls-cert", metavar="FILE", help="this member's certificate chain (PEM): TLS on")
    member.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    member.add_argument("--tls-ca", metavar="FILE", help="the cluster CA (PEM): peers need its certificates")
    member.add_argument(
        "--tls-server-name", metavar="NAME", help="the name every member's certificate carries, if not IPs"
    )
    member.add_argument("--fast", action="store_true", help="short test timings (loopback test clusters)")
    member.add_argument(
        "--commands",
        action="store_true",
        help="also run JSON map commands read from stdin (for scripts and tests)",
    )
    member.set_defaults(run=_member)

    demo = commands.add_parser(
        "demo", parents=[verbose], help="start a small cluster, write, kill a member, read everything"
    )
    demo.add_argument("--members", type=_count(3), default=4, help="members to run, 3 or more (default 4)")
    demo.add_argument("--entries", type=_count(1), default=5000, help="entries to write (default 5000)")
    demo.set_defaults(run=_demo)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``peergrid`` command: exits 0, 1 (a failure at run time) or 2 (a
    usage or configuration error), with one line on stderr for an error."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = args.run(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the command's one border: one line, never a traceback
        name = type(exc).__name__ if isinstance(exc, PeerGridError) else f"unexpected {type(exc).__name__}"
        print(f"peergrid: {name}: {exc}", file=sys.stderr, flush=True)
        sys.exit(2 if isinstance(exc, USAGE_ERRORS) else 1)
    sys.exit(code)
