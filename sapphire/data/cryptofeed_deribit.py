"""Deribit JSON-RPC v2 websocket messages of cryptofeed logs -> canonical rows.

Subscriptions (``wss://www.deribit.com/ws/api/v2``) arrive as ``{"jsonrpc": "2.0", "method":
"subscription", "params": {"channel", "data"}}``; RPC results and heartbeats are ignored.

* ``book.<instrument>.raw`` (also ``.100ms``): ``data: {"type": "snapshot"/"change",
  "timestamp": ms, "instrument_name", "change_id", "prev_change_id" (changes only), "bids":
  [[action, price, amount]], "asks": [...]}`` with ``action`` ``new``/``change``/``delete``;
  ``amount`` is the absolute size at ``price`` (0 for ``delete``).
* ``trades.<instrument>.raw``: ``data: [{trade_id, timestamp, price, amount, direction
  (taker), instrument_name}]``.
* ``ticker.<instrument>.raw``: ``best_bid_price/amount``, ``best_ask_price/amount``,
  ``timestamp`` -> BBO rows. A ticker with an empty side (price and amount 0) has no two-sided
  quote to report: it is counted as ignored (``one_sided``), not as a bad row.

Units are the venue's, unconverted: option prices are in the underlying coin (BTC, ETH) and
amounts in option **contracts** (1 contract = 1 coin); BTC-PERPETUAL and the inverse futures
quote USD and size in **USD** (multiples of the 10-USD contract). Symbols are Deribit's
``instrument_name`` as sent ("BTC-24SEP21-8000-P").

Integrity: every change must have ``prev_change_id`` equal to the instrument's last
``change_id`` and may only ``change``/``delete`` a held price (``new`` a free one). Otherwise
its rows are rejected as ``sequence_gap`` and the instrument waits for the next snapshot.
Accepted messages are chained on ``change_id`` with
:class:`~sapphire.data.cryptofeed_rows.Chain` (``final_update_id = change_id``,
``prev_final_update_id`` = the last accepted message with rows; the first after a snapshot
``(0, change_id, 0)``), so :class:`sapphire.book.l2.L2Book` chains them like Binance futures
diffs. Where such a break (or a message with a bad field) drops a synced book, one break
marker row is emitted in its place (:data:`sapphire.data.schemas.BREAK_PREV`, a delete at a
price the book held): the venue's book counts a gap there and offers no liquidity until the
next snapshot, instead of staying synced on the levels of before the break.
"""

from __future__ import annotations

from typing import Any, Final

from sapphire.data.binance_json import RowBuffer, _i64, _num, _text
from sapphire.data.cryptofeed_rows import FIELD_ERRORS, Chain, Row, add_break, add_rows, held_level
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import RowReject

_MS: Final = 1_000_000
_SIDES: Final = {"buy": 1, "sell": -1}

Level = tuple[int, str, float, float]  # side, action, price, amount


def _levels(raw: Any, side: int) -> list[Level]:
    if not isinstance(raw, list):
        raise TypeError("levels are not a list")
    out = []
    for level in raw:
        if not isinstance(level, list) or len(level) != 3:
            raise TypeError(f"level is not [action, price, amount]: {level!r}")
        out.append((side, _text(level[0]), _num(level[1]), _num(level[2])))
    return out


class DeribitHandler:
    """Stateful: one instance per pass over one file (it holds the price sets per book)."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[set[float], set[float]]] = {}  # absent: unsynced
        self.one_sided = 0
        self._change: dict[str, int] = {}  # change_id of the last applied message
        self._chain = Chain()  # on change_id

    def __call__(self, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        if not isinstance(msg, dict):
            buffer.stats.reject(RowReject.MALFORMED, line, "message is not an object")
            return
        params = msg.get("params")
        if msg.get("method") != "subscription" or not isinstance(params, dict):
            buffer.stats.ignored += 1  # RPC results, heartbeats, test requests
            return
        try:
            channel, data = _text(params["channel"]), params["data"]
            if channel.startswith("book."):
                try:
                    self._book(data, recv, session, line, buffer)
                except FIELD_ERRORS:
                    name = channel.split(".")[1] if channel.count(".") >= 2 else ""
                    # a lost message: the book is unknown now
                    self._drop(name, (recv, recv), session, line, buffer)
                    raise
            elif channel.startswith("trades."):
                self._trades(data, recv, session, line, buffer)
            elif channel.startswith("ticker."):
                self._ticker(data, recv, session, line, buffer)
            else:
                buffer.stats.ignored += 1
        except FIELD_ERRORS as exc:
            buffer.stats.reject(RowReject.MALFORMED, line, f"bad field: {exc!r}")

    def _trades(self, data: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        if not isinstance(data, list):
            raise TypeError("trade data is not a list")

        def row(raw: Any) -> Row:
            tid = _text(raw["trade_id"])
            return (
                _i64(raw["timestamp"], _MS),
                recv,
                _text(raw["instrument_name"]),
                session,
                _num(raw["price"]),
                _num(raw["amount"]),
                _SIDES[raw["direction"]],
                # "ETH-12345678" on some books: the numeric tail is the id
                _i64(tid.rpartition("-")[2]),
                line,
            )

        add_rows(buffer, FrameKind.TRADES, line, data, row, "trade")

    def _ticker(self, data: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        if not isinstance(data, dict):
            raise TypeError("ticker data is not an object")
        px = (
            _num(data["best_bid_price"]),
            _num(data["best_bid_amount"]),
            _num(data["best_ask_price"]),
            _num(data["best_ask_amount"]),
        )
        if px[1] == 0 or px[3] == 0:
            self.one_sided += 1
            buffer.stats.ignored += 1
            return
        ts = _i64(data["timestamp"], _MS)
        name = _text(data["instrument_name"])
        buffer.add(FrameKind.BBO, (ts, recv, name, session, 0, *px, line))

    def _book(self, data: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        if not isinstance(data, dict):
            raise TypeError("book data is not an object")
        name = _text(data["instrument_name"])
        kind = data["type"]
        levels = [*_levels(data["bids"], 1), *_levels(data["asks"], -1)]
        ts, change = _i64(data["timestamp"], _MS), _i64(data["change_id"])
        if kind == "snapshot":
            bids = {px for side, _, px, size in levels if side == 1 and size}
            asks = {px for side, _, px, size in levels if side == -1 and size}
            self.books[name] = (bids, asks)
            self._change[name] = change
            self._chain.start(name, change)
            for side, _, px, size in levels:
                buffer.add(
                    FrameKind.DEPTH,
                    (ts, recv, name, session, True, 0, change, 0, side, px, size, line),
                )
            return
        if kind != "change":
            raise ValueError(f"unknown book type {kind!r}")
        problem = self._check(name, _i64(data["prev_change_id"]), levels)
        if problem:
            # resync: everything until the next snapshot is a gap
            self._drop(name, (ts, recv), session, line, buffer)
            if levels:
                buffer.stats.reject(RowReject.SEQUENCE_GAP, line, f"{name}: {problem}", len(levels))
            return
        bids, asks = self.books[name]
        self._change[name] = change
        if not levels:
            return
        ids = self._chain.ids(name, change)
        for side, action, px, size in levels:
            held = bids if side == 1 else asks
            if action == "delete":
                held.discard(px)
                size = 0.0
            else:
                held.add(px)
            buffer.add(
                FrameKind.DEPTH, (ts, recv, name, session, False, *ids, side, px, size, line)
            )

    def _drop(
        self, name: str, times: tuple[int, int], session: str, line: int, buffer: RowBuffer
    ) -> None:
        """Forget the instrument's book until its next snapshot; tell the venue (a marker)."""
        book = self.books.pop(name, None)
        level = held_level(book)
        add_break(buffer, self._chain, name, level, times, session, line)

    def _check(self, name: str, prev: int, levels: list[Level]) -> str:
        """Why a change cannot be applied ("" when it can)."""
        book = self.books.get(name)
        if book is None:
            return "change without a snapshot (waiting for one)"
        if prev != self._change[name]:
            return f"prev_change_id {prev} != {self._change[name]}"
        for side, action, px, _ in levels:
            held = px in book[0 if side == 1 else 1]
            if action not in ("new", "change", "delete"):
                return f"unknown action {action!r}"
            if held != (action != "new"):
                return f"{action} of a {'held' if held else 'free'} price {px}"
        return ""
