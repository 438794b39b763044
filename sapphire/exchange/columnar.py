"""Columnar replay: recorded rows our orders cannot notice go through a numba book in bulk.

Most recorded rows change levels far from our orders. :func:`replay_until` scans the columns
(numba) for the next row that matters to us: a level where we rest, size at or through one
of our prices, a trade that reaches our prices, a snapshot reset, or the time an in-flight
action reaches the venue. Rows before it are applied to a :class:`sapphire.book.fast.FastBook`
in one call; that row goes through ``PaperExchange.on_market_event`` like any event. The
result is the same as feeding every row as an event (tested), at numba speed in between.

Rows must already be sequenced (``sapphire.book.sync.sync_plan`` order): the fast book
applies every row it is given.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from sapphire.book.fast import FastBook
from sapphire.exchange.paper import PaperExchange
from sapphire.model.events import BookDelta, BookSnapshot, Side, Trade

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]
DELTA, TRADE = 0, 1
_NEVER = np.iinfo(np.int64).max


class FastBookView:
    """A :class:`FastBook` with the surface matching needs (rows arrive pre-sequenced)."""

    def __init__(self, book: FastBook | None = None) -> None:
        self.fast = FastBook() if book is None else book
        self.is_synced = True

    def apply_delta(self, delta: BookDelta) -> None:
        self.fast.update(int(delta.side), delta.price_ticks, delta.qty_lots)

    def apply_snapshot(self, snap: BookSnapshot) -> None:
        self.fast.clear()
        for side, levels in ((1, snap.bids), (-1, snap.asks)):
            for price, qty in levels:
                self.fast.update(side, price, qty)

    def set_level(self, side: Side, price_ticks: int, qty_lots: int) -> None:
        self.fast.update(int(side), price_ticks, qty_lots)

    def best_bid(self) -> tuple[int, int] | None:
        return self.fast.best_bid()

    def best_ask(self) -> tuple[int, int] | None:
        return self.fast.best_ask()

    def qty_at(self, side: Side, price_ticks: int) -> int:
        return self.fast.qty_at(side, price_ticks)

    def levels(self, side: Side, n: int | None = None) -> list[tuple[int, int]]:
        return self.fast.levels(side, n)

    def mid_ticks(self) -> float | None:
        bid, ask = self.fast.best_bid(), self.fast.best_ask()
        return None if bid is None or ask is None else (bid[0] + ask[0]) / 2


class ColumnarFeed:
    """One symbol's recorded rows in replay order. ``kind`` DELTA/TRADE; ``side`` is the
    level's side for deltas and the taker's side for trades (+1 buy, -1 sell); ``reset``
    marks the first row of a snapshot (clear the book first)."""

    def __init__(
        self,
        symbol: str,
        kind: I8,
        side: I8,
        price_ticks: I64,
        qty_lots: I64,
        ts_event_ns: I64,
        ts_recv_ns: I64,
        reset: B,
    ) -> None:
        n = kind.shape[0]
        cols = (side, price_ticks, qty_lots, ts_event_ns, ts_recv_ns, reset)
        if any(c.shape != (n,) for c in cols):
            raise ValueError("ColumnarFeed columns must be 1-d and of the same length")
        self.symbol = symbol
        self.kind = np.ascontiguousarray(kind, np.int8)
        self.side = np.ascontiguousarray(side, np.int8)
        self.price = np.ascontiguousarray(price_ticks, np.int64)
        self.qty = np.ascontiguousarray(qty_lots, np.int64)
        self.ts_event = np.ascontiguousarray(ts_event_ns, np.int64)
        self.ts_recv = np.ascontiguousarray(ts_recv_ns, np.int64)
        self.reset = np.ascontiguousarray(reset, np.bool_)
        is_delta = self.kind == DELTA
        # position of row i among deltas / trades, for slicing bulk batches
        self.delta_pos = np.concatenate(([0], np.cumsum(is_delta))).astype(np.int64)
        self.trade_pos = np.concatenate(([0], np.cumsum(~is_delta))).astype(np.int64)
        self.d_side = self.side[is_delta]
        self.d_price = self.price[is_delta]
        self.d_qty = self.qty[is_delta]
        self.d_reset = self.reset[is_delta]
        self.t_price = self.price[~is_delta]

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def event(self, i: int) -> BookDelta | Trade:
        side = Side.BUY if self.side[i] > 0 else Side.SELL
        common = {
            "ts_event_ns": int(self.ts_event[i]),
            "ts_recv_ns": int(self.ts_recv[i]),
            "symbol": self.symbol,
            "price_ticks": int(self.price[i]),
            "qty_lots": int(self.qty[i]),
        }
        if self.kind[i] == DELTA:
            return BookDelta(side=side, **common)  # type: ignore[arg-type]
        return Trade(taker_side=side, **common)  # type: ignore[arg-type]


@nb.njit(cache=True, nogil=True)
def _scan(
    kind: I8,
    side: I8,
    price: I64,
    qty: I64,
    ts_event: I64,
    ts_recv: I64,
    reset: B,
    i: int,
    until: int,
    arrival: int,
    min_bid: int,
    max_bid: int,
    min_ask: int,
    max_ask: int,
) -> int:
    n = kind.shape[0]
    while i < n:
        if ts_recv[i] > until or ts_event[i] >= arrival or reset[i]:
            return i
        p = price[i]
        if kind[i] == 0:
            if side[i] == 1:
                if min_bid <= p <= max_bid or (qty[i] > 0 and p >= min_ask):
                    return i
            elif min_ask <= p <= max_ask or (qty[i] > 0 and p <= max_bid):
                return i
        elif (side[i] == -1 and p <= max_bid) or (side[i] == 1 and p >= min_ask):
            return i
        i += 1
    return i


def replay_until(exchange: PaperExchange, feed: ColumnarFeed, i: int, until_recv_ns: int) -> int:
    """Replay rows from ``i`` while ``ts_recv_ns <= until_recv_ns``; returns the next row.
    The symbol's book must be a :class:`FastBookView`."""
    view = exchange.book(feed.symbol)
    if not isinstance(view, FastBookView):
        raise TypeError("replay_until needs PaperExchange(books={symbol: FastBookView()})")
    engine = exchange.engine(feed.symbol)
    n = len(feed)
    while i < n and feed.ts_recv[i] <= until_recv_ns:
        arrival = exchange.next_arrival_ns()
        j = _scan(
            feed.kind, feed.side, feed.price, feed.qty, feed.ts_event, feed.ts_recv, feed.reset,
            i, until_recv_ns, _NEVER if arrival is None else arrival, *engine.level_bounds(),
        )  # fmt: skip
        if j > i:
            d0, d1 = feed.delta_pos[i], feed.delta_pos[j]
            if d1 > d0:
                view.fast.replay(
                    feed.d_side[d0:d1], feed.d_price[d0:d1], feed.d_qty[d0:d1], record=False
                )
            t1 = feed.trade_pos[j]
            last = int(feed.t_price[t1 - 1]) if t1 > feed.trade_pos[i] else None
            exchange.note_market(feed.symbol, int(feed.ts_event[j - 1]), last)
        if j >= n or feed.ts_recv[j] > until_recv_ns:
            return j
        if feed.reset[j]:
            view.fast.clear()
        exchange.on_market_event(feed.event(j))
        i = j + 1
    return i
