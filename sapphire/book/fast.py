"""Fast path: a numba price-indexed array book for replaying large depth files.

Layout (as hftbacktest's ROI vector): ``q[0, i]`` / ``q[1, i]`` hold the bid / ask quantity
at price ``base + i`` ticks, so a level update is one store; the best index per side is
tracked and only rescanned when the best level is deleted (the scan is short near the top
of a real book). The window is kept around the mid: it re-centres or doubles (from
Python, rarely) when a price near the market falls outside it, up to ``max_capacity``
ticks. A level more than ``max_capacity // 2`` ticks from the mid is not kept and is
counted in ``dropped``: real feeds do carry such levels (the USDT-M BTCUSDT recording has
asks at 10x the price), and keeping them would cost tens of megabytes per book for levels
no best price or top-N depth ever reaches. Everything within the window is exact.

Semantics are those of :meth:`L2Book.set_level` including the crossing rule (a positive
quantity at or through the best opposite price removes those opposite levels). Sequencing
is not done here: :func:`sapphire.book.sync.sync_plan` picks and orders the rows to apply.

Arrays use ``side`` = +1 bid / -1 ask (``Side`` values), ``price_ticks`` and ``qty_lots`` as
int64 (lots are the instrument's size increment, the book's size grid; see ``L2Book``).
Empty best levels are reported as price ``-1``, quantity ``0``.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np
import numpy.typing as npt

from sapphire.model.events import Side

I64Array = npt.NDArray[np.int64]
NO_PRICE = -1

# st[] slots
_BASE, _BEST_BID, _BEST_ASK, _N_BID, _N_ASK, _REJECTED, _DROPPED, _MAX_HALF = range(8)
_OK, _OUT_OF_RANGE = 0, 1


@nb.njit(cache=True, nogil=True)
def _apply(q: I64Array, st: I64Array, side: int, price: int, qty: int) -> int:
    if qty < 0 or price <= 0 or (side != 1 and side != -1):
        st[_REJECTED] += 1
        return _OK
    i = price - st[_BASE]
    size = q.shape[1]
    if i < 0 or i >= size:
        if qty == 0:
            return _OK  # everything in the book is inside the window: nothing to delete
        ref = _ref_index(st)
        if ref == -1:
            return _OUT_OF_RANGE
        if abs(i - ref) >= st[_MAX_HALF]:
            st[_DROPPED] += 1
            return _OK
        return _OUT_OF_RANGE
    if side == 1:
        me, other, n_me, n_other, best_me, best_other = 0, 1, _N_BID, _N_ASK, _BEST_BID, _BEST_ASK
    else:
        me, other, n_me, n_other, best_me, best_other = 1, 0, _N_ASK, _N_BID, _BEST_ASK, _BEST_BID
    old = q[me, i]
    if qty > 0:
        if old == 0:
            st[n_me] += 1
        q[me, i] = qty
        b = st[best_me]
        if b < 0 or (side == 1 and i > b) or (side == -1 and i < b):
            st[best_me] = i
        bo = st[best_other]
        if bo >= 0 and ((side == 1 and bo <= i) or (side == -1 and bo >= i)):
            _uncross(q, st, other, n_other, best_other, bo, i, side)
    elif old != 0:
        q[me, i] = 0
        st[n_me] -= 1
        if st[best_me] == i:
            st[best_me] = _next_best(q, me, i, -side, st[n_me])
    return _OK


@nb.njit(cache=True, nogil=True, inline="always")
def _ref_index(st: I64Array) -> int:
    """Index the window is kept around: the mid, or the one best level; -1 when empty."""
    bb, ba = int(st[_BEST_BID]), int(st[_BEST_ASK])
    if bb >= 0 and ba >= 0:
        return (bb + ba) // 2
    return bb if bb >= 0 else ba


@nb.njit(cache=True, nogil=True, inline="always")
def _next_best(q: I64Array, row: int, start: int, step: int, count: int) -> int:
    """Nearest non-empty index from ``start`` (exclusive) walking by ``step``, -1 if none."""
    if count == 0:
        return -1
    j = start + step
    while q[row, j] == 0:
        j += step
    return j


@nb.njit(cache=True, nogil=True)
def _uncross(
    q: I64Array, st: I64Array, row: int, n_slot: int, best_slot: int, bo: int, i: int, side: int
) -> None:
    # Opposite levels from their best up to and including the new price are stale.
    step = 1 if side == 1 else -1
    j = bo
    while (side == 1 and j <= i) or (side == -1 and j >= i):
        if q[row, j] != 0:
            q[row, j] = 0
            st[n_slot] -= 1
        j += step
    st[best_slot] = _next_best(q, row, i, step, st[n_slot])


@nb.njit(cache=True, nogil=True)
def _clear(q: I64Array, st: I64Array) -> None:
    q[:, :] = 0
    st[_BEST_BID] = -1
    st[_BEST_ASK] = -1
    st[_N_BID] = 0
    st[_N_ASK] = 0


@nb.njit(cache=True, nogil=True)
def _record(q: I64Array, st: I64Array, k: int, out: I64Array) -> None:
    bb, ba, base = st[_BEST_BID], st[_BEST_ASK], st[_BASE]
    out[0, k] = base + bb if bb >= 0 else NO_PRICE
    out[1, k] = q[0, bb] if bb >= 0 else 0
    out[2, k] = base + ba if ba >= 0 else NO_PRICE
    out[3, k] = q[1, ba] if ba >= 0 else 0


@nb.njit(cache=True, nogil=True)
def _replay(
    q: I64Array,
    st: I64Array,
    side: npt.NDArray[np.int8],
    price: I64Array,
    qty: I64Array,
    reset: npt.NDArray[np.bool_],
    start: int,
    out: I64Array,
    record: bool,
) -> int:
    """Apply rows ``start..``; return the row that fell outside the window (or len)."""
    n: int = price.shape[0]
    has_reset = reset.shape[0] == n
    for k in range(start, n):
        if has_reset and reset[k]:
            _clear(q, st)
        if _apply(q, st, side[k], price[k], qty[k]) != _OK:
            return k
        if record:
            _record(q, st, k, out)
    return n


class ReplayResult(NamedTuple):
    """Best levels after every row (empty arrays when not recorded)."""

    bid_px: I64Array
    bid_qty: I64Array
    ask_px: I64Array
    ask_qty: I64Array


class FastBook:
    """Array-backed level book; ``update`` is the single-update entry point."""

    def __init__(self, capacity: int = 1 << 16, max_capacity: int = 1 << 21) -> None:
        if capacity < 2 or max_capacity < capacity:
            raise ValueError(f"need 2 <= capacity <= max_capacity, got {capacity}, {max_capacity}")
        self.max_capacity = max_capacity
        self._q = np.zeros((2, capacity), dtype=np.int64)
        self._st = np.array([0, -1, -1, 0, 0, 0, 0, max_capacity // 2], dtype=np.int64)
        self._dropped_on_move = 0

    # -- updates --------------------------------------------------------------------------
    def update(self, side: int, price_ticks: int, qty_lots: int) -> None:
        """Absolute set of one level (0 deletes); ``side`` is +1 bid / -1 ask."""
        if _apply(self._q, self._st, side, price_ticks, qty_lots) != _OK:
            self._make_room(price_ticks)
            _apply(self._q, self._st, side, price_ticks, qty_lots)

    def clear(self) -> None:
        _clear(self._q, self._st)

    def replay(
        self,
        side: npt.NDArray[np.int8],
        price_ticks: I64Array,
        qty_lots: I64Array,
        *,
        reset: npt.NDArray[np.bool_] | None = None,
        record: bool = True,
    ) -> ReplayResult:
        """Apply a columnar batch; ``reset[k]`` clears the book before row ``k``."""
        side = np.ascontiguousarray(side, dtype=np.int8)
        price = np.ascontiguousarray(price_ticks, dtype=np.int64)
        qty = np.ascontiguousarray(qty_lots, dtype=np.int64)
        n = price.shape[0]
        if side.shape[0] != n or qty.shape[0] != n:
            raise ValueError("side, price_ticks and qty_lots must have the same length")
        rst = np.zeros(0, np.bool_) if reset is None else np.ascontiguousarray(reset, np.bool_)
        if rst.shape[0] not in (0, n):
            raise ValueError("reset must have the same length as the other columns")
        out = np.empty((4, n if record else 0), dtype=np.int64)
        k = 0
        while True:
            k = _replay(self._q, self._st, side, price, qty, rst, k, out, record)
            if k >= n:
                break
            self._make_room(int(price[k]))  # row k is retried in the moved window
        return ReplayResult(out[0], out[1], out[2], out[3])

    # -- queries --------------------------------------------------------------------------
    @property
    def rejected(self) -> int:
        return int(self._st[_REJECTED])

    @property
    def capacity(self) -> int:
        return int(self._q.shape[1])

    def best_bid(self) -> tuple[int, int] | None:
        i = int(self._st[_BEST_BID])
        return None if i < 0 else (int(self._st[_BASE]) + i, int(self._q[0, i]))

    def best_ask(self) -> tuple[int, int] | None:
        i = int(self._st[_BEST_ASK])
        return None if i < 0 else (int(self._st[_BASE]) + i, int(self._q[1, i]))

    def qty_at(self, side: Side, price_ticks: int) -> int:
        i = price_ticks - int(self._st[_BASE])
        if not 0 <= i < self.capacity:
            return 0
        return int(self._q[0 if side == Side.BUY else 1, i])

    def levels(self, side: Side, n: int | None = None) -> list[tuple[int, int]]:
        row = self._q[0 if side == Side.BUY else 1]
        idx = np.flatnonzero(row)
        if side == Side.BUY:
            idx = idx[::-1]
        if n is not None:
            idx = idx[:n]
        base = int(self._st[_BASE])
        return [(base + int(i), int(row[i])) for i in idx]

    def __len__(self) -> int:
        return int(self._st[_N_BID] + self._st[_N_ASK])

    # -- window management ----------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Levels not kept because they were too far from the mid (see the module doc)."""
        return int(self._st[_DROPPED]) + self._dropped_on_move

    def _make_room(self, price: int) -> None:
        """Re-centre the window on the mid (growing it if needed) so that ``price`` fits.

        Only called for a positive quantity within ``max_capacity // 2`` of the mid, or on
        an empty book; rare, so plain numpy is fine here.
        """
        size = self.capacity
        base = int(self._st[_BASE])
        ref_i = int(_ref_index(self._st))
        if ref_i < 0:
            self._st[_BASE] = price - size // 2
            return
        ref = base + ref_i
        half = size // 2
        cols = np.flatnonzero(self._q[0] | self._q[1])
        # wide enough for the new price (with room to spare) and for every level held: a
        # re-centred window of the old size dropped levels well inside max_capacity
        need = 2 * abs(price - ref)
        if cols.shape[0]:
            need = max(need, int(np.max(np.abs(cols + (base - ref)))) + 1)
        while half < need and half < self.max_capacity // 2:
            half *= 2
        half = min(half, self.max_capacity // 2)
        new_base = ref - half
        q = np.zeros((2, 2 * half), dtype=np.int64)
        new_cols = cols + (base - new_base)
        keep = (new_cols >= 0) & (new_cols < 2 * half)
        self._dropped_on_move += int(np.count_nonzero(self._q[:, cols[~keep]]))
        q[:, new_cols[keep]] = self._q[:, cols[keep]]
        self._q = q
        self._st[_BASE] = new_base
        for slot, row, n_slot in ((_BEST_BID, 0, _N_BID), (_BEST_ASK, 1, _N_ASK)):
            nz = np.flatnonzero(q[row])
            self._st[n_slot] = nz.shape[0]
            self._st[slot] = -1 if nz.shape[0] == 0 else (nz[-1] if row == 0 else nz[0])


def replay_depth(
    side: npt.NDArray[np.int8],
    price_ticks: I64Array,
    qty_lots: I64Array,
    *,
    reset: npt.NDArray[np.bool_] | None = None,
    book: FastBook | None = None,
    record: bool = True,
) -> tuple[FastBook, ReplayResult]:
    """Replay a columnar batch through ``book`` (a new one if None); see :meth:`FastBook.replay`."""
    book = FastBook() if book is None else book
    return book, book.replay(side, price_ticks, qty_lots, reset=reset, record=record)
