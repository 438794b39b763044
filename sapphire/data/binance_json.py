"""Binance websocket/REST JSON messages -> canonical rows (shared by raw-log readers).

Handles ``depthUpdate`` (diffs), REST depth snapshots (``lastUpdateId``), ``bookTicker``,
``trade``/``aggTrade`` and closed ``kline`` messages. Anything else is counted as ignored.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import polars as pl

from sapphire.data.schemas import SCHEMAS, FrameKind
from sapphire.data.stream import Chunk
from sapphire.data.validation import RejectStats, RowReject

_MS: Final = 1_000_000
_INTERVALS: Final[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


_I64_MAX: Final = 2**63 - 1
_LINE_DECODER: Final = msgspec.json.Decoder()


def _i64(value: Any, scale: int = 1) -> int:
    """An Int64-safe integer field (bools and out-of-range values are malformed)."""
    if isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    result = int(value) * scale
    if not 0 <= result <= _I64_MAX:
        raise ValueError(f"integer out of range: {value!r}")
    return result


def _num(value: Any) -> float:
    if isinstance(value, bool | dict | list) or value is None:
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def price_levels(raw: Any, side: int) -> list[tuple[int, float, float]]:
    """``[[price, size, ...], ...]`` (Bybit, Coinbase book messages) as ``(side, price, size)``;
    anything else is a TypeError naming the bad level (one malformed row to the caller)."""
    if not isinstance(raw, list):
        raise TypeError("levels are not a list")
    out = []
    for level in raw:
        if not isinstance(level, list) or len(level) < 2:
            raise TypeError(f"level is not [price, size, ...]: {level!r}")
        out.append((side, _num(level[0]), _num(level[1])))
    return out


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    return value


def interval_ns(text: str) -> int:
    """ "1m" -> 60e9 ns (Binance/freqtrade interval notation); an interval beyond Int64 ns
    is a ValueError (one bad kline, not a chunk no frame can hold)."""
    value = _i64(text[:-1]) * _INTERVALS[text[-1]] * 1_000_000_000
    if value > _I64_MAX:
        raise ValueError(f"interval out of range: {text!r}")
    return value


_UNLOADABLE: Final = (pl.exceptions.PolarsError, OverflowError, TypeError, ValueError)


class RowBuffer:
    """Collects canonical rows per kind until a chunk is full."""

    def __init__(self, stats: RejectStats) -> None:
        self.stats = stats
        self.rows: dict[FrameKind, list[tuple[Any, ...]]] = {}
        self.count = 0

    def add(self, kind: FrameKind, row: tuple[Any, ...]) -> None:
        self.rows.setdefault(kind, []).append(row)
        self.count += 1

    def take(self) -> Chunk:
        parts: Chunk = []
        for kind, rows in self.rows.items():
            schema = {**SCHEMAS[kind], "line": pl.Int64()}
            try:
                parts.append((kind, pl.DataFrame(rows, schema=schema, orient="row")))
            except _UNLOADABLE:
                # Per-field checks should make this unreachable; never lose the row count,
                # and never the good rows beside a bad one: only the rows that do not load
                # on their own are rejected (found row by row, on this rare path only).
                good = [row for row in rows if self._loads(row, schema)]
                if good:
                    parts.append((kind, pl.DataFrame(good, schema=schema, orient="row")))
        self.rows = {}
        self.count = 0
        return parts

    def _loads(self, row: tuple[Any, ...], schema: dict[str, pl.DataType]) -> bool:
        """Whether one row makes a frame; a row that does not is rejected, counted."""
        try:
            pl.DataFrame([row], schema=schema, orient="row")
        except _UNLOADABLE as exc:
            self.stats.reject(RowReject.MALFORMED, row[-1], f"unloadable row: {exc!r}")
            return False
        return True

    def json_line(self, line: bytes, number: int) -> tuple[bool, Any]:
        """``(True, message)`` for a line of one JSON message; ``(False, None)`` for a blank
        line (skipped) or one that does not decode (rejected as malformed, counted here)."""
        if not line.strip():
            return False, None
        try:
            return True, _LINE_DECODER.decode(line)
        except msgspec.DecodeError as exc:
            self.stats.reject(RowReject.MALFORMED, number, repr(exc))
            return False, None

    # -- message handlers ---------------------------------------------------------------
    def message(self, msg: Any, recv: int, session: str, symbol: str, line: int) -> None:
        """One decoded JSON message; bad fields reject rows, never raise."""
        if not isinstance(msg, dict):
            self.stats.reject(RowReject.MALFORMED, line, "message is not an object")
            return
        data = msg.get("data", msg)
        if not isinstance(data, dict):
            self.stats.reject(RowReject.MALFORMED, line, "data is not an object")
            return
        try:
            event = data.get("e")
            if "lastUpdateId" in data:
                self._depth(data, recv, session, symbol, line, snapshot=True)
            elif event == "depthUpdate":
                self._depth(data, recv, session, _text(data["s"]), line, snapshot=False)
            elif event == "bookTicker" or (event is None and "b" in data and "a" in data):
                ts = _i64(data["E"], _MS) if "E" in data else recv
                px = (_num(data["b"]), _num(data["B"]), _num(data["a"]), _num(data["A"]))
                self.add(
                    FrameKind.BBO, (ts, recv, _text(data["s"]), session, _i64(data["u"]), *px, line)
                )
            elif event in ("trade", "aggTrade"):
                side = -1 if data["m"] else 1
                tid = _i64(data["t"] if event == "trade" else data["a"])
                row = (_i64(data["T"], _MS), recv, _text(data["s"]), session)
                self.add(
                    FrameKind.TRADES, (*row, _num(data["p"]), _num(data["q"]), side, tid, line)
                )
            elif event == "kline":
                k = data["k"]
                if not k["x"]:
                    self.stats.ignored += 1  # candle still forming
                    return
                ohlcv = (_num(k["o"]), _num(k["h"]), _num(k["l"]), _num(k["c"]), _num(k["v"]))
                bar = (_i64(k["t"], _MS), recv, _text(data["s"]), session, interval_ns(k["i"]))
                self.add(FrameKind.BARS, (*bar, *ohlcv, line))
            else:
                self.stats.ignored += 1
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self.stats.reject(RowReject.MALFORMED, line, f"bad field: {exc!r}")

    def _depth(
        self, data: dict[str, Any], recv: int, session: str, symbol: str, line: int, snapshot: bool
    ) -> None:
        if snapshot:
            ts = _i64(data["E"], _MS) if "E" in data else recv
            ids = (0, _i64(data["lastUpdateId"]), 0)
            sides = (("bids", 1), ("asks", -1))
        else:
            ts = _i64(data["E"], _MS)
            ids = (_i64(data["U"]), _i64(data["u"]), _i64(data.get("pu", 0)))
            sides = (("b", 1), ("a", -1))
        # A message is one book state: with one side (or one level) corrupt, the rest is no
        # book to build (half a snapshot replaced the whole book), so every level is checked
        # before any is kept and a bad one refuses the whole message, each level counted.
        rows: list[tuple[Any, ...]] = []
        problems: list[str] = []
        levels_in = 0
        for key, side in sides:
            levels = data.get(key)
            if not isinstance(levels, list):
                problems.append(f"{key} is not a list: {levels!r:.60}")
                levels_in += 1
                continue
            levels_in += len(levels)
            for level in levels:
                try:
                    price, qty = _num(level[0]), _num(level[1])
                except (TypeError, ValueError, IndexError, KeyError):
                    problems.append(f"bad level {level!r:.60}")
                    continue
                rows.append((ts, recv, symbol, session, snapshot, *ids, side, price, qty, line))
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            detail = f"depth message refused whole: {problems[0]}{more}"
            self.stats.reject(RowReject.MALFORMED, line, detail, rows=levels_in)
            return
        if rows:
            self.rows.setdefault(FrameKind.DEPTH, []).extend(rows)
            self.count += len(rows)
