"""A few seconds of the real Binance spot BTCUSDT recording (2024-08-08) as Sapphire events."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import polars as pl

from sapphire.model.events import AnyMarketEvent, BookDelta, BookSnapshot, Side, Trade

SESSION = "2024-08-08"
SYMBOL = "BTCUSDT"
EXCHANGE_INFO = Path("exchange") / "basana_binance_exchangeInfo_BTCUSDT.json"


def _units(col: str, per_unit: int) -> pl.Expr:
    return (pl.col(col).cast(pl.Float64) * per_unit).round().cast(pl.Int64)


@lru_cache(maxsize=2)
def load_spot_events(data: Path, seconds: float) -> tuple[AnyMarketEvent, ...]:
    """The snapshot, then diffs and trades of the next ``seconds``, in receive order
    (0.01 USDT ticks, 0.00001 BTC lots, as in the exchangeInfo fixture)."""
    depth = (
        pl.scan_csv(
            data / "book" / "hftbacktest_binance-spot_BTCUSDT_depth.csv.gz",
            schema_overrides={"price": pl.String, "qty": pl.String},
        )
        .filter(pl.col("session") == SESSION)
        .with_columns(_units("price", 100).alias("px"), _units("qty", 100_000).alias("q"))
        .collect()
    )
    snap = depth.filter(pl.col("is_snapshot") == 1)
    t0 = int(snap["local_ts_ns"][0])
    t1 = t0 + int(seconds * 1e9)
    diffs = depth.filter(
        (pl.col("is_snapshot") == 0) & (pl.col("local_ts_ns") > t0) & (pl.col("local_ts_ns") <= t1)
    )
    trades = (
        pl.scan_csv(
            data / "trades" / "hftbacktest_binance-spot_BTCUSDT_trades.csv.gz",
            schema_overrides={"price": pl.String, "qty": pl.String},
        )
        .filter(
            (pl.col("session") == SESSION)
            & (pl.col("local_ts_ns") > t0)
            & (pl.col("local_ts_ns") <= t1)
        )
        .with_columns(_units("price", 100).alias("px"), _units("qty", 100_000).alias("q"))
        .collect()
    )
    bids = snap.filter(pl.col("side") == "bid").sort("px", descending=True)
    asks = snap.filter(pl.col("side") == "ask").sort("px")
    keyed: list[tuple[int, int, AnyMarketEvent]] = [
        (
            t0,
            0,
            BookSnapshot(
                ts_event_ns=t0,
                ts_recv_ns=t0,
                symbol=SYMBOL,
                bids=tuple(zip(bids["px"].to_list(), bids["q"].to_list(), strict=True)),
                asks=tuple(zip(asks["px"].to_list(), asks["q"].to_list(), strict=True)),
                update_id=int(snap["final_update_id"][0]),
            ),
        )
    ]
    rows = diffs.select(
        "local_ts_ns", "first_update_id", "final_update_id", "side", "px", "q"
    ).rows()
    for i, (local, first, final, side, px, q) in enumerate(rows):
        last = i + 1 == len(rows) or rows[i + 1][2] != final
        keyed.append(
            (
                local,
                1,
                BookDelta(
                    ts_event_ns=local,
                    ts_recv_ns=local,
                    symbol=SYMBOL,
                    side=Side.BUY if side == "bid" else Side.SELL,
                    price_ticks=px,
                    qty_lots=q,
                    first_update_id=first,
                    final_update_id=final,
                    last_in_batch=last,
                ),
            )
        )
    for local, tid, px, q, taker in trades.select(
        "local_ts_ns", "trade_id", "px", "q", "taker_side"
    ).rows():
        keyed.append(
            (
                local,
                2,
                Trade(
                    ts_event_ns=local,
                    ts_recv_ns=local,
                    symbol=SYMBOL,
                    price_ticks=px,
                    qty_lots=q,
                    taker_side=Side.BUY if taker == "buy" else Side.SELL,
                    trade_id=tid,
                ),
            )
        )
    keyed.sort(key=lambda k: (k[0], k[1]))
    return tuple(e for _, _, e in keyed)
