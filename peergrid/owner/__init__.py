"""The owner's side of an operation: validate and run it (``executor``), around every write
(``writes``: bounds, eviction, events, expiry), a map's database (``stores``), entry
processors and locks (``compute``, ``processors``)."""
