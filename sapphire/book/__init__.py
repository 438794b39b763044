"""L2 order book: ``l2.L2Book`` (reference, sequencing) and its numba fast path.

``sapphire.book.fast`` (array book, ``replay_depth``) and ``sapphire.book.sync``
(``sync_plan`` for recorded files) import numba, so they are not imported here.
"""

from sapphire.book.l2 import BookError, DeltaResult, L2Book

__all__ = ["BookError", "DeltaResult", "L2Book"]
