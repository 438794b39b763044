"""Small slices of the real USDT-M BTCUSDT 2024-08-08 recording as Sapphire events."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import polars as pl

from sapphire.model.events import AnyMarketEvent, BookDelta, BookSnapshot, Side, Trade

SESSION = "2024-08-08"
SYMBOL = "BTCUSDT"


def _ticks(col: str, per_unit: int) -> pl.Expr:
    return (pl.col(col).cast(pl.Float64) * per_unit).round().cast(pl.Int64)


@lru_cache(maxsize=4)
def load_events(data: Path, seconds: float) -> tuple[AnyMarketEvent, ...]:
    """Snapshot, diffs and trades of the first ``seconds`` after the snapshot, in receive order."""
    depth = (
        pl.read_csv(
            data / "book" / "hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz",
            schema_overrides={"price": pl.String, "qty": pl.String},
        )
        .filter(pl.col("session") == SESSION)
        .with_columns(
            _ticks("price", 10).alias("px"),
            _ticks("qty", 1000).alias("q"),
            *(
                pl.col(c).cast(pl.Int64)
                for c in ("first_update_id", "final_update_id", "prev_final_update_id")
            ),
        )
    )
    snap_rows = depth.filter(pl.col("is_snapshot") == 1)
    t0 = int(snap_rows["local_ts_ns"][0])
    t1 = t0 + int(seconds * 1e9)
    diffs = depth.filter((pl.col("is_snapshot") == 0) & (pl.col("local_ts_ns") <= t1))
    trades = pl.read_csv(
        data / "trades" / "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz",
        schema_overrides={"price": pl.String, "qty": pl.String},
    ).filter((pl.col("session") == SESSION) & (pl.col("local_ts_ns") <= t1))
    trades = trades.with_columns(_ticks("price", 10).alias("px"), _ticks("qty", 1000).alias("q"))

    keyed: list[tuple[int, int, AnyMarketEvent]] = []
    bids = snap_rows.filter(pl.col("side") == "bid").sort("px", descending=True)
    asks = snap_rows.filter(pl.col("side") == "ask").sort("px")
    keyed.append(
        (
            t0,
            0,
            BookSnapshot(
                ts_event_ns=int(snap_rows["event_ts_ms"][0]) * 1_000_000,
                ts_recv_ns=t0,
                symbol=SYMBOL,
                bids=tuple(zip(bids["px"].to_list(), bids["q"].to_list(), strict=True)),
                asks=tuple(zip(asks["px"].to_list(), asks["q"].to_list(), strict=True)),
                update_id=int(snap_rows["final_update_id"][0]),
            ),
        )
    )
    rows = diffs.select(
        "local_ts_ns",
        "event_ts_ms",
        "first_update_id",
        "final_update_id",
        "prev_final_update_id",
        "side",
        "px",
        "q",
    ).rows()
    for i, (local, ev, first, final, prev, side, px, q) in enumerate(rows):
        last = i + 1 == len(rows) or rows[i + 1][3] != final
        keyed.append(
            (
                local,
                1,
                BookDelta(
                    ts_event_ns=ev * 1_000_000,
                    ts_recv_ns=local,
                    symbol=SYMBOL,
                    side=Side.BUY if side == "bid" else Side.SELL,
                    price_ticks=px,
                    qty_lots=q,
                    first_update_id=first,
                    final_update_id=final,
                    prev_final_update_id=prev or 0,
                    last_in_batch=last,
                ),
            )
        )
    for local, ts, tid, px, q, taker in trades.select(
        "local_ts_ns", "trade_ts_ms", "trade_id", "px", "q", "taker_side"
    ).rows():
        keyed.append(
            (
                local,
                2,
                Trade(
                    ts_event_ns=ts * 1_000_000,
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
    # Diffs received before the snapshot stay in the stream: the book holds and replays them.
    return tuple(e for _, _, e in keyed)
