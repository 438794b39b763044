"""Read the flattened hftbacktest depth CSVs into ticks/lots (until sapphire.data has loaders)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from sapphire.model.events import BookDelta, BookSnapshot, Side

USDM = "book/hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz"
SPOT = "book/hftbacktest_binance-spot_BTCUSDT_depth.csv.gz"
USDM_TICK, USDM_LOT = 0.1, 0.001
# Spot sizes on the book's grid (Binance's 8-decimal size precision, sapphire.data's known
# instrument), not the 0.00001 order step: far levels hold sizes such as 4690.343896.
SPOT_TICK, SPOT_LOT = 0.01, 0.00000001

_IDS = ("first_update_id", "final_update_id", "prev_final_update_id")


def load_depth(path: Path, tick: float, lot: float) -> pl.DataFrame:
    """Columns: session, is_snapshot, U/u/pu (0 where absent), side (+1/-1), price, qty."""
    df = pl.read_csv(
        path,
        columns=["session", "is_snapshot", *_IDS, "side", "price", "qty"],
        schema_overrides={
            "session": pl.Utf8,
            "is_snapshot": pl.Int8,
            **{c: pl.Int64 for c in _IDS},
            "side": pl.Utf8,
            "price": pl.Float64,
            "qty": pl.Float64,
        },
    )
    return df.with_columns(
        pl.col(*_IDS).fill_null(0),
        side=pl.when(pl.col("side") == "bid").then(1).otherwise(-1).cast(pl.Int8),
        price=(pl.col("price") / tick).round().cast(pl.Int64),
        qty=(pl.col("qty") / lot).round().cast(pl.Int64),
    )


def message_ends(df: pl.DataFrame) -> np.ndarray:
    """True on the last row of each exchange message (rows sharing snapshot flag and ids)."""
    keys = df.select("is_snapshot", *_IDS)
    nxt = keys.shift(-1)
    differs = np.zeros(df.height, dtype=np.bool_)
    for col in keys.columns:
        differs |= (keys[col] != nxt[col]).fill_null(True).to_numpy()
    return differs


def events(
    df: pl.DataFrame, symbol: str = "BTCUSDT"
) -> Iterator[tuple[int, BookSnapshot | BookDelta]]:
    """``(row of the message's last level, event)`` in file order; a snapshot is one event."""
    ends = message_ends(df)
    sides = {1: Side.BUY, -1: Side.SELL}
    cols = [df[c].to_list() for c in ("is_snapshot", *_IDS, "side", "price", "qty")]
    bids: list[tuple[int, int]] = []
    asks: list[tuple[int, int]] = []
    for k, (snap, first, final, prev, side, price, qty) in enumerate(zip(*cols, strict=True)):
        if snap:
            (bids if side == 1 else asks).append((price, qty))
            if ends[k]:
                yield (
                    k,
                    BookSnapshot(
                        ts_event_ns=0,
                        symbol=symbol,
                        bids=tuple(sorted(bids, reverse=True)),
                        asks=tuple(sorted(asks)),
                        update_id=final,
                    ),
                )
                bids, asks = [], []
            continue
        yield (
            k,
            BookDelta(
                ts_event_ns=0,
                symbol=symbol,
                side=sides[side],
                price_ticks=price,
                qty_lots=qty,
                first_update_id=first,
                final_update_id=final,
                prev_final_update_id=prev,
                last_in_batch=bool(ends[k]),
            ),
        )
