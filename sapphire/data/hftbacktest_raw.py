"""Raw hftbacktest recordings: ``<local_ts> <json>`` lines of Binance combined streams.

The local timestamp is ns in the 2024 files and µs in the 2023 ``*.dat.gz`` files; the unit is
detected per line by magnitude. One line without ``"stream"`` is the REST depth snapshot.
Also the shared line reader used by :mod:`sapphire.data.cryptofeed`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import msgspec
import polars as pl

from sapphire.data.binance_json import RowBuffer
from sapphire.data.schemas import FrameKind
from sapphire.data.stream import Chunk, EventStream, Instruments, open_binary, require_rows
from sapphire.data.validation import RejectStats, RowReject
from sapphire.model import Instrument

CHUNK_ROWS: Final = 50_000
# COIN-M symbols hold an underscore (btcusd_perp, btcusd_240927); ``cm_``/``um_`` are the
# short market names of Binance's own archive layout.
_NAME = re.compile(
    r"(?P<market>spot|usdm|coinm|um|cm)_(?P<symbol>[a-z0-9]+(?:_[a-z0-9]+)?)_(?P<date>\d{8})"
)
# A bare ``btcusd_perp_20240808.gz``: only an underscore symbol says "COIN-M" without a market.
_BARE_NAME = re.compile(r"^(?P<symbol>[a-z0-9]+_[a-z0-9]+)_(?P<date>\d{8})(?:\.dat)?(?:\.gz)?$")
_STREAM = re.compile(rb'"stream"\s*:\s*"(?P<symbol>[a-z0-9_]+)@')
_SNIFF_LINES: Final = 64
_NS_THRESHOLD: Final = 10**17  # below: µs (2023 files), above: ns
_MARKETS: Final = {
    "spot": "binance-spot",
    "usdm": "binance-usdm",
    "um": "binance-usdm",
    "coinm": "binance-coinm",
    "cm": "binance-coinm",
}

LineParser = Callable[[bytes, int, RowBuffer], None]


def parse_name(path: str | Path) -> tuple[str, str, str]:
    """``(market, SYMBOL, session)`` from ``usdm_btcusdt_20240808.gz``, ``cm_btcusd_perp_...``
    or a bare COIN-M ``btcusd_perp_20240808.gz``."""
    name = Path(path).name
    match = _NAME.search(name)
    if match is not None:
        market = _MARKETS[match["market"]]
    else:
        match = _BARE_NAME.match(name)
        if match is None:
            return "", "", ""
        market = "binance-coinm"
    day = match["date"]
    return market, match["symbol"].upper(), f"{day[:4]}-{day[4:6]}-{day[6:]}"


def content_symbol(path: Path) -> str:
    """The symbol of the first combined-stream line (``btcusd_perp@depth@0ms`` -> BTCUSD_PERP),
    "" when the first lines name none: the REST snapshot line carries no symbol."""
    stats = RejectStats()
    for number, line in iter_lines(path, stats):
        match = _STREAM.search(line)
        if match is not None:
            return match["symbol"].decode().upper()
        if number >= _SNIFF_LINES:
            break
    return ""


def _symbol(path: Path, named: str) -> str:
    """The content's symbol wins: a name can be shortened or renamed, the stream cannot."""
    return content_symbol(path) or named


def iter_lines(path: Path, stats: RejectStats) -> Iterator[tuple[int, bytes]]:
    """1-based numbered lines; a corrupt gzip tail ends the stream with one malformed row."""
    handle = open_binary(path)
    number = 0
    try:
        with handle:
            for number, line in enumerate(handle, start=1):
                yield number, line
    except (OSError, EOFError, zlib.error) as exc:
        stats.reject(RowReject.TRUNCATED, number + 1, f"unreadable data: {exc}")


def chunked(
    path: Path, stats: RejectStats, parse: LineParser, chunk_rows: int = CHUNK_ROWS
) -> Iterator[Chunk]:
    """Parse lines into canonical rows and cut chunks on line (= message) boundaries."""
    buffer = RowBuffer(stats)
    for number, line in iter_lines(path, stats):
        parse(line, number, buffer)
        if buffer.count >= chunk_rows:
            yield buffer.take()
    if buffer.count:
        yield buffer.take()


_DECODER = msgspec.json.Decoder()


def raw_line_parser(symbol: str, session: str) -> LineParser:
    def parse(line: bytes, number: int, buffer: RowBuffer) -> None:
        head, _, body = line.partition(b" ")
        try:
            stamp = int(head)
            msg = _DECODER.decode(body)
        except (ValueError, msgspec.DecodeError):
            if line.strip():
                buffer.stats.reject(RowReject.MALFORMED, number, line[:80].decode(errors="replace"))
            return
        recv = stamp if stamp >= _NS_THRESHOLD else stamp * 1000
        if not 0 <= recv < 2**63:
            buffer.stats.reject(RowReject.MALFORMED, number, f"timestamp out of range: {stamp}")
            return
        buffer.message(msg, recv, session, symbol, number)

    return parse


def stream_raw(path: str | Path, instrument: Instruments) -> EventStream:
    """Lazy validated events (Trade, Quote, BookDelta, BookSnapshot) of a raw recording."""
    path = Path(path)
    require_rows(path, header=False)
    _, symbol, session = parse_name(path)
    symbol = _symbol(path, symbol)
    if not symbol:  # the REST snapshot line names no symbol
        symbols = [instrument.symbol] if isinstance(instrument, Instrument) else [*instrument]
        symbol = symbols[0] if len(symbols) == 1 else ""
    parse = raw_line_parser(symbol, session)
    kinds = (FrameKind.TRADES, FrameKind.BBO, FrameKind.DEPTH)
    return EventStream(
        path, "hftbacktest_raw", kinds, instrument, lambda stats: chunked(path, stats, parse)
    )


def load_raw_frames(path: str | Path) -> dict[FrameKind, pl.DataFrame]:
    """All canonical frames of a raw recording (no validation; bad lines are skipped)."""
    path = Path(path)
    require_rows(path, header=False)
    _, symbol, session = parse_name(path)
    parse = raw_line_parser(_symbol(path, symbol), session)
    parts: dict[FrameKind, list[pl.DataFrame]] = {}
    for chunk in chunked(path, RejectStats(source=str(path)), parse, chunk_rows=500_000):
        for kind, frame in chunk:
            parts.setdefault(kind, []).append(frame.drop("line"))
    return {kind: pl.concat(frames) for kind, frames in parts.items()}
