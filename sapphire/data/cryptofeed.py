"""cryptofeed recordings: websocket logs (``<recv_s>: <json>``) and REST depth logs.

Websocket log line 1 is the stream URL; lines starting with the URL are connection and request
lines (``<url> <-> <ts>``, ``<url> <- <ts>: <json>``) and are ignored. REST lines are
``<URL> -> <recv_s>: <json>``. Files mix several symbols, so instruments are inferred per
symbol from the decimals seen.

The venue is detected from the content (:func:`sniff_venue`): the websocket host of line 1,
else the shapes of the first messages, and only then the file name. Binance messages are
parsed by :mod:`sapphire.data.binance_json`, Bybit by :mod:`sapphire.data.cryptofeed_bybit`
OKX by :mod:`sapphire.data.cryptofeed_okx`, Kraken spot by
:mod:`sapphire.data.cryptofeed_kraken`, Kraken Futures by
:mod:`sapphire.data.cryptofeed_kraken_futures`, BitMEX by :mod:`sapphire.data.cryptofeed_bitmex`
Deribit by :mod:`sapphire.data.cryptofeed_deribit` and Coinbase Exchange by
:mod:`sapphire.data.coinbase`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, Final

import msgspec
import polars as pl

from sapphire.data import coinbase
from sapphire.data.binance_json import RowBuffer
from sapphire.data.cryptofeed_bitmex import BitmexHandler
from sapphire.data.cryptofeed_bybit import BybitHandler
from sapphire.data.cryptofeed_deribit import DeribitHandler
from sapphire.data.cryptofeed_kraken import KrakenHandler
from sapphire.data.cryptofeed_kraken_futures import FEEDS as KRAKEN_FUTURES_FEEDS
from sapphire.data.cryptofeed_kraken_futures import KrakenFuturesHandler
from sapphire.data.cryptofeed_okx import OkxHandler
from sapphire.data.hftbacktest_raw import LineParser, chunked, iter_lines
from sapphire.data.instruments import infer_frame_instrument
from sapphire.data.schemas import FrameKind
from sapphire.data.stream import Chunk, EventStream, Instruments
from sapphire.data.validation import DataFileError, RejectStats, RowReject
from sapphire.model import Instrument

_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")
_SYMBOL = re.compile(rb"symbol=([A-Za-z0-9_]+)")  # COIN-M: BTCUSD_PERP
_DECODER = msgspec.json.Decoder()
_CONTROL: Final = (b"wss://", b"ws://")  # connection-opened and request-sent lines
_BOM: Final = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark some tools write before line 1
_HEADER: Final = b"configuration: "  # cryptofeed's settings, written before the first line

FORMATS: Final = {
    "binance": "cryptofeed_log",
    "bybit": "cryptofeed_bybit",
    "okx": "cryptofeed_okx",
    "kraken": "cryptofeed_kraken",
    "kraken_futures": "cryptofeed_kraken_futures",
    "bitmex": "cryptofeed_bitmex",
    "deribit": "cryptofeed_deribit",
    "coinbase": "cryptofeed_coinbase",
}
"""Registry format name per venue (Binance keeps the original name)."""
_VENUE_NAMES: Final = {
    "binance": "BINANCE",
    "bybit": "BYBIT",
    "okx": "OKX",
    "kraken": "KRAKEN",
    "kraken_futures": "KRAKEN_FUTURES",
    "bitmex": "BITMEX",
    "deribit": "DERIBIT",
    "coinbase": "COINBASE",
}
_HOSTS: Final = (
    ("binance.", "binance"),
    ("bybit.", "bybit"),
    ("okx.", "okx"),
    ("okex.", "okx"),
    ("ws.kraken.", "kraken"),  # spot v1
    ("futures.kraken.", "kraken_futures"),  # another protocol than spot's
    ("bitmex.", "bitmex"),
    ("deribit.", "deribit"),
    ("coinbase.", "coinbase"),  # ws-feed.exchange.coinbase.com, ws-feed.pro.coinbase.com
    ("gdax.", "coinbase"),  # the feed's name before Coinbase Pro
)
_SNIFF_LINES: Final = 64
_KRAKEN: Final = ("book", "trade", "ticker", "spread", "ohlc")

# A venue message handler: (decoded message, recv ns, session, line number, buffer).
Handler = Callable[[Any, int, str, int, RowBuffer], None]


def _shape_venue(msg: Any) -> str:
    """The venue a decoded message's shape belongs to, "" when it says nothing."""
    if isinstance(msg, list):  # Kraken v1: [channelID, payload..., channelName, pair]
        name = msg[-2] if len(msg) >= 4 else None
        return "kraken" if isinstance(name, str) and name.startswith(_KRAKEN) else ""
    if not isinstance(msg, dict):
        return ""
    topic = msg.get("topic")
    if isinstance(topic, str) and topic.startswith(("orderBook", "trade.")):
        return "bybit"
    if isinstance(msg.get("table"), str) and "action" in msg:
        return "bitmex"
    if msg.get("jsonrpc") == "2.0" and msg.get("method") == "subscription":
        return "deribit"
    if msg.get("feed") in KRAKEN_FUTURES_FEEDS and "product_id" in msg:
        return "kraken_futures"
    arg = msg.get("arg")
    if isinstance(arg, dict) and "channel" in arg and "instId" in arg:
        return "okx"
    if coinbase.is_message(msg):
        return "coinbase"
    data = msg.get("data", msg)
    if isinstance(data, dict) and ("e" in data or "lastUpdateId" in data):
        return "binance"
    return ""


def sniff_venue(path: Path) -> str:
    """A venue of :data:`FORMATS` from line 1's host, the message shapes, then the name.

    A websocket log of another venue is a DataFileError: its messages would only produce
    malformed rows.
    """
    lines = [line for _, line in islice(iter_lines(path, RejectStats()), _SNIFF_LINES)]
    url = _url_line(lines)
    if url:
        host = url.split(b"/")[2].split(b":")[0].decode(errors="replace")
        for marker, venue in _HOSTS:
            if marker in f"{host}.":
                return venue
        raise DataFileError(f"{path}: cryptofeed log of an unsupported venue ({host})")
    for line in lines:
        try:
            venue = _shape_venue(_DECODER.decode(line.partition(b": ")[2]))
        except msgspec.DecodeError:
            continue
        if venue:
            return venue
    name = path.name.lower()
    # "kraken-futures" before "kraken": the spot name is a prefix of the futures one
    names = ("bybit", "okx", "kraken-futures", "kraken", "bitmex", "deribit", "coinbase")
    return next((v.replace("-", "_") for v in names if v in name), "binance")


def _url_line(lines: list[bytes]) -> bytes:
    """Line 1 (after a settings header) when it is the stream URL, else b""."""
    head = [line.removeprefix(_BOM) for line in lines[:2]]
    if head and head[0].startswith(_HEADER):
        head = head[1:]
    return head[0] if head and head[0].startswith(_CONTROL) else b""


def is_ws_log(path: Path) -> bool:
    """Line 1 is a websocket URL: a cryptofeed websocket log whatever its file name."""
    return bool(_url_line([line for _, line in islice(iter_lines(path, RejectStats()), 2)]))


def _seconds_to_ns(text: bytes) -> int:
    whole, _, frac = text.strip().partition(b".")
    return int(whole) * 1_000_000_000 + int((frac + b"000000000")[:9] or b"0")


def _session(path: Path) -> str:
    """The date in the file name; for a name without one, the UTC date of the first message
    the recorder stamped (a renamed log kept its rows but lost its label, and
    ``data.sessions`` then selected none of it); "" where no line carries a stamp."""
    match = _DATE.search(path.name)
    if match:
        return match[1]
    for _, line in islice(iter_lines(path, RejectStats()), _SNIFF_LINES):
        stamp, sep, _ = line.partition(b": ")
        try:
            recv = _seconds_to_ns(stamp) if sep else 0
        except ValueError:
            continue
        if 0 < recv < 2**63:
            return datetime.fromtimestamp(recv // 10**9, UTC).date().isoformat()
    return ""


def _received(line: bytes, number: int, buffer: RowBuffer) -> tuple[int, Any] | None:
    """``<recv_s>: <json>`` -> (recv ns, decoded message); None (counted) when it is not one."""
    stamp, sep, body = line.partition(b": ")
    try:
        if not sep:
            raise ValueError("no ': ' separator")
        recv = _seconds_to_ns(stamp)
        if not 0 <= recv < 2**63:
            raise ValueError(f"timestamp out of range: {stamp!r}")
        return recv, _DECODER.decode(body)
    except (ValueError, msgspec.DecodeError) as exc:
        if line.strip():
            buffer.stats.reject(RowReject.MALFORMED, number, repr(exc))
        return None


def line_parser(session: str) -> LineParser:
    def parse(line: bytes, number: int, buffer: RowBuffer) -> None:
        symbol = ""
        if b" -> " in line:  # REST log: the symbol is only in the URL
            url, _, line = line.partition(b" -> ")
            found = _SYMBOL.search(url)
            symbol = found[1].decode() if found else ""
        elif _is_control(line):
            buffer.stats.ignored += 1
            return
        received = _received(line, number, buffer)
        if received is not None:
            buffer.message(received[1], received[0], session, symbol, number)

    return parse


def _is_control(line: bytes) -> bool:
    """Connection, request and REST lines (a URL stands where the receive time would) and
    cryptofeed's settings header.

    Not only at the very start: a byte-order mark or stray bytes before ``wss://`` must not
    turn the whole ``<url> <- <ts>`` prefix into a malformed timestamp.
    """
    return line.startswith((*_CONTROL, _HEADER)) or b"://" in line.partition(b": ")[0]


def venue_line_parser(handler: Handler, session: str) -> LineParser:
    """Split ``<recv_s>: <json>`` lines and hand the messages to a venue ``handler``."""

    def parse(line: bytes, number: int, buffer: RowBuffer) -> None:
        if _is_control(line):
            buffer.stats.ignored += 1
            return
        received = _received(line, number, buffer)
        if received is not None:
            handler(received[1], received[0], session, number, buffer)

    return parse


def _size_steps(instruments: Instruments | None) -> dict[str, float]:
    if instruments is None:
        return {}
    if isinstance(instruments, Instrument):
        return {instruments.symbol: instruments.lot_float}
    return {symbol: inst.lot_float for symbol, inst in instruments.items()}


def parser_for(venue: str, session: str, instruments: Instruments | None = None) -> LineParser:
    """A fresh parser (venue parsers keep book state, so one per pass over a file).
    ``instruments``: the grids the rows are for, where a venue's loader snaps float noise."""
    if venue == "bybit":
        return venue_line_parser(BybitHandler(_size_steps(instruments)), session)
    if venue == "okx":
        return venue_line_parser(OkxHandler(), session)
    if venue == "kraken":
        return venue_line_parser(KrakenHandler(), session)
    if venue == "kraken_futures":
        return venue_line_parser(KrakenFuturesHandler(), session)
    if venue == "bitmex":
        return venue_line_parser(BitmexHandler(), session)
    if venue == "deribit":
        return venue_line_parser(DeribitHandler(), session)
    if venue == "coinbase":
        return venue_line_parser(coinbase.CoinbaseHandler(), session)
    return line_parser(session)


def load_cryptofeed_frames(path: str | Path) -> dict[FrameKind, pl.DataFrame]:
    """Canonical frames per kind of a cryptofeed websocket or REST depth log.

    A log without a single market-data row is a DataFileError, not an empty success.
    """
    path = Path(path)
    parse = parser_for(sniff_venue(path), _session(path))
    parts: dict[FrameKind, list[pl.DataFrame]] = {}
    for chunk in chunked(path, RejectStats(source=str(path)), parse, chunk_rows=500_000):
        for kind, frame in chunk:
            parts.setdefault(kind, []).append(frame.drop("line"))
    if not parts:
        raise DataFileError(f"{path}: no market-data messages in this cryptofeed log")
    return {kind: pl.concat(frames) for kind, frames in parts.items()}


def infer_instruments(
    frames: Mapping[FrameKind, pl.DataFrame], venue: str = "UNKNOWN"
) -> dict[str, Instrument]:
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
            venue=venue,
            tick_size=min(ticks[s], key=float),
            lot_size=min(lots[s], key=float),
        )
        for s in ticks
    }


def stream_cryptofeed(path: str | Path, instruments: Instruments | None = None) -> EventStream:
    """Lazy validated events; without instruments they are inferred in a first pass."""
    path = Path(path)
    venue, session = sniff_venue(path), _session(path)
    if instruments is None:
        instruments = infer_instruments(load_cryptofeed_frames(path), _VENUE_NAMES[venue])
    kinds = (FrameKind.TRADES, FrameKind.BBO, FrameKind.DEPTH, FrameKind.BARS)

    def chunks(stats: RejectStats) -> Iterator[Chunk]:
        yield from chunked(path, stats, parser_for(venue, session, instruments))
        if venue != "binance" and stats.rows_in == 0:
            raise DataFileError(f"{path}: no market-data messages in this {venue} log")

    return EventStream(path, FORMATS[venue], kinds, instruments, chunks)
