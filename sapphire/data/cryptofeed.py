"""cryptofeed recordings: websocket logs (``<recv_s>: <json>``) and REST depth logs.

Websocket log line 1 is the stream URL (ignored); REST lines are ``<URL> -> <recv_s>: <json>``.
Files mix several symbols, so instruments are inferred per symbol from the decimals seen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec
import polars as pl

from sapphire.data.binance_json import RowBuffer
from sapphire.data.hftbacktest_raw import LineParser, chunked
from sapphire.data.instruments import infer_frame_instrument
from sapphire.data.schemas import FrameKind
from sapphire.data.stream import Chunk, EventStream, Instruments
from sapphire.data.validation import RejectStats, RowReject
from sapphire.model import Instrument

_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")
_SYMBOL = re.compile(rb"symbol=([A-Za-z0-9]+)")
_DECODER = msgspec.json.Decoder()


def _seconds_to_ns(text: bytes) -> int:
    whole, _, frac = text.strip().partition(b".")
    return int(whole) * 1_000_000_000 + int((frac + b"000000000")[:9] or b"0")


def _session(path: Path) -> str:
    match = _DATE.search(path.name)
    return match[1] if match else ""


def line_parser(session: str) -> LineParser:
    def parse(line: bytes, number: int, buffer: RowBuffer) -> None:
        symbol = ""
        if b" -> " in line:  # REST log: the symbol is only in the URL
            url, _, line = line.partition(b" -> ")
            found = _SYMBOL.search(url)
            symbol = found[1].decode() if found else ""
        elif number == 1 and line.startswith(b"wss://"):
            buffer.stats.ignored += 1
            return
        stamp, sep, body = line.partition(b": ")
        try:
            if not sep:
                raise ValueError("no ': ' separator")
            recv = _seconds_to_ns(stamp)
            if not 0 <= recv < 2**63:
                raise ValueError(f"timestamp out of range: {stamp!r}")
            msg = _DECODER.decode(body)
        except (ValueError, msgspec.DecodeError) as exc:
            if line.strip():
                buffer.stats.reject(RowReject.MALFORMED, number, repr(exc))
            return
        buffer.message(msg, recv, session, symbol, number)

    return parse


def load_cryptofeed_frames(path: str | Path) -> dict[FrameKind, pl.DataFrame]:
    """Canonical frames per kind of a cryptofeed websocket or REST depth log."""
    path = Path(path)
    parse = line_parser(_session(path))
    parts: dict[FrameKind, list[pl.DataFrame]] = {}
    for chunk in chunked(path, RejectStats(source=str(path)), parse, chunk_rows=500_000):
        for kind, frame in chunk:
            parts.setdefault(kind, []).append(frame.drop("line"))
    return {kind: pl.concat(frames) for kind, frames in parts.items()}


def infer_instruments(frames: Mapping[FrameKind, pl.DataFrame]) -> dict[str, Instrument]:
    """One instrument per symbol whose grid holds every price and quantity in ``frames``."""
    ticks: dict[str, set[str]] = {}
    lots: dict[str, set[str]] = {}
    for frame in frames.values():
        for symbol in frame["symbol"].unique().to_list():
            one = infer_frame_instrument(frame.filter(pl.col("symbol") == symbol), symbol)
            ticks.setdefault(symbol, set()).add(one.tick_size)
            lots.setdefault(symbol, set()).add(one.lot_size)
    return {
        s: Instrument(
            symbol=s,
            venue="UNKNOWN",
            tick_size=min(ticks[s], key=float),
            lot_size=min(lots[s], key=float),
        )
        for s in ticks
    }


def stream_cryptofeed(path: str | Path, instruments: Instruments | None = None) -> EventStream:
    """Lazy validated events; without instruments they are inferred in a first pass."""
    path = Path(path)
    parse = line_parser(_session(path))
    if instruments is None:
        instruments = infer_instruments(load_cryptofeed_frames(path))
    kinds = (FrameKind.TRADES, FrameKind.BBO, FrameKind.DEPTH, FrameKind.BARS)

    def chunks(stats: RejectStats) -> Iterator[Chunk]:
        return chunked(path, stats, parse)

    return EventStream(path, "cryptofeed_log", kinds, instruments, chunks)
