"""Quickstart: two members in one process share a map.

python examples/quickstart.py
"""

import peergrid

with (
    peergrid.Grid(cluster="quickstart") as first,
    peergrid.Grid(cluster="quickstart", members=[first.address]) as second,
):
    users = first.get_map("users")
    users.put("user:1", {"name": "Alice"}, ttl=300)
    users["user:2"] = {"name": "Bob"}

    same_map = second.get_map("users")  # the same name is the same map on every member
    print("read through the other member:", same_map.get("user:1"), same_map["user:2"])
    print("entries:", len(same_map), "| user:2 present:", "user:2" in same_map)
    print("batch:", same_map.get_all(["user:1", "user:2", "nobody"]))
    first.wait_until_safe(timeout=10)
    for grid in (first, second):
        stats = grid.get_map("users").local_stats()
        print(f"{grid.address} owns {stats.owned_entries} and backs up {stats.backup_entries}")
