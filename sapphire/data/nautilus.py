"""nautilus_trader test-data files: trades/quotes parquet, Binance depth CSV and the BTC-PERP
1-minute OHLCV CSV (its Tardis CSVs are read by :mod:`sapphire.data.tardis`)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sapphire.data.schemas import FrameKind, conform, scaled_ns
from sapphire.data.validation import DataFileError

_NS = pl.Int64


def _read(path: Path, parquet: bool) -> pl.DataFrame:
    try:
        return pl.read_parquet(path) if parquet else pl.read_csv(path, infer_schema_length=0)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataFileError(f"{path}: cannot read: {exc}") from exc


def _epoch_ns(col: str) -> pl.Expr:
    return pl.col(col).dt.epoch("ns")


def load_trades_parquet(path: str | Path, symbol: str = "BTCUSDT") -> pl.DataFrame:
    """``timestamp,trade_id,price,quantity,buyer_maker`` -> TRADES_SCHEMA."""
    raw = _read(Path(path), parquet=True)
    maker = pl.col("buyer_maker").cast(pl.Utf8).str.to_lowercase()
    frame = raw.select(
        ts_event_ns=_epoch_ns("timestamp"),
        ts_recv_ns=pl.lit(0),
        symbol=pl.lit(symbol),
        session=pl.lit("2021-01-08"),
        price=pl.col("price"),
        qty=pl.col("quantity"),
        taker_side=pl.when(maker == "true").then(-1).when(maker == "false").then(1),
        trade_id=pl.col("trade_id"),
    )
    return conform(frame, FrameKind.TRADES)


def load_quotes_parquet(path: str | Path) -> pl.DataFrame:
    """``timestamp,symbol(BTC/USDT),ask_size,ask,bid_size,bid`` -> BBO_SCHEMA."""
    raw = _read(Path(path), parquet=True)
    frame = raw.select(
        ts_event_ns=_epoch_ns("timestamp"),
        ts_recv_ns=pl.lit(0),
        symbol=pl.col("symbol").str.replace("/", ""),
        session=pl.lit("2021-01-08"),
        update_id=pl.lit(0),
        bid_price=pl.col("bid"),
        bid_qty=pl.col("bid_size"),
        ask_price=pl.col("ask"),
        ask_qty=pl.col("ask_size"),
    )
    return conform(frame, FrameKind.BBO)


def load_depth_csv(path: str | Path) -> pl.DataFrame:
    """``symbol,timestamp(ms),first_update_id,last_update_id,side,update_type,price,qty,pu``."""
    raw = _read(Path(path), parquet=False)
    side = pl.col("side").str.to_lowercase()
    pu = pl.col("pu").cast(pl.Int64, strict=False)
    frame = raw.select(
        ts_event_ns=scaled_ns(pl.col("timestamp").cast(pl.Int64, strict=False), 1_000_000),
        ts_recv_ns=pl.lit(0),
        symbol=pl.col("symbol"),
        session=pl.lit("2022-11-01"),
        is_snapshot=pl.col("update_type") == "snap",
        first_update_id=pl.col("first_update_id").cast(pl.Int64, strict=False),
        final_update_id=pl.col("last_update_id").cast(pl.Int64, strict=False),
        prev_final_update_id=pl.when(pu > 0).then(pu).otherwise(0),
        side=pl.when(side == "b").then(1).when(side == "a").then(-1),
        price=pl.col("price").cast(pl.Float64, strict=False),
        qty=pl.col("qty").cast(pl.Float64, strict=False),
    )
    return conform(frame, FrameKind.DEPTH)


def load_perp_bars(path: str | Path, symbol: str = "BTC-PERP") -> pl.DataFrame:
    """``timestamp(naive UTC string),open,high,low,close,volume`` 1-minute bars -> BARS_SCHEMA."""
    raw = _read(Path(path), parquet=False)
    ts = pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_zone="UTC", strict=False)
    frame = raw.select(
        ts_event_ns=ts.dt.epoch("ns"),
        ts_recv_ns=pl.lit(0),
        symbol=pl.lit(symbol),
        session=pl.lit(""),
        interval_ns=pl.lit(60_000_000_000),
        **{c: pl.col(c).cast(pl.Float64, strict=False) for c in ("open", "high", "low", "close")},
        volume=pl.col("volume").cast(pl.Float64, strict=False),
    )
    return conform(frame, FrameKind.BARS)
