"""Maps, the caller's side: each operation written once (``core``, as ``flows``), the sync and
async maps that drive it (``sync``, ``aio``), locks and ``@cached``."""
