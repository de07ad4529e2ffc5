"""``@grid.cached``: a slow function's results shared by every member, computed once.

    python examples/cached_function.py

Each process decorates its own function; here two members live in one process,
so the same function is decorated once per member. A result computed through
one member is a hit through the other, and concurrent misses of one key, from
any member, run the function once. If the grid cannot answer within the
decorator's ``timeout``, the function simply runs (see ``cache_info()``).
"""

import threading
import time

import peergrid

calls: list[str] = []


def fetch_price(item: str) -> float:
    """Stands for a slow database query or HTTP call."""
    calls.append(item)
    time.sleep(0.5)
    return {"apple": 1.25, "pear": 0.80}.get(item, 0.0)


with (
    peergrid.Grid(cluster="cached-function") as first,
    peergrid.Grid(cluster="cached-function", members=[first.address]) as second,
):
    first.wait_until_safe(timeout=10)
    price_here = first.cached("prices", ttl=60)(fetch_price)
    price_there = second.cached("prices", ttl=60)(fetch_price)

    started = time.perf_counter()
    print(f"apple through the first member:  {price_here('apple')}", end="")
    print(f"  ({(time.perf_counter() - started) * 1000:.1f} ms, computed)")
    started = time.perf_counter()
    print(f"apple through the second member: {price_there('apple')}", end="")
    print(f"  ({(time.perf_counter() - started) * 1000:.1f} ms, from the map)")

    results: list[float] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append((price_here, price_there)[i % 2]("pear")))
        for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"20 concurrent callers on 2 members: pear = {set(results)}, computed {calls.count('pear')}x")
    print("first member: ", price_here.cache_info())
    print("second member:", price_there.cache_info())
    assert calls == ["apple", "pear"]
