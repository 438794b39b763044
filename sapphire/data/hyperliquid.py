"""Hyperliquid ``POST /info`` response bodies (JSON, optionally gzipped) -> canonical frames.

Recognised by the JSON shape, never the file name (:func:`sniff`):

* ``l2Book``: ``{"coin", "levels": [[bids...], [asks...]], "time": ms}``, each level
  ``{"px": str, "sz": str, "n": order count}``, best first. A full snapshot -> DEPTH rows with
  ``is_snapshot`` True (one BookSnapshot event). There is no update id: ids are 0. The same
  structure is the ``data`` of a websocket ``l2Book`` message.
* ``candleSnapshot``: a list of ``{"t": open ms, "T": close ms, "s": coin, "i": interval,
  "o", "h", "l", "c": price strings, "v": volume string, "n": trade count}`` -> BARS rows.
  ``T`` must be ``t + interval - 1 ms``; a candle where it is not is marked bad.
* ``fundingHistory``: a list of ``{"coin", "fundingRate": str, "premium": str, "time": ms}``
  -> FUNDING rows (``rate`` is per funding period: 8 h before mid-2023, 1 h after).

Units are the venue's: prices in USD, sizes and volumes in coin units (``kPEPE`` is the perp
on 1,000 PEPE, so its sizes count kPEPE). Symbols are the ``coin`` as sent. REST bodies carry
no receive time: ``ts_recv_ns`` is 0.

A list entry with a missing or unparseable field becomes a row of nulls that the stream
rejects as ``malformed`` (the row is counted, never silently dropped); a body that is not
JSON, or has none of these shapes, or has no entries, is a DataFileError.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec
import polars as pl

from sapphire.data.binance_json import _i64, _num, _text, interval_ns
from sapphire.data.schemas import SCHEMAS, FrameKind
from sapphire.data.validation import DataFileError

_MS: Final = 1_000_000
_MAX_BYTES: Final = 256 * 1024 * 1024  # REST bodies are small; anything bigger is not one
_CANDLE_KEYS: Final = frozenset({"t", "T", "s", "i", "o", "h", "l", "c", "v"})
_FUNDING_KEYS: Final = frozenset({"coin", "fundingRate", "time"})
_BAD: Final = (KeyError, TypeError, ValueError, IndexError, AttributeError)

L2BOOK, CANDLES, FUNDING = "hyperliquid_l2book", "hyperliquid_candles", "hyperliquid_funding"


def _read(path: Path) -> Any:
    raw = path.read_bytes()[:_MAX_BYTES]
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return msgspec.json.decode(raw)


def _shape(body: Any) -> str | None:
    if isinstance(body, dict):
        return L2BOOK if {"coin", "levels", "time"} <= body.keys() else None
    if not isinstance(body, list) or not body or not isinstance(body[0], dict):
        return None  # an empty list could be any of the list shapes
    keys = body[0].keys()
    if keys >= _CANDLE_KEYS:
        return CANDLES
    if keys >= _FUNDING_KEYS:
        return FUNDING
    return None


def sniff(path: Path) -> str | None:
    """The Hyperliquid format of a JSON file from its shape, None when it is not one."""
    try:
        return _shape(_read(path))
    except (OSError, EOFError, zlib.error, msgspec.DecodeError, gzip.BadGzipFile):
        return None


def _body(path: Path, expected: str) -> Any:
    try:
        body = _read(path)
    except (OSError, EOFError, zlib.error, msgspec.DecodeError, gzip.BadGzipFile) as exc:
        raise DataFileError(f"{path}: cannot read Hyperliquid JSON: {exc}") from exc
    if _shape(body) != expected:
        raise DataFileError(f"{path}: not a Hyperliquid {expected.partition('_')[2]} body")
    return body


def _frame(kind: FrameKind, rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMAS[kind], orient="row")


def _rows(
    entries: list[Any], parse: Callable[[Any], tuple[Any, ...]], width: int
) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for entry in entries:
        try:
            out.append(parse(entry))
        except _BAD:
            out.append((None,) * width)  # rejected downstream as malformed, and counted
    return out


def load_l2book(path: str | Path) -> pl.DataFrame:
    """A REST (or websocket ``data``) l2Book body -> snapshot DEPTH rows."""
    path = Path(path)
    body = _body(path, L2BOOK)
    levels = body["levels"]
    if not isinstance(levels, list) or len(levels) != 2:
        raise DataFileError(f"{path}: levels is not [bids, asks]")
    try:
        coin, ts = _text(body["coin"]), _i64(body["time"], _MS)
    except _BAD as exc:
        raise DataFileError(f"{path}: bad coin or time: {exc!r}") from exc

    def level(side: int) -> Callable[[Any], tuple[Any, ...]]:
        def parse(raw: Any) -> tuple[Any, ...]:
            px, sz = _num(_text(raw["px"])), _num(_text(raw["sz"]))
            return (ts, 0, coin, "", True, 0, 0, 0, side, px, sz)

        return parse

    width = len(SCHEMAS[FrameKind.DEPTH])
    rows = []
    for side, raw in ((1, levels[0]), (-1, levels[1])):
        if not isinstance(raw, list):
            raise DataFileError(f"{path}: a side of levels is not a list")
        rows += _rows(raw, level(side), width)
    if not rows:
        raise DataFileError(f"{path}: l2Book without levels")
    return _frame(FrameKind.DEPTH, rows)


def _candle(raw: Any) -> tuple[Any, ...]:
    start, interval = _i64(raw["t"], _MS), interval_ns(_text(raw["i"]))
    if _i64(raw["T"], _MS) != start + interval - _MS:
        raise ValueError(f"close time {raw['T']} is not open + {raw['i']} - 1 ms")
    prices = (_num(_text(raw[k])) for k in ("o", "h", "l", "c"))
    return (start, 0, _text(raw["s"]), "", interval, *prices, _num(_text(raw["v"])))


def load_candles(path: str | Path) -> pl.DataFrame:
    """A candleSnapshot body -> BARS rows (``ts_event_ns`` = the candle's open time)."""
    path = Path(path)
    body = _body(path, CANDLES)
    return _frame(FrameKind.BARS, _rows(body, _candle, len(SCHEMAS[FrameKind.BARS])))


def _funding(raw: Any) -> tuple[Any, ...]:
    return (_i64(raw["time"], _MS), 0, _text(raw["coin"]), "", _num(_text(raw["fundingRate"])))


def load_funding(path: str | Path) -> pl.DataFrame:
    """A fundingHistory body -> FUNDING rows (rate per funding period, as sent)."""
    path = Path(path)
    body = _body(path, FUNDING)
    return _frame(FrameKind.FUNDING, _rows(body, _funding, len(SCHEMAS[FrameKind.FUNDING])))


LOADERS: Final[dict[str, Callable[[Path], pl.DataFrame]]] = {
    L2BOOK: load_l2book,
    CANDLES: load_candles,
    FUNDING: load_funding,
}
"""Registry format name -> loader."""
