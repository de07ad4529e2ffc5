"""A member-less mDNS probe for the namespace tests: announce, browse, report.

Runs one `MdnsDiscovery` and prints JSON lines on stdout:

    {"event": "started"}
    {"event": "peers", "peers": [{"uuid": ..., "address": ..., "cluster": ...}]}
    {"event": "closed", "first_close_s": 0.41, "second_close_s": 0.0}

A ``peers`` line is printed whenever the visible set changes. On SIGTERM or
SIGINT the probe closes the discovery twice (timing both calls), prints
``closed`` and exits 0. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType

# Run as a script from anywhere: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peergrid.cluster.mdns import DiscoveredPeer, MdnsDiscovery


def main() -> int:
    args = _parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    stop = threading.Event()
    changed = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        changed.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    discovery = MdnsDiscovery(
        cluster=args.cluster,
        member_uuid=args.uuid,
        host=args.host,
        port=args.port,
        on_change=changed.set,
    )
    discovery.start()
    _emit({"event": "started"})
    last: list[DiscoveredPeer] | None = None
    while not stop.is_set():
        changed.wait(0.5)
        changed.clear()
        peers = discovery.peers()
        if peers != last:
            _emit({"event": "peers", "peers": [asdict(p) for p in peers]})
            last = peers
    first = _timed(discovery.close)
    second = _timed(discovery.close)
    _emit({"event": "closed", "first_close_s": first, "second_close_s": second})
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--uuid", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--debug", action="store_true")
    return parser.parse_args()


def _timed(call: Callable[[], None]) -> float:
    started = time.monotonic()
    call()
    return round(time.monotonic() - started, 3)


def _emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


if __name__ == "__main__":
    sys.exit(main())
