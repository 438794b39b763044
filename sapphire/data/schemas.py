"""Canonical polars schemas of every market-data frame Sapphire loads.

Every loader in :mod:`sapphire.data` returns one of these frames, whatever the source format,
so research code, the book benchmark and the event streams see one shape per kind.

Conventions shared by all schemas
---------------------------------
* ``ts_event_ns`` (Int64): the exchange's time of the event, ns since the Unix epoch, UTC.
  Trades use the matching-engine time (Binance ``T``), depth and BBO the event time
  (Binance ``E``). Where a source has no exchange time (Binance spot bookTicker, spot REST
  snapshots), it falls back to ``ts_recv_ns`` so the column is never null.
* ``ts_recv_ns`` (Int64): the recorder's local receive time, 0 where the source has none.
* ``symbol`` (Utf8): exchange symbol without separator ("BTCUSDT").
* ``session`` (Utf8): label of one continuous recording window. Never treat two sessions as
  one stream: there are gaps between them. Sources without sessions use one label.
* ``price``/``qty`` (Float64): decimal values as floats (research edge). Convert to integer
  ticks/lots with :func:`sapphire.data.instruments.with_ticks` before trading logic uses them.
* ``side``/``taker_side`` (Int8): +1 bid/buy, -1 ask/sell (the values of ``Side``).
* Update ids (Int64): 0 where the source has none.

Row accounting (see :mod:`sapphire.data.validation`): one *row* is one trade, one price level
(depth, snapshots included), one BBO update, one bar or one funding rate; a malformed source
line that cannot even be split into rows counts as one row.
"""

from __future__ import annotations

import enum
from typing import Final

import polars as pl

from sapphire.model.events import BREAK_PREV as _BREAK_PREV


class FrameKind(enum.StrEnum):
    TRADES = "trades"
    DEPTH = "depth"
    BBO = "bbo"
    BARS = "bars"
    FUNDING = "funding"


_COMMON: Final[dict[str, pl.DataType]] = {
    "ts_event_ns": pl.Int64(),
    "ts_recv_ns": pl.Int64(),
    "symbol": pl.Utf8(),
    "session": pl.Utf8(),
}

TRADES_SCHEMA: Final[dict[str, pl.DataType]] = {
    **_COMMON,
    "price": pl.Float64(),
    "qty": pl.Float64(),  # base asset
    "taker_side": pl.Int8(),  # +1 the aggressor bought, -1 it sold
    "trade_id": pl.Int64(),
}
"""One row per public trade."""

DEPTH_SCHEMA: Final[dict[str, pl.DataType]] = {
    **_COMMON,
    "is_snapshot": pl.Boolean(),  # True: a level of a REST/full snapshot
    "first_update_id": pl.Int64(),  # Binance U (0 for snapshots)
    "final_update_id": pl.Int64(),  # Binance u; lastUpdateId for snapshots
    "prev_final_update_id": pl.Int64(),  # Binance pu (futures only, else 0)
    "side": pl.Int8(),  # +1 bid, -1 ask
    "price": pl.Float64(),
    "qty": pl.Float64(),  # absolute quantity at the level; 0 deletes it
}
"""One row per price level. Rows of one exchange message share ts and update ids."""

BREAK_PREV: Final = _BREAK_PREV
"""``prev_final_update_id`` of a depth **break marker** (the smallest Int64: no venue's id).

A loader that keeps its own book of a symbol (keyed levels, a checksum, a sequence number)
and finds it broken (an unknown level id, a checksum mismatch, a missing ``seq``, a lost
message) rejects that symbol's depth rows until the next snapshot. Where the symbol was
chained, it emits one marker row there: ``qty`` 0 at a price its dropped book held, ids
``(p + 2, p + 1, BREAK_PREV)`` with ``p`` the last id it chained (see
:meth:`sapphire.data.cryptofeed_rows.Chain.broken`). No book applies it: it breaks the
update-id chain, so a sequencing book (:class:`sapphire.book.l2.L2Book`,
:func:`sapphire.book.sync.sync_plan`) goes out of sync there, and it is stale against the next
snapshot. It is no source row: :class:`sapphire.data.convert.EventBuilder` hands it on without
the row checks and counts it in ``RejectStats.breaks``, not in ``rows_in``/``rows_out``. A
consumer that applies depth rows without sequencing must skip it."""

BBO_SCHEMA: Final[dict[str, pl.DataType]] = {
    **_COMMON,
    "update_id": pl.Int64(),
    "bid_price": pl.Float64(),
    "bid_qty": pl.Float64(),
    "ask_price": pl.Float64(),
    "ask_qty": pl.Float64(),
}
"""One row per best-bid-offer update (Binance bookTicker, quote files)."""

BARS_SCHEMA: Final[dict[str, pl.DataType]] = {
    **_COMMON,
    "interval_ns": pl.Int64(),  # ts_event_ns is the bar's open time (a Bar event: its close)
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),  # base asset (USD for the nautilus BTC-PERP file)
}
"""One row per OHLCV candle."""

FUNDING_SCHEMA: Final[dict[str, pl.DataType]] = {
    **_COMMON,
    "rate": pl.Float64(),  # 0.0001 = 0.01 % per funding interval
}
"""One row per funding-rate observation."""

SCHEMAS: Final[dict[FrameKind, dict[str, pl.DataType]]] = {
    FrameKind.TRADES: TRADES_SCHEMA,
    FrameKind.DEPTH: DEPTH_SCHEMA,
    FrameKind.BBO: BBO_SCHEMA,
    FrameKind.BARS: BARS_SCHEMA,
    FrameKind.FUNDING: FUNDING_SCHEMA,
}

TICK_COLUMNS: Final[dict[FrameKind, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # kind -> (price columns -> *_ticks, quantity columns -> *_lots)
    FrameKind.TRADES: (("price",), ("qty",)),
    FrameKind.DEPTH: (("price",), ("qty",)),
    FrameKind.BBO: (("bid_price", "ask_price"), ("bid_qty", "ask_qty")),
    FrameKind.BARS: (("open", "high", "low", "close"), ("volume",)),
    FrameKind.FUNDING: ((), ()),
}


_I64_MAX: Final = 2**63 - 1


def scaled_ns(value: pl.Expr, ns_per_unit: int) -> pl.Expr:
    """An Int64 count of a time unit (ms: ``1_000_000``) as ns; null where the ns would not
    fit Int64 or the count is negative (a timestamp in the wrong unit: polars' ``*`` wraps,
    and a wrapped time was admitted as a valid one). The row is then malformed, counted."""
    return pl.when((value >= 0) & (value <= _I64_MAX // ns_per_unit)).then(value * ns_per_unit)


def conform(frame: pl.DataFrame, kind: FrameKind) -> pl.DataFrame:
    """Select and cast ``frame`` to the canonical schema of ``kind`` (columns in order)."""
    schema = SCHEMAS[kind]
    return frame.select([pl.col(name).cast(dtype, strict=False) for name, dtype in schema.items()])


def kind_of(frame: pl.DataFrame) -> FrameKind:
    """Which canonical schema ``frame`` follows (by its columns)."""
    columns = set(frame.columns)
    for kind in (FrameKind.DEPTH, FrameKind.BBO, FrameKind.BARS, FrameKind.TRADES):
        if set(SCHEMAS[kind]) <= columns:
            return kind
    if set(FUNDING_SCHEMA) <= columns:
        return FrameKind.FUNDING
    raise ValueError(f"not a canonical frame: columns {sorted(columns)}")
