"""Quickstart: the same script in every process; each run is a member of one cluster.

    python examples/quickstart.py 127.0.0.1:5701     # a terminal: starts the cluster alone
    python examples/quickstart.py 127.0.0.1:5702     # another terminal: joins the first

This member's address comes from the first argument (or PEERGRID_BIND; without either, any
free port on loopback), the seeds from PEERGRID_MEMBERS (default: the two addresses above;
unreachable seeds are skipped, and a member's own address in the list is ignored). Each member
writes an entry, reads every entry the members wrote so far, and stays until Enter or end of
input (Ctrl-D), then hands its data over and leaves (on port 0 it leaves at once).
"""

import os
import sys

import peergrid

address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PEERGRID_BIND", "127.0.0.1:0")
seeds = os.environ.get("PEERGRID_MEMBERS", "127.0.0.1:5701,127.0.0.1:5702").split(",")

# Every process runs the same code; the first one starts alone, the others join it.
with peergrid.Grid(
    cluster="quickstart",  # members of another cluster are refused
    bind=address,  # this member's gRPC address (port 0: any free port)
    members=[] if address.endswith(":0") else seeds,  # seeds (a member on port 0 starts alone)
    backup_count=1,  # one synchronous backup of every partition
) as grid:
    users = grid.get_map("users")  # the same name is the same map on every member
    me = grid.address  # "host:port" actually bound
    users.put(f"user:{me}", {"name": f"written by {me}"}, ttl=300)  # returns the previous value
    users[f"started:{me}"] = len(grid.members())
    print("members:", sorted(m.address for m in grid.members()), flush=True)
    print("entries:", len(users), dict(sorted(users.items())), flush=True)  # every member's
    print("batch:", users.get_all([f"user:{me}", "nobody"]))  # one RPC per owning member
    grid.wait_until_safe(timeout=10)  # every backup in sync
    stats = users.local_stats()  # what this member holds
    print(f"{me} owns {stats.owned_entries} entries and backs up {stats.backup_entries}", flush=True)
    if address.endswith(":0"):
        pass  # alone on a port nobody knows: nothing to wait for
    elif sys.stdin.isatty():
        input("Enter leaves the cluster> ")
    else:
        sys.stdin.read()  # until end of input
# leaving the block hands this member's partitions over, then stops it
