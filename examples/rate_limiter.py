"""A fixed-window rate limiter shared by two members: at most 5 requests per client per second.

    python examples/rate_limiter.py

Every request increments a counter named after the client and the current
window. ``increment`` runs atomically on the counter's owner, so requests
through any member count against the same budget; the first increment of a
window creates the counter with a TTL, so finished windows clean themselves up
(an existing counter keeps its expiry: later increments do not extend it).
"""

import time

import peergrid

LIMIT = 5  # requests per client per window
WINDOW = 1.0  # seconds


def allowed(counters: peergrid.DistributedMap, client: str) -> bool:
    """Count one request of ``client``; True while it is within its budget."""
    window = int(time.time() // WINDOW)
    # Twice the window: a member whose clock runs a little behind still finds the counter.
    count = counters.increment(f"{client}:{window}", ttl=2 * WINDOW)
    return count <= LIMIT


with (
    peergrid.Grid(cluster="rate-limiter") as first,
    peergrid.Grid(cluster="rate-limiter", members=[first.address]) as second,
):
    first.wait_until_safe(timeout=10)
    members = [first.get_map("rate"), second.get_map("rate")]

    time.sleep(WINDOW - time.time() % WINDOW)  # start at the beginning of a window
    alice = [allowed(members[i % 2], "alice") for i in range(8)]  # through both members in turn
    bob = [allowed(members[i % 2], "bob") for i in range(3)]
    print("alice, 8 requests through 2 members:", ["ok" if ok else "429" for ok in alice])
    print("bob, 3 requests:", ["ok" if ok else "429" for ok in bob])
    assert alice == [True] * LIMIT + [False] * 3
    assert bob == [True] * 3

    time.sleep(WINDOW - time.time() % WINDOW)  # the next window: a fresh budget
    print("alice, next window:", "ok" if allowed(members[1], "alice") else "429")
