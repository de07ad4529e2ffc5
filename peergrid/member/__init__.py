"""The member: the composition root (``node``), its runtime loop, what it answers peers,
merges and re-joins, and its metrics."""
