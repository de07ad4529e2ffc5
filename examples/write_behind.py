"""Write-behind: acknowledge writes at memory speed, store them in batches later.

    python examples/write_behind.py

Page-view counters are written hundreds of times a second; the database only
needs the latest value now and then. Writes to the "views" map return at once
and reach the store after ``delay`` seconds, coalesced per key and batched.
Pending writes live with the partition (on its backups too), so they survive
the loss of their owner; ``flush()`` forces them out, e.g. before a deploy.
"""

import peergrid
from peergrid.stores import DictStore

database = DictStore()  # stands for any MapStore: SQLiteStore, PostgresStore, your own
config = {"views": peergrid.MapConfig(store=database, write_behind=peergrid.WriteBehindConfig(delay=2.0))}

with (
    peergrid.Grid(cluster="write-behind", maps=config) as a,
    peergrid.Grid(cluster="write-behind", members=[a.address], maps=config) as b,
):
    views = a.get_map("views")
    for hit in range(1, 501):
        views.set(f"page:{hit % 5}", hit)  # 500 writes to 5 keys
    print("acknowledged 500 writes; in the database so far:", database.snapshot())
    print("pending on the owners:", views.stats().total.write_behind_pending)
    b.get_map("views").flush()
    print("after flush():", database.snapshot())
    print("store calls for 500 writes:", dict(database.calls))
