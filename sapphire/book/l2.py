"""The reference L2 order book: readable, exact, and the oracle the fast path is tested against.

Sequencing (Binance's diff-depth sync rule)
-------------------------------------------
* ``apply_snapshot`` replaces the book and sets ``last_update_id``; the book is synced.
* A diff whose ``final_update_id`` (``u``) is ``<= last_update_id`` is already in the book:
  it is dropped (``STALE``).
* The first diff applied after a snapshot must straddle it: ``U <= last_update_id + 1 <= u``
  (futures: ``pu == last_update_id`` is accepted as well).
* Every later diff must continue the previous one: spot ``U == previous u + 1``, futures
  (``prev_final_update_id != 0``) ``pu == previous u``.
* On a break the gap is counted, the book is marked not synced and diffs are held (``GAP``)
  until the next snapshot. Held diffs are replayed through the same rule when that snapshot
  arrives, because the diffs received while a REST snapshot is in flight are exactly the ones
  that bridge it (the recordings hold such diffs *before* their snapshot line).

Feeds without update ids (all ids 0: Tardis) cannot be sequenced: their levels are applied
as they come (as ``set_level``), and such a book counts as synced. Every Tardis
``incremental_book_L2`` diff was dropped as stale here, so a venue replaying one kept the
day's opening snapshot all day.
A snapshot older than a synced book (its ``update_id`` at or below ``last_update_id``: a
late REST answer) is dropped and counted in ``stale_snapshots``: it replaced the live book,
whose next diff was then a gap, and the book stayed frozen until another snapshot.
One exchange message becomes several :class:`BookDelta` sharing ``U``/``u``/``pu``; the last
one has ``last_in_batch=True``. Sequence checks run once per message: the remaining levels of
an accepted message are applied without re-checking.

Crossing rule
-------------
A positive quantity set at a price at or through the best opposite price means the opposite
levels there are stale (the exchange has matched or cancelled them and the removal may come
later in the same message, or never in a lossy feed). Those opposite levels are removed, so
the later update wins and the book is never crossed or locked. ``fast.py`` applies the same
rule, so both books agree level for level.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence

import msgspec

from sapphire.model.events import BookDelta, BookDeltas, BookSnapshot, Side

_UNSEQUENCED = (0, 0, 0)


class DeltaResult(enum.StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # dropped: already contained in the book (u <= last_update_id)
    GAP = "gap"  # not synced: held until the next snapshot
    REJECTED = "rejected"  # malformed level (qty < 0, price <= 0, bad side): counted


class BookError(ValueError):
    """A snapshot or a restore payload that cannot be a valid book."""


class _State(msgspec.Struct, frozen=True):
    """Serialised form of :class:`L2Book` (see ``snapshot``/``restore``)."""

    symbol: str
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    is_synced: bool
    last_update_id: int
    gaps: int
    stale: int
    rejected: int
    # mid-message: the message whose first levels are in (its ids), and whether the next
    # diff must straddle the snapshot (defaults: payloads written before they were kept)
    open_msg: tuple[int, int, int] | None = None
    first_after_snapshot: bool = False
    # diffs held while not synced: replayed after the next snapshot as the original does
    pending: list[BookDelta] = msgspec.field(default_factory=list)
    stale_snapshots: int = 0


class L2Book:
    """Price-level book for one symbol; prices in ticks, quantities in lots.

    A "lot" here is the instrument's integer quantity unit (``Instrument.lot``): its size
    increment, which is finer than the order lot step where the venue reports finer sizes
    (Binance spot levels of 4690.343896 BTC under a 0.00001 step). The book stores every
    recorded size exactly; only orders are held to the lot step.
    """

    # a book pickled before it was counted (a venue actor's checkpoint) restores without it
    stale_snapshots = 0

    def __init__(self, symbol: str, *, max_pending: int = 200_000) -> None:
        self.symbol = symbol
        self.is_synced = False
        self.last_update_id = 0
        self.gaps = 0
        self.stale = 0
        self.rejected = 0
        self.stale_snapshots = 0
        # Sorted so that both bests are last (where a level list changes most, a list
        # insert or delete moves the fewest entries): bid prices ascending, ask prices
        # negated ascending (best ask = -_ask_neg[-1]).
        self._bid_px: list[int] = []
        self._ask_neg: list[int] = []
        self._bids: dict[int, int] = {}
        self._asks: dict[int, int] = {}
        self._first_after_snapshot = False
        self._open_msg: tuple[int, int, int] | None = None  # ids of an accepted, unfinished msg
        # Bounded so that a feed that never gets its snapshot cannot grow memory forever.
        self._pending: deque[BookDelta] = deque(maxlen=max_pending)

    # -- updates --------------------------------------------------------------------------
    def apply_snapshot(self, snap: BookSnapshot) -> None:
        """Replace the book; then replay the diffs held while it was not synced.

        Raises :class:`BookError` (book unchanged) for a non-positive price, a negative
        quantity or a crossed snapshot. Zero-quantity levels are ignored.
        """
        if self.is_synced and 0 < snap.update_id <= self.last_update_id:
            self.stale_snapshots += 1  # the book is newer: kept (see the module's doc)
            return
        bids = _validated(snap.bids, "bid")
        asks = _validated(snap.asks, "ask")
        if bids and asks and max(bids) >= min(asks):
            raise BookError(f"{self.symbol}: crossed snapshot {max(bids)} >= {min(asks)}")
        self._bids, self._asks = bids, asks
        self._bid_px, self._ask_neg = sorted(bids), sorted(-p for p in asks)
        self.last_update_id = snap.update_id
        self.is_synced = True
        self._first_after_snapshot = True
        self._open_msg = None
        held = list(self._pending)
        self._pending.clear()
        for delta in held:
            self.apply_delta(delta)

    def apply_delta(self, delta: BookDelta) -> DeltaResult:
        ids = (delta.first_update_id, delta.final_update_id, delta.prev_final_update_id)
        if delta.qty_lots < 0 or delta.price_ticks <= 0 or delta.side not in (1, -1):
            self.rejected += 1
            if delta.last_in_batch and self._open_msg == ids:
                self._open_msg = None  # a bad last level still ends its message
            return DeltaResult.REJECTED
        if ids == _UNSEQUENCED:
            # a feed without update ids: each level is absolute and nothing can be checked
            self.is_synced = True
            self._set(delta.side, delta.price_ticks, delta.qty_lots)
            self._open_msg = None if delta.last_in_batch else ids
            return DeltaResult.APPLIED
        if self._open_msg is not None:
            if ids == self._open_msg:
                self._set(delta.side, delta.price_ticks, delta.qty_lots)
                if delta.last_in_batch:
                    self._open_msg = None
                return DeltaResult.APPLIED
            self._open_msg = None  # the previous message lost its last level; it is over
        if not self.is_synced:
            self._pending.append(delta)
            return DeltaResult.GAP
        if delta.final_update_id <= self.last_update_id:
            self.stale += 1
            return DeltaResult.STALE
        if not self._continues(delta):
            self.gaps += 1
            self.is_synced = False
            self._pending.clear()
            self._pending.append(delta)
            return DeltaResult.GAP
        self.last_update_id = delta.final_update_id
        self._first_after_snapshot = False
        self._set(delta.side, delta.price_ticks, delta.qty_lots)
        if not delta.last_in_batch:
            self._open_msg = ids
        return DeltaResult.APPLIED

    def apply_deltas(self, group: BookDeltas, start: int = 0, stop: int | None = None) -> None:
        """Levels ``start`` .. ``stop - 1`` of one message, exactly as :meth:`apply_delta` of
        each (``group.delta(i)``): once the message is open (its first level applied), the
        rest are set in one pass (:meth:`_set_levels`), without a delta made for each."""
        levels = group.levels
        end = len(levels) if stop is None else stop
        ids = (group.first_update_id, group.final_update_id, group.prev_final_update_id)
        i = start
        while i < end:
            if self._open_msg == ids:
                # apply_delta's own path for a message's next levels, up to a bad one
                i = self._set_levels(levels, i, end)
                if i == len(levels) and group.complete:
                    self._open_msg = None  # its last level (last_in_batch) is in
                if i == end:
                    break
            self.apply_delta(group.delta(i))  # a message's first level, or a bad one
            i += 1

    @property
    def waiting_for_snapshot(self) -> bool:
        """Diffs came and no snapshot ever synced the book: it offered no liquidity at all
        (a recording with no snapshot, a session started mid-stream)."""
        return not self.is_synced and not self.gaps and bool(self._pending)

    def set_level(self, side: Side, price_ticks: int, qty_lots: int) -> None:
        """Absolute set without sequencing (0 deletes); the crossing rule still applies. A
        book moved this way (a venue double, an unsequenced feed) counts as synced."""
        if qty_lots < 0 or price_ticks <= 0 or side not in (1, -1):
            raise BookError(f"{self.symbol}: bad level {side} {price_ticks} x {qty_lots}")
        self.is_synced = True
        self._set(side, price_ticks, qty_lots)

    def clear(self) -> None:
        """Empty the book and forget sync state (counters are kept)."""
        self._bids, self._asks, self._bid_px, self._ask_neg = {}, {}, [], []
        self.is_synced = False
        self.last_update_id = 0
        self._first_after_snapshot = False
        self._open_msg = None
        self._pending.clear()

    # -- queries --------------------------------------------------------------------------
    def best_bid(self) -> tuple[int, int] | None:
        if not self._bid_px:
            return None
        px = self._bid_px[-1]
        return px, self._bids[px]

    def best_ask(self) -> tuple[int, int] | None:
        if not self._ask_neg:
            return None
        px = -self._ask_neg[-1]
        return px, self._asks[px]

    def qty_at(self, side: Side, price_ticks: int) -> int:
        return (self._bids if side == Side.BUY else self._asks).get(price_ticks, 0)

    def levels(self, side: Side, n: int | None = None) -> list[tuple[int, int]]:
        """``(price_ticks, qty_lots)`` best first; all levels when ``n`` is None."""
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if side == Side.BUY:
            prices = self._bid_px[::-1] if n is None else self._bid_px[: -n - 1 : -1]
            return [(p, self._bids[p]) for p in prices]
        negs = self._ask_neg[::-1] if n is None else self._ask_neg[: -n - 1 : -1]
        return [(-q, self._asks[-q]) for q in negs]

    def mid_ticks(self) -> float | None:
        if not self._bid_px or not self._ask_neg:
            return None
        return (self._bid_px[-1] - self._ask_neg[-1]) / 2

    def spread_ticks(self) -> int | None:
        if not self._bid_px or not self._ask_neg:
            return None
        return -self._ask_neg[-1] - self._bid_px[-1]

    def microprice_ticks(self) -> float | None:
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None or ask is None:
            return None
        (bp, bq), (ap, aq) = bid, ask
        return (bp * aq + ap * bq) / (bq + aq)

    def imbalance(self, n: int = 1) -> float | None:
        """``(bidvol - askvol) / (bidvol + askvol)`` over the best ``n`` levels per side.

        None while either side is empty: a one-sided book has no meaningful imbalance.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not self._bid_px or not self._ask_neg:
            return None
        bid_vol = sum(q for _, q in self.levels(Side.BUY, n))
        ask_vol = sum(q for _, q in self.levels(Side.SELL, n))
        return (bid_vol - ask_vol) / (bid_vol + ask_vol)

    def is_crossed(self) -> bool:
        """True when best bid >= best ask (crossed or locked)."""
        return bool(self._bid_px and self._ask_neg and self._bid_px[-1] >= -self._ask_neg[-1])

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    # -- persistence (pure objects expose snapshot()/restore(), see architecture.md) ------
    def snapshot(self) -> bytes:
        """Levels, sync state (a message half applied too), the diffs held for the next
        snapshot and counters as msgpack."""
        state = _State(
            symbol=self.symbol,
            bids=self.levels(Side.BUY),
            asks=self.levels(Side.SELL),
            is_synced=self.is_synced,
            last_update_id=self.last_update_id,
            gaps=self.gaps,
            stale=self.stale,
            rejected=self.rejected,
            open_msg=self._open_msg,
            first_after_snapshot=self._first_after_snapshot,
            pending=list(self._pending),
            stale_snapshots=self.stale_snapshots,
        )
        return msgspec.msgpack.encode(state)

    def restore(self, data: bytes) -> None:
        try:
            state = msgspec.msgpack.decode(data, type=_State)
        except msgspec.DecodeError as exc:
            raise BookError(f"{self.symbol}: cannot restore book: {exc}") from exc
        if state.symbol != self.symbol:
            raise BookError(f"restore: payload is for {state.symbol}, book is {self.symbol}")
        self.clear()
        snap = BookSnapshot(
            ts_event_ns=0,
            symbol=self.symbol,
            bids=tuple(state.bids),
            asks=tuple(state.asks),
            update_id=state.last_update_id,
        )
        self.apply_snapshot(snap)
        self.is_synced = state.is_synced
        self._first_after_snapshot = state.first_after_snapshot
        self._open_msg = state.open_msg
        self.gaps, self.stale, self.rejected = state.gaps, state.stale, state.rejected
        self.stale_snapshots = state.stale_snapshots
        self._pending.extend(state.pending)

    # -- internals ------------------------------------------------------------------------
    def _continues(self, delta: BookDelta) -> bool:
        last = self.last_update_id
        futures = delta.prev_final_update_id != 0
        if self._first_after_snapshot:
            straddles = delta.first_update_id <= last + 1 <= delta.final_update_id
            return straddles or (futures and delta.prev_final_update_id == last)
        if futures:
            return delta.prev_final_update_id == last
        return delta.first_update_id == last + 1

    def _set(self, side: int, price: int, qty: int) -> None:
        self._set_levels(((side, price, qty),), 0, 1)

    def _set_levels(self, levels: Sequence[tuple[int, int, int]], start: int, stop: int) -> int:
        """Set ``levels[start:stop]`` (``(side, price, qty)``) one after the other: each
        level's own update, then the crossing rule (a positive size at or through the best
        opposite price removes those opposite levels). Stops before a level that is not
        valid (a negative size, a price not above 0, no side) and returns its index (``stop``
        when all were set): one loop for every recorded level of a message, not a call each."""
        bids, asks = self._bids, self._asks
        bid_px, ask_neg = self._bid_px, self._ask_neg
        for i in range(start, stop):
            side, price, qty = levels[i]
            if qty < 0 or price <= 0:
                return i
            if side == 1:
                if qty == 0:
                    if bids.pop(price, None) is not None:
                        del bid_px[bisect_left(bid_px, price)]
                    continue
                if price not in bids:
                    bid_px.insert(bisect_left(bid_px, price), price)
                bids[price] = qty
                if ask_neg and -ask_neg[-1] <= price:
                    cut = bisect_left(ask_neg, -price)  # the asks at or under the bid
                    for q in ask_neg[cut:]:
                        del asks[-q]
                    del ask_neg[cut:]
            elif side == -1:
                if qty == 0:
                    if asks.pop(price, None) is not None:
                        del ask_neg[bisect_left(ask_neg, -price)]
                    continue
                if price not in asks:
                    ask_neg.insert(bisect_left(ask_neg, -price), -price)
                asks[price] = qty
                if bid_px and bid_px[-1] >= price:
                    cut = bisect_left(bid_px, price)
                    for p in bid_px[cut:]:
                        del bids[p]
                    del bid_px[cut:]
            else:
                return i
        return stop


def _validated(levels: tuple[tuple[int, int], ...], what: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for price, qty in levels:
        if price <= 0 or qty < 0:
            raise BookError(f"snapshot {what} level {price} x {qty} is invalid")
        if qty:
            out[price] = qty
    return out
