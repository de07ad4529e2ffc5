"""Memory probe: one single-member peergrid process loads N entries and reports its RSS
growth, as one JSON line on stdout:

    python -m benchmarks._grid_memory --entries 1000000 --value-size 100 [--ttl 3600]

Keys and values are made in chunks and dropped after each put_all, so the growth is what
the member keeps, plus the interpreter's arenas left over from the chunks (a few MB at most).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
from pathlib import Path

from benchmarks._workload import key_name

CHUNK = 10_000


def rss_bytes() -> int:
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def load(grid_map: object, entries: int, value_size: int, ttl: float | None = None) -> int:
    """put_all `entries` entries in chunks (each with `ttl`); the key and value bytes written."""
    payload = 0
    for start in range(0, entries, CHUNK):
        chunk = {key_name(i): os.urandom(value_size) for i in range(start, min(entries, start + CHUNK))}
        payload += sum(len(k.encode()) + len(v) for k, v in chunk.items())
        grid_map.put_all(chunk, ttl=ttl)  # type: ignore[attr-defined]
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, required=True)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--ttl", type=float, help="seconds: every entry with this TTL (what expiry costs)")
    args = parser.parse_args()
    peergrid = importlib.import_module("peergrid")
    grid = peergrid.Grid(cluster="bench-memory", bind="127.0.0.1:0", members=[], backup_count=0)
    try:
        grid_map = grid.get_map("bench")
        grid_map.set("warm-up", b"x" * args.value_size)  # first-use allocations are not per entry
        gc.collect()
        before = rss_bytes()
        payload = load(grid_map, args.entries, args.value_size, args.ttl)
        gc.collect()
        grown = rss_bytes() - before
        owned = grid_map.local_stats().owned_entries
        if owned != args.entries + 1:
            raise RuntimeError(f"member owns {owned} entries, expected {args.entries + 1}")
    finally:
        grid.shutdown()
    figures = {"entries": args.entries, "grown_bytes": grown, "payload_bytes": payload}
    print(json.dumps(figures | ({"ttl": args.ttl} if args.ttl else {})))


if __name__ == "__main__":
    main()
