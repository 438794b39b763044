"""Format detection and the two entry points: :func:`load_frames` and :func:`stream_events`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sapphire.data import (
    basana,
    bybit_archive,
    coinbase,
    cryptofeed,
    hftbacktest,
    hftbacktest_raw,
    hyperliquid,
    nautilus,
    ohlcv,
    tardis,
    venue_instruments,
)
from sapphire.data.instruments import (
    infer_frame_instrument,
    known_instrument,
    load_exchange_info,
)
from sapphire.data.schemas import FrameKind, kind_of
from sapphire.data.stream import Chunk, EventStream, Instruments
from sapphire.data.validation import DataFileError, RejectStats
from sapphire.model import Instrument

Frames = dict[FrameKind, pl.DataFrame]


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    load: Callable[[Path], Frames]


def _one(fn: Callable[[Path], pl.DataFrame]) -> Callable[[Path], Frames]:
    def load(path: Path) -> Frames:
        frame = fn(path)
        return {kind_of(frame): frame}

    return load


def _instruments_frame(path: Path) -> Frames:
    count = len(load_exchange_info(path))
    raise DataFileError(f"{path}: exchangeInfo with {count} instruments, not market data")


def _metadata_frame(path: Path) -> Frames:
    meta = venue_instruments.read_metadata(path)
    raise DataFileError(
        f"{path}: {meta.venue} instrument metadata ({len(meta.markets)} markets), not market data"
    )


def detect(path: str | Path) -> Format:
    """The format of ``path`` from its name (and its CSV header, log content or JSON shape)."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        what = "a folder, not a data file" if path.is_dir() else "no such file"
        raise DataFileError(f"{path}: {what}")
    # Tardis CSVs are recognised by their header, whatever the name; a "tardis" name with
    # another header still goes to the Tardis loader, which then says what is wrong.
    tardis_fmt = tardis.sniff(path) if ".csv" in name or "tardis" in name else None
    # Venue instrument metadata (exchangeInfo, instrument lists, Hyperliquid meta) before the
    # cryptofeed rule: OKX and Deribit instrument lists are cryptofeed HTTP logs.
    metadata = venue_instruments.sniff_metadata(path)
    if metadata is not None:
        if metadata is venue_instruments.MetadataFormat.BINANCE_EXCHANGE_INFO:
            return Format(metadata.value, _instruments_frame)
        return Format(metadata.value, _metadata_frame)
    # Bybit public archives, by content whatever the name (order book JSON lines, trade CSV).
    if ".csv" not in name and bybit_archive.sniff_book(path):
        return Format(bybit_archive.BOOK_FORMAT, lambda p: bybit_archive.load_book_frames(p))
    if ".csv" in name and tardis_fmt is None and bybit_archive.sniff_trades(path):
        return Format(bybit_archive.TRADES_FORMAT, _one(bybit_archive.load_trades_frame))
    rules: list[tuple[bool, Format]] = [
        (
            tardis_fmt is not None or "tardis" in name,
            Format(tardis_fmt or "tardis_csv", lambda p: tardis.load_tardis_frames(p)),
        ),
        (name.startswith("hftbacktest_"), Format("hftbacktest_csv", _one(_hft_frame))),
        (
            hftbacktest_raw.parse_name(path)[0] != "" and ".csv" not in name,
            Format("hftbacktest_raw", lambda p: hftbacktest_raw.load_raw_frames(p)),
        ),
        # The venue (Binance, Bybit, OKX) is read from the content once this rule matches.
        (name.startswith("cryptofeed_") and ".log" in name, _CRYPTOFEED),
        ("exchangeInfo" in name, Format("binance_exchange_info", _instruments_frame)),
        (
            name.startswith("nautilus_") and "trades" in name and name.endswith(".parquet"),
            Format("nautilus_trades_parquet", _one(nautilus.load_trades_parquet)),
        ),
        (
            name.startswith("nautilus_") and "quotes" in name and name.endswith(".parquet"),
            Format("nautilus_quotes_parquet", _one(nautilus.load_quotes_parquet)),
        ),
        (
            name.startswith("nautilus_") and "depth" in name,
            Format("nautilus_depth_csv", _one(nautilus.load_depth_csv)),
        ),
        (
            name.startswith("nautilus_") and "_1m_" in name,
            Format("nautilus_bars_csv", _one(nautilus.load_perp_bars)),
        ),
        (
            name.startswith("freqtrade_") and "funding_rate" in name,
            Format("freqtrade_funding", _one(ohlcv.load_freqtrade_funding)),
        ),
        (
            name.startswith("freqtrade_") and "trades" in name,
            Format("freqtrade_trades", _one(ohlcv.load_freqtrade_trades)),
        ),
        (
            name.startswith("freqtrade_"),
            Format("freqtrade_ohlcv", _one(ohlcv.load_freqtrade_ohlcv)),
        ),
        (
            name.startswith("basana_") and name.endswith(".json"),
            Format("basana_depth_json", _one(basana.load_depth_json)),
        ),
        (name.startswith("basana_"), Format("basana_ohlcv", _one(ohlcv.load_basana_ohlcv))),
    ]
    for matched, fmt in rules:
        if matched:
            return _cryptofeed_format(path) if fmt is _CRYPTOFEED else fmt
    if cryptofeed.is_ws_log(path):  # a websocket log under any name
        return _cryptofeed_format(path)
    # JSON bodies say what they are only through their shape, so they are parsed to decide.
    shape = hyperliquid.sniff(path) if name.endswith((".json", ".json.gz")) else None
    if shape is not None:
        return Format(shape, _one(hyperliquid.LOADERS[shape]))
    # Bare Coinbase Exchange messages, one per line, under any name.
    if coinbase.sniff(path):
        return Format(coinbase.FORMAT, lambda p: coinbase.load_coinbase_frames(p))
    raise DataFileError(f"{path}: unknown data format")


_CRYPTOFEED = Format("cryptofeed_log", lambda p: cryptofeed.load_cryptofeed_frames(p))


def _cryptofeed_format(path: Path) -> Format:
    """cryptofeed_log (Binance), cryptofeed_bybit or cryptofeed_okx, from the log's content."""
    return Format(cryptofeed.FORMATS[cryptofeed.sniff_venue(path)], _CRYPTOFEED.load)


def _hft_frame(path: Path) -> pl.DataFrame:
    kind = hftbacktest.parse_name(path)[2]
    loaders = {
        FrameKind.TRADES: hftbacktest.load_trades_frame,
        FrameKind.DEPTH: hftbacktest.load_depth_frame,
        FrameKind.BBO: hftbacktest.load_bbo_frame,
    }
    return loaders[kind](path)


def load_frames(path: str | Path) -> Frames:
    """Every canonical frame in ``path`` by kind (raw logs hold several kinds)."""
    return _safe_load(detect(path), Path(path))


def _safe_load(fmt: Format, path: Path) -> Frames:
    try:
        return fmt.load(path)
    except DataFileError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError, KeyError, TypeError) as exc:
        # Row-level problems become nulls (then rejections); this is a file-level one:
        # wrong columns, not a parquet file, nothing to read.
        raise DataFileError(f"{path}: not a valid {fmt.name} file: {exc}") from exc


def load_frame(path: str | Path, kind: FrameKind | None = None) -> pl.DataFrame:
    """The canonical frame of ``path``; ``kind`` picks one from multi-kind files."""
    frames = load_frames(path)
    if kind is not None:
        if kind not in frames:
            raise DataFileError(f"{path}: no {kind.value} rows")
        return frames[kind]
    if len(frames) != 1:
        raise DataFileError(f"{path}: holds {sorted(frames)}; pass kind=")
    return next(iter(frames.values()))


def default_instrument(path: Path, fmt: str) -> Instrument | None:
    if fmt == "hftbacktest_csv":
        market, symbol, _ = hftbacktest.parse_name(path)
        return known_instrument(market, symbol)
    if fmt == "hftbacktest_raw":
        market, symbol, _ = hftbacktest_raw.parse_name(path)
        return known_instrument(market, symbol)
    return None


# The formats whose ``ts_recv_ns`` is the venue's own time, not a recorder's: a Bybit public
# archive (its push time) and a bare Coinbase file (the last exchange time seen). Merged on
# the exchange's clock, their rows with both times equal have an exchange time and are never
# moved by a recorder's lag (``sapphire.data.replay.RecorderClock``).
_VENUE_RECEIVE_TIME = frozenset(
    {bybit_archive.BOOK_FORMAT, bybit_archive.TRADES_FORMAT, coinbase.FORMAT}
)


def has_recorder_clock(path: str | Path) -> bool:
    """Whether ``path``'s receive times come from a recorder's own clock."""
    return detect(path).name not in _VENUE_RECEIVE_TIME


def stream_events(path: str | Path, instrument: Instruments | None = None) -> EventStream:
    """Lazy validated typed events of any supported file.

    Large formats (hftbacktest CSV and raw logs, cryptofeed logs, Tardis CSVs) are read in
    bounded chunks.
    The small fixture formats (parquet, single CSVs, JSON) are loaded whole and fed as one chunk.
    ``instrument`` is one Instrument or a mapping symbol -> Instrument (rows of symbols it
    lacks are rejected as ``unknown_symbol``). Without it the recording's known instrument is
    used, else one is inferred from the decimals in the file.
    """
    path = Path(path)
    fmt = detect(path)
    if instrument is None:
        instrument = default_instrument(path, fmt.name)
    if fmt.name == "hftbacktest_csv":
        if instrument is None:
            sample = load_frame(path).head(50_000)
            instrument = infer_frame_instrument(sample)
        return hftbacktest.stream_hftbacktest(path, instrument)
    if fmt.name == "hftbacktest_raw":
        if instrument is None:
            frames = hftbacktest_raw.load_raw_frames(path)
            if not frames:
                raise DataFileError(f"{path}: no market-data rows to infer an instrument from")
            main = frames.get(FrameKind.DEPTH)
            if main is None:
                main = next(iter(frames.values()))
            instrument = infer_frame_instrument(main)
        return hftbacktest_raw.stream_raw(path, instrument)
    if fmt.name in cryptofeed.FORMATS.values():
        return cryptofeed.stream_cryptofeed(path, instrument)
    if fmt.name == coinbase.FORMAT:
        return coinbase.stream_coinbase(path, instrument)
    if fmt.name == bybit_archive.BOOK_FORMAT:
        return bybit_archive.stream_book(path, instrument)
    if fmt.name == bybit_archive.TRADES_FORMAT:
        return bybit_archive.stream_trades(path, instrument)
    if fmt.name.startswith("tardis_"):
        return tardis.stream_tardis(path, instrument)
    if fmt.name == "basana_depth_json":
        if instrument is None:
            instrument = infer_frame_instrument(basana.load_depth_json(path))
        return basana.stream_depth_json(path, instrument)
    frames = _safe_load(fmt, path)
    (kind, frame), *_ = frames.items()
    if instrument is None:
        instrument = infer_frame_instrument(frame)
    chosen = instrument

    def chunks(stats: RejectStats) -> Iterator[Chunk]:
        yield [(kind, frame)]

    return EventStream(path, fmt.name, (kind,), chosen, chunks)


open_stream = stream_events
"""Alias used by ``actors.wiring``."""
