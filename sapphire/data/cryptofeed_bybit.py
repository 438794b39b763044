"""Bybit legacy (pre-v5) websocket messages of cryptofeed logs -> canonical rows.

Topics (``wss://stream.bybit.com/realtime`` inverse, ``.../realtime_public`` linear):

* ``orderBookL2_25.<SYM>`` ``type: snapshot``: ``data`` is the level list (inverse) or
  ``{"order_book": [...]}`` (linear); each level ``{price, symbol, id, side, size}``.
* ``type: delta``: ``data: {delete: [...], update: [...], insert: [...]}``. Levels are keyed by
  ``id``: ``delete`` and ``update`` must name a known id, ``insert`` a new one.
* ``trade.<SYM>``: ``data: [{symbol, price, size, side (taker), trade_time_ms, trade_id}]``.

Units are the venue's, unconverted: **inverse** (BTCUSD, EOSUSD) sizes are integer numbers of
1-USD contracts, **linear** (*USDT) sizes are in the base coin. Turning contracts into base
quantity (size / price) is the PnL layer's job, not the loader's.

Float noise: linear sizes are float32 sums (12.849999 for 12.85, 1304.7001 for 1304.7; 3,486
of the 2021-04-17 log's rows). Given the instruments' size steps, a size within two float32
ulps of a grid point is put on it and counted in ``RejectStats.snapped``: float32 cannot tell
the two apart, while a size truly off the grid (half a step away) is still rejected downstream.

Sequencing: Bybit's ``cross_seq`` grows per symbol but is not contiguous (it is the matching
engine's counter), so the id-keyed book itself is the integrity check. A delta that names an
unknown id, inserts an existing one, moves a level to another price or side, or arrives before
any snapshot cannot be applied: its rows are rejected as ``sequence_gap`` and the symbol waits
for the next snapshot (a log cannot ask for one). Accepted messages carry
``final_update_id = cross_seq`` and ``prev_final_update_id`` = the previous accepted message's
``cross_seq`` (0 with ``first_update_id = 0`` for the first delta after a snapshot, which
straddles it by construction), so :class:`sapphire.book.l2.L2Book` and the stream's sequence
check chain them like Binance futures diffs. Where such a break (or a message with a bad
field) drops a synced book, one break marker row is emitted in its place
(:data:`sapphire.data.schemas.BREAK_PREV`, a delete at a level the book held): the venue's
book counts a gap there and offers no liquidity until the next snapshot, instead of staying
synced on the levels of before the break.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from sapphire.data.binance_json import RowBuffer, _i64, _num, _text
from sapphire.data.cryptofeed_rows import FIELD_ERRORS, Chain, Row, add_break, add_rows
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import RowReject

_SIDES: Final = {"Buy": 1, "Sell": -1}
_US: Final = 1_000  # timestamp_e6 is µs
_MS: Final = 1_000_000

Level = tuple[str, int, float, float]  # id, side, price, size
_F32_TOLERANCE: Final = 2 * 2.0**-23  # two float32 ulps, relative (an ulp is <= |x| 2^-23)


def snap_size(size: float, step: float) -> float | None:
    """``size`` on the ``step`` grid when it is off it by float32 noise only; None when it is
    on the grid already or off it by more (those stay as they are)."""
    if not (math.isfinite(size) and math.isfinite(step)) or step <= 0:
        return None  # left as it is: the level's own checks reject it (non-finite)
    units = round(size / step)
    residual = abs(size - units * step)
    if residual <= 1e-9 * step or residual > _F32_TOLERANCE * abs(size):
        return None
    return float(units * Decimal(repr(step)))


def _level(raw: Any, with_size: bool = True) -> Level:
    if not isinstance(raw, dict):
        raise TypeError(f"level is not an object: {raw!r}")
    side = _SIDES[raw["side"]]
    size = _num(raw["size"]) if with_size else 0.0
    return str(raw["id"]), side, _num(raw["price"]), size


def trade_id(raw: Any) -> int:
    """Bybit trade ids are UUIDs: their top 63 bits keep duplicate detection in an Int64."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _i64(raw)
    return uuid.UUID(_text(raw)).int >> 65


class BybitHandler:
    """Stateful: one instance per pass over one file (it holds the id-keyed books)."""

    def __init__(self, size_steps: Mapping[str, float] | None = None) -> None:
        """``size_steps``: each symbol's size grid (``Instrument.lot_float``), for snapping
        float noise; without it sizes pass as the venue sent them."""
        self.size_steps = dict(size_steps or {})
        self.books: dict[str, dict[str, tuple[int, float]]] = {}  # symbol -> id -> side, price
        self._last_seq: dict[str, int] = {}  # cross_seq of the last applied message
        self._chain = Chain()  # on cross_seq

    def __call__(self, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        if not isinstance(msg, dict):
            buffer.stats.reject(RowReject.MALFORMED, line, "message is not an object")
            return
        topic = msg.get("topic")
        if not isinstance(topic, str):
            buffer.stats.ignored += 1  # subscription acks, pongs
            return
        try:
            if topic.startswith("orderBook"):
                try:
                    self._book(msg, topic, recv, session, line, buffer)
                except FIELD_ERRORS:
                    symbol = topic.rpartition(".")[2]  # lost message: resync
                    self._drop(symbol, (recv, recv), session, line, buffer)
                    raise
            elif topic.startswith("trade."):
                self._trades(msg, recv, session, line, buffer)
            else:
                buffer.stats.ignored += 1
        except FIELD_ERRORS as exc:
            buffer.stats.reject(RowReject.MALFORMED, line, f"bad field: {exc!r}")

    def _trades(self, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        data = msg["data"]
        if not isinstance(data, list):
            raise TypeError("trade data is not a list")

        def row(raw: Any) -> Row:
            symbol = _text(raw["symbol"])
            return (
                _i64(raw["trade_time_ms"], _MS),
                recv,
                symbol,
                session,
                _num(raw["price"]),
                self._size(symbol, _num(raw["size"]), buffer),
                _SIDES[raw["side"]],
                trade_id(raw["trade_id"]),
                line,
            )

        add_rows(buffer, FrameKind.TRADES, line, data, row, "trade")

    def _book(
        self, msg: Any, topic: str, recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        symbol = topic.rpartition(".")[2]
        data = msg["data"]
        kind = msg["type"]
        if kind == "snapshot":
            raw_levels = data["order_book"] if isinstance(data, dict) else data
            if not isinstance(raw_levels, list):
                raise TypeError("snapshot levels are not a list")
            levels = [self._snapped(symbol, lv, buffer) for lv in map(_level, raw_levels)]
            seq, ts = _i64(msg["cross_seq"]), _i64(msg["timestamp_e6"], _US)
            self.books[symbol] = {lid: (side, px) for lid, side, px, _ in levels}
            self._last_seq[symbol] = seq
            self._chain.start(symbol, seq)
            for _, side, px, size in levels:
                buffer.add(
                    FrameKind.DEPTH,
                    (ts, recv, symbol, session, True, 0, seq, 0, side, px, size, line),
                )
            return
        if kind != "delta":
            buffer.stats.ignored += 1
            return
        if not isinstance(data, dict):
            raise TypeError("delta data is not an object")
        deletes = [_level(r, with_size=False) for r in data.get("delete") or ()]
        updates = [self._snapped(symbol, _level(r), buffer) for r in data.get("update") or ()]
        inserts = [self._snapped(symbol, _level(r), buffer) for r in data.get("insert") or ()]
        seq, ts = _i64(msg["cross_seq"]), _i64(msg["timestamp_e6"], _US)
        rows = len(deletes) + len(updates) + len(inserts)
        problem, broken = self._check(symbol, seq, deletes, updates, inserts)
        if broken:  # resync: everything until the next snapshot is a gap
            self._drop(symbol, (ts, recv), session, line, buffer)
        if problem:
            if rows:
                buffer.stats.reject(RowReject.SEQUENCE_GAP, line, f"{symbol}: {problem}", rows)
            return
        book = self.books[symbol]
        self._last_seq[symbol] = seq
        if not rows:
            return  # nothing to emit: the next delta chains on the last message with rows
        ids = self._chain.ids(symbol, seq)
        # Deletes first: a level may move through the spread within one message and must not
        # be seen crossed against a level this message removes.
        for lid, side, _, _ in deletes:
            _, px = book.pop(lid)
            buffer.add(
                FrameKind.DEPTH, (ts, recv, symbol, session, False, *ids, side, px, 0.0, line)
            )
        for lid, side, px, size in (*updates, *inserts):
            book[lid] = (side, px)
            buffer.add(
                FrameKind.DEPTH, (ts, recv, symbol, session, False, *ids, side, px, size, line)
            )

    def _size(self, symbol: str, size: float, buffer: RowBuffer) -> float:
        step = self.size_steps.get(symbol)
        snapped = None if step is None else snap_size(size, step)
        if snapped is None:
            return size
        buffer.stats.snapped += 1
        return snapped

    def _snapped(self, symbol: str, level: Level, buffer: RowBuffer) -> Level:
        lid, side, px, size = level
        return lid, side, px, self._size(symbol, size, buffer)

    def _drop(
        self, symbol: str, times: tuple[int, int], session: str, line: int, buffer: RowBuffer
    ) -> None:
        """Forget the symbol's book until its next snapshot; tell the venue (a marker row)."""
        book = self.books.pop(symbol, None)
        level = next(iter(book.values()), None) if book else None
        add_break(buffer, self._chain, symbol, level, times, session, line)

    def _check(
        self,
        symbol: str,
        seq: int,
        deletes: list[Level],
        updates: list[Level],
        inserts: list[Level],
    ) -> tuple[str, bool]:
        """Why a delta cannot be applied ("" when it can), and whether that is an integrity
        break (the book must be dropped) rather than a delta to skip."""
        book = self.books.get(symbol)
        if book is None:
            return "delta without a snapshot (waiting for one)", False
        if seq <= self._last_seq[symbol]:
            return f"cross_seq {seq} <= {self._last_seq[symbol]} (stale or replayed)", False
        problem = ""
        for lid, side, px, _ in (*deletes, *updates):
            known = book.get(lid)
            if known is None:
                problem = f"unknown id {lid}"
            elif known[0] != side or (px != known[1] and px > 0):
                problem = f"id {lid} moved from {known} to {(side, px)}"
        if not problem:
            gone = {lid for lid, *_ in deletes}
            clash = [lid for lid, *_ in inserts if lid in book and lid not in gone]
            problem = f"insert of existing id {clash[0]}" if clash else ""
        return problem, bool(problem)
