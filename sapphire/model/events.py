"""Market-data events: immutable, integer ticks/lots, integer-ns timestamps."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import msgspec


class Side(enum.IntEnum):
    """Order or book side. The value is the sign of the position change of a buyer."""

    BUY = 1
    SELL = -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class MarketEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Base of every market-data event. ``ts_recv_ns`` is 0 where the source has no local time."""

    ts_event_ns: int
    ts_recv_ns: int = 0
    symbol: str


class Trade(MarketEvent, frozen=True, kw_only=True, gc=False, tag="trade"):
    """A public trade. ``taker_side`` is the aggressor's side."""

    price_ticks: int
    qty_lots: int
    taker_side: Side
    trade_id: int = 0


BREAK_PREV = -(2**63)
"""``prev_final_update_id`` of a depth **break marker**: a loader found its own book of the
symbol broken and sends nothing more of it until the next snapshot (see
:data:`sapphire.data.schemas.BREAK_PREV`). A sequencing book goes out of sync at it; a
consumer that keeps a book without sequencing must take it as "this book is unknown until
the next snapshot", never apply it as a level."""


class BookDelta(MarketEvent, frozen=True, kw_only=True, gc=False, tag="delta"):
    """One price level set to an absolute quantity (0 deletes the level).

    ``first_update_id``/``final_update_id``/``prev_final_update_id`` carry the exchange's
    sequence numbers (Binance ``U``/``u``/``pu``); ``last_in_batch`` marks the final level
    of one exchange message so consumers can act on consistent books only.
    """

    side: Side
    price_ticks: int
    qty_lots: int
    first_update_id: int = 0
    final_update_id: int = 0
    prev_final_update_id: int = 0
    last_in_batch: bool = True

    @property
    def is_break(self) -> bool:
        """A loader's break marker (:data:`BREAK_PREV`), not a level of the book."""
        return self.prev_final_update_id == BREAK_PREV


class BookDeltas(MarketEvent, frozen=True, kw_only=True, gc=False, tag="deltas"):
    """The levels of one exchange depth message as one event: exactly the :class:`BookDelta`
    events of that message (:meth:`deltas` gives them back), in the recorded order.

    Why: a depth feed's messages carry tens of levels (68 on average in the shared USDT-M
    BTCUSDT day), and every event costs the replay's merge, the kernel's windows and each
    stage a step of Python, where the venue's book needs only a loop over the levels. The
    replay groups a message's consecutive levels (same symbol, times and update ids); the
    venue's book and matching apply them level by level, as they would the deltas; an agent
    gets them as one event only where its ``market_events`` names this type, else one by one.
    ``levels``: ``(side, price_ticks, qty_lots)``, the side as its value (1 bid, -1 ask: a
    decoded enum costs twice a plain int, and a replay decodes every level); ``complete``:
    the message's last level is in (its ``last_in_batch``; every earlier level's is False).
    """

    levels: tuple[tuple[int, int, int], ...]
    first_update_id: int = 0
    final_update_id: int = 0
    prev_final_update_id: int = 0
    complete: bool = True

    def delta(self, i: int) -> BookDelta:
        """Level ``i`` as the :class:`BookDelta` the recording gave."""
        side, price, qty = self.levels[i]
        return BookDelta(
            ts_event_ns=self.ts_event_ns,
            ts_recv_ns=self.ts_recv_ns,
            symbol=self.symbol,
            side=Side(side),
            price_ticks=price,
            qty_lots=qty,
            first_update_id=self.first_update_id,
            final_update_id=self.final_update_id,
            prev_final_update_id=self.prev_final_update_id,
            last_in_batch=self.complete and i == len(self.levels) - 1,
        )

    def deltas(self) -> list[BookDelta]:
        return [self.delta(i) for i in range(len(self.levels))]

    def head(self, n: int) -> BookDeltas:
        """The first ``n`` levels (a replay capped inside a message: the rest never came)."""
        return msgspec.structs.replace(
            self, levels=self.levels[:n], complete=self.complete and n >= len(self.levels)
        )


def group_levels(deltas: list[BookDelta]) -> BookDelta | BookDeltas:
    """Consecutive levels of one message (same symbol, times and ids; every one but the last
    with ``last_in_batch`` False) as one event; a single level stays itself."""
    if len(deltas) == 1:
        return deltas[0]
    first = deltas[0]
    return BookDeltas(
        ts_event_ns=first.ts_event_ns,
        ts_recv_ns=first.ts_recv_ns,
        symbol=first.symbol,
        levels=tuple((int(d.side), d.price_ticks, d.qty_lots) for d in deltas),
        first_update_id=first.first_update_id,
        final_update_id=first.final_update_id,
        prev_final_update_id=first.prev_final_update_id,
        complete=deltas[-1].last_in_batch,
    )


class BookSnapshot(MarketEvent, frozen=True, kw_only=True, gc=False, tag="snapshot"):
    """A full (or top-N) book. Levels are ``(price_ticks, qty_lots)``, best first."""

    bids: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...]
    update_id: int = 0


class Quote(MarketEvent, frozen=True, kw_only=True, gc=False, tag="quote"):
    """Best bid and offer (Binance bookTicker)."""

    bid_ticks: int
    bid_lots: int
    ask_ticks: int
    ask_lots: int
    update_id: int = 0


class Bar(MarketEvent, frozen=True, kw_only=True, gc=False, tag="bar"):
    """An OHLCV candle, an event at its close: ``ts_event_ns`` is when the bar is complete
    and known (its open time plus ``interval_ns``), so every runner applies it, marks at its
    close and hands it to agents no earlier than that; the candle's own date (what a
    freqtrade-style frame is indexed by) is :attr:`open_time_ns`. Volume is in lots of the
    base asset."""

    interval_ns: int
    open_ticks: int
    high_ticks: int
    low_ticks: int
    close_ticks: int
    volume_lots: int

    @property
    def open_time_ns(self) -> int:
        return self.ts_event_ns - self.interval_ns


class FundingRate(MarketEvent, frozen=True, kw_only=True, gc=False, tag="funding"):
    """A perpetual's funding rate as a decimal string (0.0001 = 0.01 %)."""

    rate: str


AnyMarketEvent = Trade | BookDelta | BookDeltas | BookSnapshot | Quote | Bar | FundingRate

MARKET_EVENT_TYPES: frozenset[type[MarketEvent]] = frozenset(
    {Trade, BookDelta, BookDeltas, BookSnapshot, Quote, Bar, FundingRate}
)
"""Every market event type (an agent reading all of them, depth messages as one event)."""


def rows_of(event: MarketEvent) -> int:
    """Recorded rows in one event: a :class:`BookDeltas` counts its levels, anything else one
    (a :class:`BookSnapshot` too: one instant of the book, where a loader's ``RejectStats``
    counts its levels as rows). Hot loops inline this rule: ``rows_in``, the window cutter,
    the replay cache."""
    return len(event.levels) if type(event) is BookDeltas else 1


def rows_in(events: Iterable[MarketEvent]) -> int:
    """Recorded rows in ``events``: a :class:`BookDeltas` counts its levels (what every
    summary, progress bar and rate counts, so grouping changes no figure)."""
    n = 0
    for e in events:
        n += len(e.levels) if type(e) is BookDeltas else 1
    return n


def as_levels(events: Sequence[AnyMarketEvent]) -> Sequence[AnyMarketEvent]:
    """``events`` with each :class:`BookDeltas` as the :class:`BookDelta` events of its levels
    (``events`` itself where there is none)."""
    deltas = BookDeltas
    if not any(type(e) is deltas for e in events):
        return events
    out: list[AnyMarketEvent] = []
    for e in events:
        if type(e) is deltas:
            out.extend(e.deltas())
        else:
            out.append(e)
    return out
