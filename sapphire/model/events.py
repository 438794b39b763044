"""Market-data events: immutable, integer ticks/lots, integer-ns timestamps."""

from __future__ import annotations

import enum

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
    """An OHLCV candle. ``ts_event_ns`` is the bar's open time; the bar is known at
    ``ts_event_ns + interval_ns``. Volume is in lots of the base asset."""

    interval_ns: int
    open_ticks: int
    high_ticks: int
    low_ticks: int
    close_ticks: int
    volume_lots: int

    @property
    def close_time_ns(self) -> int:
        return self.ts_event_ns + self.interval_ns


class FundingRate(MarketEvent, frozen=True, kw_only=True, gc=False, tag="funding"):
    """A perpetual's funding rate as a decimal string (0.0001 = 0.01 %)."""

    rate: str


AnyMarketEvent = Trade | BookDelta | BookSnapshot | Quote | Bar | FundingRate
