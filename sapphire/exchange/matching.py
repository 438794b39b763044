"""Matching of our orders against one symbol's recorded market.

The recorded book is the market (its depth; for a symbol with none, its quotes:
:meth:`MatchingEngine.on_quote`); our orders are not in it. Takers walk the recorded levels
(less what we already took, when market impact is on). Resting (maker) orders fill when:

* a recorded trade prints at our price, after the queue model's ``ahead`` is traded through;
* a recorded trade prints strictly beyond our price: the market traded through us
  (whole order when ``trade_through_fills_all``);
* the recorded opposite side shows size at or beyond our price (``book_cross_fills``): that
  size would have traded with us, so we fill up to it.

Fills are handed to ``FillSink``; the engine never touches money.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from sapphire.exchange.config import SelfTradeMode
from sapphire.exchange.impact import ImpactTracker
from sapphire.exchange.queue import QueueModel
from sapphire.exchange.state import SimOrder
from sapphire.model.events import BookDelta, BookDeltas, BookSnapshot, Quote, Side, Trade


class MarketBook(Protocol):
    """What matching needs of the market's book: :class:`sapphire.book.l2.L2Book`, or
    array books. ``is_synced`` False: the book is known to be out of date (a diff was lost,
    the snapshot that resyncs it has not come): matching then finds no liquidity in it."""

    is_synced: bool

    def apply_delta(self, delta: BookDelta) -> object: ...

    def apply_deltas(self, group: BookDeltas, start: int = 0, stop: int | None = None) -> None: ...

    def apply_snapshot(self, snap: BookSnapshot) -> None: ...

    def set_level(self, side: Side, price_ticks: int, qty_lots: int) -> None: ...

    def best_bid(self) -> tuple[int, int] | None: ...

    def best_ask(self) -> tuple[int, int] | None: ...

    def qty_at(self, side: Side, price_ticks: int) -> int: ...

    def levels(self, side: Side, n: int | None = None) -> list[tuple[int, int]]: ...

    def mid_ticks(self) -> float | None: ...

    def clear(self) -> None: ...


FillSink = Callable[[SimOrder, int, int, bool, int], None]
"""``(order, price_ticks, qty_lots, is_maker, ts_ns)``."""

ExpireSink = Callable[[SimOrder, int], None]
"""``(order, ts_ns)``: self-trade prevention expired ``order`` (the venue ends it)."""

NO_LOW = 1 << 62


class MatchingEngine:
    def __init__(
        self,
        symbol: str,
        book: MarketBook,
        queue: QueueModel,
        sink: FillSink,
        *,
        impact: ImpactTracker | None = None,
        trade_through_fills_all: bool = True,
        book_cross_fills: bool = True,
        self_trade: SelfTradeMode = SelfTradeMode.EXPIRE_TAKER,
        expire: ExpireSink | None = None,
    ) -> None:
        """``expire`` ends an order self-trade prevention expired; without it a taker's walk
        does not see our resting orders (an engine alone, as in tests, has no venue to end
        them)."""
        self.symbol = symbol
        self.book = book
        self._queue = queue
        self._sink = sink
        self._impact = impact
        self._trade_through_all = trade_through_fills_all
        self._book_cross = book_cross_fills
        self._stp = self_trade
        self._expire = expire
        # Our resting orders: price -> FIFO list.
        self._bids: dict[int, list[SimOrder]] = {}
        self._asks: dict[int, list[SimOrder]] = {}
        self._rest_seq = 0

    # -- our orders -------------------------------------------------------------------------
    def resting(self, side: Side) -> dict[int, list[SimOrder]]:
        return self._bids if side is Side.BUY else self._asks

    def has_resting(self) -> bool:
        return bool(self._bids or self._asks)

    def resting_count(self) -> int:
        """Our orders resting on the symbol (what MAX_NUM_ORDERS counts)."""
        return sum(len(level) for levels in (self._bids, self._asks) for level in levels.values())

    @property
    def self_trade(self) -> SelfTradeMode | None:
        """The self-trade prevention mode the walk applies (None: it sees none of our
        resting orders: an engine with no venue to expire them)."""
        return self._stp if self._expire is not None else None

    def level_bounds(self) -> tuple[int, int, int, int]:
        """``(min_bid, max_bid, min_ask, max_ask)`` of our resting orders; an empty side gives
        bounds no price can fall between (``NO_LOW``, -1)."""
        bids, asks = self._bids, self._asks
        return (
            min(bids) if bids else NO_LOW,
            max(bids) if bids else -1,
            min(asks) if asks else NO_LOW,
            max(asks) if asks else -1,
        )

    def available(self, side: Side, price_ticks: int, displayed: int, now_ns: int) -> int:
        if self._impact is None:
            return displayed
        return self._impact.available(side, price_ticks, displayed, now_ns)

    def fillable(
        self, side: Side, limit_ticks: int | None, now_ns: int, max_lots: int | None = None
    ) -> list[tuple[int, int]]:
        """Recorded levels a taker on ``side`` could hit within ``limit_ticks``, best first,
        up to ``max_lots`` in total when given (the book can hold a thousand levels a side)."""
        if not self.book.is_synced:
            # Out of sync, the book shows the market as it was before a lost diff: a taker
            # filled at those prices for the rest of the session (up to $34 better than the
            # touch on a real recording). Nothing is taken until a snapshot resyncs it.
            return []
        opposite = side.opposite
        depth = 8
        while True:
            out: list[tuple[int, int]] = []
            total = 0
            levels = self.book.levels(opposite, depth)
            for price, qty in levels:
                if limit_ticks is not None and (
                    price > limit_ticks if side is Side.BUY else price < limit_ticks
                ):
                    return out
                avail = self.available(opposite, price, qty, now_ns)
                if avail > 0:
                    out.append((price, avail))
                    total += avail
                    if max_lots is not None and total >= max_lots:
                        return out
            if len(levels) < depth:
                return out
            depth *= 4

    def would_take(self, side: Side, limit_ticks: int) -> bool:
        if not self.book.is_synced:
            return False  # nothing to take in a book out of sync (see ``fillable``)
        best = self.book.best_ask() if side is Side.BUY else self.book.best_bid()
        if best is None:
            return False
        return best[0] <= limit_ticks if side is Side.BUY else best[0] >= limit_ticks

    def would_match(self, side: Side, limit_ticks: int) -> bool:
        """Would an order on ``side`` at ``limit_ticks`` trade on arrival: the recorded book
        within its limit, or one of our own opposite orders (met by self-trade prevention);
        a post-only order is refused for either."""
        return self.would_take(side, limit_ticks) or self.crosses_own(side, limit_ticks)

    def crosses_own(self, side: Side, limit_ticks: int) -> bool:
        """Is one of our opposite resting orders within ``limit_ticks``? Such an order is a
        taker even where the recorded book is not (it meets ours: self-trade prevention, or
        a post-only refused)."""
        levels = self._asks if side is Side.BUY else self._bids
        if not levels:
            return False
        return min(levels) <= limit_ticks if side is Side.BUY else max(levels) >= limit_ticks

    def take(self, order: SimOrder, max_lots: int, now_ns: int) -> int:
        """Fill ``order`` as taker up to ``max_lots``; returns lots filled.

        Self-trade prevention is applied here, where the walk meets one of our resting
        orders, as Binance does in its matching: a taker that never reaches our order (the
        market's better prices fill it first) trades normally. Decided before matching, it
        refused a buy the market's ask below our own ask would have filled whole. Our order
        is met after the recorded size at better prices and, at its own price, after the
        size its queue estimate (``ahead``) puts in front of it."""
        filled = 0
        supply = self.fillable(order.side, order.limit_ticks, now_ns, max_lots)
        own = self._expire is not None
        for price, lots, makers in self._walk(order.side, order.limit_ticks, supply, own):
            if makers is not None:
                if self._self_trade(order, makers, now_ns):
                    return filled
                continue
            lots = min(lots, max_lots - filled)
            if lots > 0:
                filled += self._take_level(order, price, lots, now_ns)
            if filled >= max_lots:
                return filled
        return filled

    def reach(self, side: Side, limit_ticks: int | None, supply: list[tuple[int, int]]) -> int:
        """Lots a taker on ``side`` takes of ``supply`` (:meth:`fillable`) before self-trade
        prevention ends it: under EXPIRE_TAKER and EXPIRE_BOTH, where its walk meets one of
        our own orders (the walk :meth:`take` makes, so a fill-or-kill's check and its match
        never disagree); under EXPIRE_MAKER, or where the walk sees none of ours, all of
        it."""
        if self.self_trade in (None, SelfTradeMode.EXPIRE_MAKER):
            return sum(lots for _, lots in supply)
        reached = 0
        for _, lots, makers in self._walk(side, limit_ticks, supply, True):
            if makers is not None:
                return reached
            reached += lots
        return reached

    def _walk(
        self, side: Side, limit_ticks: int | None, supply: list[tuple[int, int]], own: bool
    ) -> Iterator[tuple[int, int, list[SimOrder] | None]]:
        """A taker's walk, in the order matching meets it: ``(price, lots, None)`` to take
        of the recorded supply, ``(price, 0, makers)`` where it meets our own resting orders
        (``own``: where self-trade prevention can see them). Our orders at a better price
        than a level are met before it; at their own price, after the size their queue
        estimate (``ahead``) puts in front of them; beyond the supply, still within the
        limit, after all of it."""
        mine = self._own_levels(side, limit_ticks) if own else []
        buy = side is Side.BUY
        for price, avail in supply:
            while mine and (mine[0][0] < price if buy else mine[0][0] > price):
                level = mine.pop(0)
                yield level[0], 0, level[1]
            if mine and mine[0][0] == price:
                ahead = min(avail, int(mine[0][1][0].ahead))
                if ahead > 0:
                    yield price, ahead, None
                    avail -= ahead
                level = mine.pop(0)
                yield level[0], 0, level[1]
            if avail > 0:
                yield price, avail, None
        for level_price, makers in mine:
            yield level_price, 0, makers

    def _take_level(self, order: SimOrder, price: int, lots: int, now_ns: int) -> int:
        if self._impact is not None:
            self._impact.consume(order.side.opposite, price, lots, now_ns)
        self._sink(order, price, lots, False, now_ns)
        return lots

    def _own_levels(self, side: Side, limit_ticks: int | None) -> list[tuple[int, list[SimOrder]]]:
        """Our resting orders a taker on ``side`` may meet within its limit, best price
        first, each level's orders copied in FIFO order (expiring them edits the levels)."""
        levels = self._asks if side is Side.BUY else self._bids
        buy = side is Side.BUY
        return [
            (p, list(levels[p]))
            for p in sorted(levels, reverse=not buy)
            if limit_ticks is None or (p <= limit_ticks if buy else p >= limit_ticks)
        ]

    def _self_trade(self, taker: SimOrder, makers: list[SimOrder], now_ns: int) -> bool:
        """The taker met our own ``makers``: expire the side(s) the mode names (Binance STP:
        EXPIRE_MAKER expires the resting orders and the taker goes on, EXPIRE_TAKER expires
        the taker's remainder, EXPIRE_BOTH both). True: the taker is ended."""
        expire = self._expire
        assert expire is not None
        mode = self._stp
        if mode is not SelfTradeMode.EXPIRE_TAKER:
            for maker in makers:
                expire(maker, now_ns)
        if mode is SelfTradeMode.EXPIRE_MAKER:
            return False
        expire(taker, now_ns)
        return True

    def rest(self, order: SimOrder) -> None:
        assert order.limit_ticks is not None
        level = self.resting(order.side).setdefault(order.limit_ticks, [])
        qty = self.book.qty_at(order.side, order.limit_ticks)
        self._queue.on_place(order, qty, level[-1] if level else None)
        self._rest_seq += 1
        order.rest_seq = self._rest_seq
        level.append(order)

    def remove(self, order: SimOrder) -> None:
        if order.limit_ticks is None:
            return
        levels = self.resting(order.side)
        level = levels.get(order.limit_ticks)
        if level is None:
            return
        try:
            level.remove(order)
        except ValueError:
            return
        if not level:
            del levels[order.limit_ticks]

    # -- recorded market --------------------------------------------------------------------
    def on_trade(self, trade: Trade) -> None:
        # A sell-taker trade hits bids: ours at or above its price.
        side = Side.BUY if trade.taker_side is Side.SELL else Side.SELL
        levels = self.resting(side)
        if not levels:
            return
        price = trade.price_ticks
        if side is Side.BUY:
            through = sorted((p for p in levels if p > price), reverse=True)
        else:
            through = sorted(p for p in levels if p < price)
        budget = trade.qty_lots
        for level_px in through:
            for order in list(levels[level_px]):
                lots = (
                    order.leaves_lots if self._trade_through_all else min(order.leaves_lots, budget)
                )
                if lots <= 0:
                    continue
                budget -= lots
                self._sink(order, level_px, lots, True, trade.ts_event_ns)
        at_level = levels.get(price)
        if at_level:
            # without trade_through_fills_all, what filled our orders through the price is
            # part of this trade: only the rest of it traded at the price
            here = trade.qty_lots if self._trade_through_all else max(budget, 0)
            for order, lots in self._queue.on_trade(list(at_level), here):
                self._sink(order, price, lots, True, trade.ts_event_ns)

    def on_delta(self, delta: BookDelta) -> None:
        bids, asks = self._bids, self._asks
        if bids or asks:
            # what :meth:`_change` decides first, without its calls: most levels move
            # neither a level we rest on nor size that reaches our opposite orders
            side, price = delta.side, delta.price_ticks
            if (bids if side is Side.BUY else asks).get(price) or (
                delta.qty_lots > 0 and self._reaches(side, price)
            ):
                self._change(side, price, delta.qty_lots, delta.ts_event_ns, delta)
                return
        self.book.apply_delta(delta)

    def on_deltas(self, group: BookDeltas) -> None:
        """One message's levels, each as :meth:`on_delta` would take it (the same test of
        whether it touches our orders, :meth:`_reaches` with our best prices read once a
        run); the runs of levels that touch none go to the book in one call."""
        bids, asks = self._bids, self._asks
        book = self.book
        if not (bids or asks):
            book.apply_deltas(group)
            return
        top_bid = max(bids) if bids else None  # a SELL level at or under it reaches our bids
        low_ask = min(asks) if asks else None  # a BUY level at or over it reaches our asks
        start = 0
        for i, (side, price, qty) in enumerate(group.levels):
            if side == 1:
                touch = bids.get(price) or (qty > 0 and low_ask is not None and price >= low_ask)
            else:
                touch = asks.get(price) or (qty > 0 and top_bid is not None and price <= top_bid)
            if touch:
                if i > start:
                    book.apply_deltas(group, start, i)
                self._change(Side(side), price, qty, group.ts_event_ns, group.delta(i))
                start = i + 1
                # a fill may have taken our orders: read them again
                top_bid = max(bids) if bids else None
                low_ask = min(asks) if asks else None
        if start < len(group.levels):
            book.apply_deltas(group, start)

    def set_level(self, side: Side, price_ticks: int, qty_lots: int, now_ns: int) -> None:
        """Move the market without a recording (a venue double): same rules as a delta."""
        self._change(side, price_ticks, qty_lots, now_ns, None)

    def _change(
        self, side: Side, price: int, qty: int, ts_ns: int, delta: BookDelta | None
    ) -> None:
        own = self.resting(side).get(price)
        reaching = qty > 0 and self._reaches(side, price)
        prev = self.book.qty_at(side, price) if (own or reaching) else 0
        # the book's crossing rule removes its opposite levels at or through this price, our
        # orders' levels among them: their queues are told what those levels held (the size
        # ahead of us there is gone, as when a level is deleted)
        opposite = self.resting(side.opposite)
        wiped = (
            [
                (p, self.book.qty_at(side.opposite, p))
                for p in opposite
                if self._crossed(side, price, p)
            ]
            if reaching
            else []
        )
        if delta is None:
            self.book.set_level(side, price, qty)
        else:
            self.book.apply_delta(delta)
        if not (own or reaching):
            return
        new = self.book.qty_at(side, price)
        if own:
            self._queue.on_depth(list(own), prev, new)
        for p, before in wiped:
            after = self.book.qty_at(side.opposite, p)
            if after != before and p in opposite:
                self._queue.on_depth(list(opposite[p]), before, after)
        if self._book_cross and reaching and new > prev:
            # Only size that newly appeared at or beyond our price would have traded with us;
            # size already displayed there was offered before and is not counted twice.
            self._cross(side.opposite, [(price, new - prev)], ts_ns)

    def on_snapshot(self, snap: BookSnapshot) -> None:
        before = {
            (side, price): self.book.qty_at(side, price)
            for side in (Side.BUY, Side.SELL)
            for price in self.resting(side)
        }
        # the opposite size at or through our orders as the book showed it before: only what
        # the snapshot adds there would have traded with us (as a depth update counts it);
        # what was shown already was offered before, and is not counted again
        shown: dict[Side, dict[int, int]] = {}
        if self._book_cross:
            for side in (Side.BUY, Side.SELL):
                levels = self.resting(side)
                if levels:
                    limit = max(levels) if side is Side.BUY else min(levels)
                    shown[side] = dict(self.fillable(side, limit, snap.ts_event_ns))
        self.book.apply_snapshot(snap)
        for (side, price), prev in before.items():
            own = self.resting(side).get(price)
            if own:
                self._queue.on_depth(list(own), prev, self.book.qty_at(side, price))
        for side, had in shown.items():
            levels = self.resting(side)
            if levels:
                limit = max(levels) if side is Side.BUY else min(levels)
                new = [
                    (price, qty - had.get(price, 0))
                    for price, qty in self.fillable(side, limit, snap.ts_event_ns)
                    if qty > had.get(price, 0)
                ]
                if new:
                    self._cross(side, new, snap.ts_event_ns)

    def on_quote(self, quote: Quote) -> None:
        """The book as one quote shows it: its best bid and offer as the whole book, one
        level a side (a zero size or a missing side: none), taken as a snapshot of the top,
        so our orders meet it by the snapshot's rules (queues told of their level's size,
        size newly at or through our price crossing us). Levels behind the quote are
        unknown: the book shows none. Raises :class:`sapphire.book.l2.BookError` for a
        crossed quote (the book unchanged)."""
        bid = ((quote.bid_ticks, quote.bid_lots),) if quote.bid_ticks and quote.bid_lots else ()
        ask = ((quote.ask_ticks, quote.ask_lots),) if quote.ask_ticks and quote.ask_lots else ()
        self.on_snapshot(
            BookSnapshot(
                ts_event_ns=quote.ts_event_ns,
                ts_recv_ns=quote.ts_recv_ns,
                symbol=quote.symbol,
                bids=bid,
                asks=ask,
            )
        )

    @staticmethod
    def _crossed(book_side: Side, price: int, own_price: int) -> bool:
        """Is our opposite order's level at ``own_price`` at or through a ``book_side`` level
        at ``price`` (so the book's crossing rule removes it)?"""
        return own_price >= price if book_side is Side.SELL else own_price <= price

    def _reaches(self, book_side: Side, price: int) -> bool:
        """Does recorded size on ``book_side`` at ``price`` cross one of our opposite orders?"""
        if book_side is Side.SELL:
            return bool(self._bids) and price <= max(self._bids)
        return bool(self._asks) and price >= min(self._asks)

    def _cross(self, side: Side, supply: list[tuple[int, int]], ts_ns: int) -> None:
        """Fill our resting ``side`` orders, best price then FIFO, from recorded ``supply``."""
        levels = self.resting(side)
        supply = list(supply)
        for level_px in sorted(levels, reverse=side is Side.BUY):
            for order in list(levels.get(level_px, ())):
                want = order.leaves_lots
                for i, (px, avail) in enumerate(supply):
                    if want == 0:
                        break
                    reachable = px <= level_px if side is Side.BUY else px >= level_px
                    if not reachable or avail == 0:
                        continue
                    lots = min(avail, want)
                    supply[i] = (px, avail - lots)
                    want -= lots
                    if self._impact is not None:
                        self._impact.consume(side.opposite, px, lots, ts_ns)
                filled = order.leaves_lots - want
                if filled > 0:
                    self._sink(order, level_px, filled, True, ts_ns)
