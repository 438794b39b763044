"""freqtrade and basana CSVs: OHLCV candles, funding rates and trade lists."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from sapphire.data.binance_json import interval_ns
from sapphire.data.schemas import FrameKind, conform, scaled_ns
from sapphire.data.validation import DataFileError

_FT_NAME = re.compile(
    r"freqtrade_(?:binance_)?(?P<pair>[A-Z0-9]+-[A-Z0-9]+(?:-[A-Z0-9]+)?)_(?P<iv>\d+[mhdw])"
)
_BASANA_NAME = re.compile(r"basana_\w+?_(?P<pair>[A-Z0-9]+-[A-Z0-9]+)_(?P<iv>\d+[mhdw])")


def _read_csv(path: Path) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema_length=0)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataFileError(f"{path}: cannot read CSV: {exc}") from exc


def _symbol(pair: str) -> str:
    """ "XRP-USDT-USDT" (freqtrade futures XRP/USDT:USDT) -> "XRPUSDT"."""
    parts = pair.split("-")
    return "".join(parts[:2])


def _name(path: Path, pattern: re.Pattern[str]) -> tuple[str, int]:
    match = pattern.search(path.name)
    if match is None:
        raise DataFileError(f"{path}: cannot tell symbol and interval from the file name")
    return _symbol(match["pair"]), interval_ns(match["iv"])


def file_symbol(path: str | Path) -> str | None:
    """The symbol a freqtrade or basana OHLCV file's name gives ("BTCUSD" for
    ``basana_bitstamp_BTC-USD_1m_...``); None for any other name."""
    for pattern in (_FT_NAME, _BASANA_NAME):
        match = pattern.search(Path(path).name)
        if match is not None:
            return _symbol(match["pair"])
    return None


def _f(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Float64, strict=False)


def _ms(col: str) -> pl.Expr:
    """Milliseconds as ns; null (the row malformed, counted) where that is no Int64 ns."""
    return scaled_ns(pl.col(col).cast(pl.Int64, strict=False), 1_000_000)


def load_freqtrade_ohlcv(path: str | Path) -> pl.DataFrame:
    """``timestamp_ms,open,high,low,close,volume`` -> BARS_SCHEMA (symbol/interval from name)."""
    path = Path(path)
    symbol, interval = _name(path, _FT_NAME)
    frame = _read_csv(path).select(
        ts_event_ns=_ms("timestamp_ms"),
        ts_recv_ns=pl.lit(0),
        symbol=pl.lit(symbol),
        session=pl.lit(""),
        interval_ns=pl.lit(interval),
        **{c: _f(c) for c in ("open", "high", "low", "close")},
        # Mark-price candles leave volume empty, every one: no volume, not a broken row. One
        # empty volume among filled ones is a broken row (null: malformed, counted), not 0.
        volume=pl.when(pl.col("volume").is_null().all()).then(0.0).otherwise(_f("volume")),
    )
    return conform(frame, FrameKind.BARS)


def load_freqtrade_funding(path: str | Path) -> pl.DataFrame:
    """freqtrade funding-rate candles: the rate is in ``open`` -> FUNDING_SCHEMA."""
    path = Path(path)
    symbol, _ = _name(path, _FT_NAME)
    frame = _read_csv(path).select(
        ts_event_ns=_ms("timestamp_ms"),
        ts_recv_ns=pl.lit(0),
        symbol=pl.lit(symbol),
        session=pl.lit(""),
        rate=_f("open"),
    )
    return conform(frame, FrameKind.FUNDING)


def load_freqtrade_trades(path: str | Path, symbol: str | None = None) -> pl.DataFrame:
    """ccxt-style trade lists (``timestamp,id,type,side,price,amount,cost``) -> TRADES_SCHEMA."""
    path = Path(path)
    if symbol is None:
        match = re.search(r"_([A-Z0-9]+)-([A-Z0-9]+)_trades", path.name)
        symbol = f"{match[1]}{match[2]}" if match else "UNKNOWN"
    side = pl.col("side").str.to_lowercase()
    frame = _read_csv(path).select(
        ts_event_ns=_ms("timestamp"),
        ts_recv_ns=pl.lit(0),
        symbol=pl.lit(symbol),
        session=pl.lit(""),
        price=_f("price"),
        qty=_f("amount"),
        taker_side=pl.when(side == "buy").then(1).when(side == "sell").then(-1),
        trade_id=pl.col("id").cast(pl.Int64, strict=False),
    )
    return conform(frame, FrameKind.TRADES)


def load_basana_ohlcv(path: str | Path) -> pl.DataFrame:
    """basana ``datetime(naive UTC),open,high,low,close,volume`` -> BARS_SCHEMA."""
    path = Path(path)
    symbol, interval = _name(path, _BASANA_NAME)
    ts = pl.col("datetime").str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC", strict=False)
    frame = _read_csv(path).select(
        ts_event_ns=ts.dt.epoch("ns"),
        ts_recv_ns=pl.lit(0),
        symbol=pl.lit(symbol),
        session=pl.lit(""),
        interval_ns=pl.lit(interval),
        **{c: _f(c) for c in ("open", "high", "low", "close", "volume")},
    )
    return conform(frame, FrameKind.BARS)
