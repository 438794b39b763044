"""BitMEX realtime websocket messages of cryptofeed logs -> canonical rows.

Tables (``wss://www.bitmex.com/realtime``), each message ``{"table", "action", "data": [...]}``:

* ``orderBookL2`` (also ``orderBookL2_25``): rows ``{symbol, id, side, size, price}`` keyed by
  ``(symbol, id, side)``. ``partial`` is the full book of the symbol named in ``filter``;
  ``insert`` adds new keys with size and price; ``update`` rows carry **no price** (it is
  looked up by key) and set the absolute size; ``delete`` rows carry neither size nor price.
* ``quote``: ``{timestamp ISO, symbol, bidSize, bidPrice, askPrice, askSize}`` -> BBO rows. It
  is throttled, so it need not equal the book at the same moment.
* ``trade``: ``{timestamp, symbol, side (taker), size, price, trdMatchID, ...}``. The
  ``partial`` lists the last trades before the subscription; they are real trades and kept.

Units are the venue's, unconverted: ``size`` is a number of **contracts** on every BitMEX
product. XBTUSD is inverse (1 contract = 1 USD), the *USDT and BCHUSD contracts are quanto and
XRPU21/TRXU21 linear (value = size x price x multiplier, multiplier from the instrument file).
Turning contracts into coin or settlement value is the PnL layer's job, not the loader's.
Book rows have no exchange time: their ``ts_event_ns`` is the receive time.

Integrity: ``orderBookL2`` has no sequence number, so the keyed book is the check, as in
:mod:`sapphire.data.cryptofeed_bybit`: an ``update``/``delete`` of an unknown key, an
``insert`` of a held one, or any message before the symbol's ``partial`` cannot be applied.
Its rows are rejected as ``sequence_gap`` and the symbol waits for the next ``partial``.
Accepted messages chain by line number (one message per symbol and line). Where such a break
(or a book row with a bad field) drops a synced book, one break marker row is emitted in its
place (:data:`sapphire.data.schemas.BREAK_PREV`, a delete at a level the book held): the
venue's book counts a gap there and offers no liquidity until the next ``partial``, instead
of staying synced on the levels of before the break.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sapphire.data.binance_json import RowBuffer, _i64, _num, _text
from sapphire.data.cryptofeed_bybit import trade_id
from sapphire.data.cryptofeed_rows import FIELD_ERRORS, Chain, Row, add_break, add_rows
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import RowReject

_SIDES: Final = {"Buy": 1, "Sell": -1}
_EPOCH: Final = datetime.fromisoformat("1970-01-01T00:00:00+00:00")

Key = tuple[int, int]  # id, side


def iso_ns(value: Any) -> int:
    """``"2021-07-22T22:36:10.014Z"`` -> ns since the epoch (exact to the µs)."""
    dt = datetime.fromisoformat(_text(value))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    delta = dt - _EPOCH
    return _i64((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds, 1_000)


class BitmexHandler:
    """Stateful: one instance per pass over one file (it holds the keyed books)."""

    def __init__(self) -> None:
        self.books: dict[str, dict[Key, float]] = {}  # symbol -> (id, side) -> price
        self._chain = Chain()

    def __call__(self, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        if not isinstance(msg, dict):
            buffer.stats.reject(RowReject.MALFORMED, line, "message is not an object")
            return
        table = msg.get("table")
        if not isinstance(table, str):
            buffer.stats.ignored += 1  # welcome info, subscription acks, errors
            return
        try:
            data = msg["data"]
            if not isinstance(data, list):
                raise TypeError("data is not a list")
            if table.startswith("orderBookL2"):
                self._book(msg, data, recv, session, line, buffer)
            elif table == "trade":
                self._trades(data, recv, session, line, buffer)
            elif table == "quote":
                self._quotes(data, recv, session, line, buffer)
            else:
                buffer.stats.ignored += 1
        except FIELD_ERRORS as exc:
            buffer.stats.reject(RowReject.MALFORMED, line, f"bad field: {exc!r}")

    def _trades(
        self, data: list[Any], recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        def row(raw: Any) -> Row:
            return (
                iso_ns(raw["timestamp"]),
                recv,
                _text(raw["symbol"]),
                session,
                _num(raw["price"]),
                _num(raw["size"]),
                _SIDES[raw["side"]],
                trade_id(raw["trdMatchID"]),
                line,
            )

        add_rows(buffer, FrameKind.TRADES, line, data, row, "trade")

    def _quotes(
        self, data: list[Any], recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        def row(raw: Any) -> Row:
            px = (
                _num(raw["bidPrice"]),
                _num(raw["bidSize"]),
                _num(raw["askPrice"]),
                _num(raw["askSize"]),
            )
            return (iso_ns(raw["timestamp"]), recv, _text(raw["symbol"]), session, 0, *px, line)

        # an empty side is sent as null: no best bid/offer to report, a bad quote
        add_rows(buffer, FrameKind.BBO, line, data, row, "quote")

    def _book(
        self,
        msg: dict[str, Any],
        data: list[Any],
        recv: int,
        session: str,
        line: int,
        buffer: RowBuffer,
    ) -> None:
        action = msg.get("action")
        groups: dict[str, list[dict[str, Any]]] = {}
        for raw in data:
            if not isinstance(raw, dict):
                raise TypeError(f"book row is not an object: {raw!r}")
            groups.setdefault(_text(raw["symbol"]), []).append(raw)
        if action == "partial":
            flt = msg.get("filter")
            symbol = flt.get("symbol") if isinstance(flt, dict) else None
            if isinstance(symbol, str) and symbol not in groups:
                groups[symbol] = []  # an empty book is still a (re)sync
        elif action not in ("insert", "update", "delete"):
            raise ValueError(f"unknown action {action!r}")
        for symbol, rows in groups.items():
            try:
                self._symbol(symbol, str(action), rows, recv, session, line, buffer)
            except FIELD_ERRORS as exc:
                self._drop(symbol, recv, session, line, buffer)  # a lost message: resync
                detail = f"{symbol}: bad book row: {exc!r}"
                buffer.stats.reject(RowReject.MALFORMED, line, detail, max(len(rows), 1))

    def _drop(self, symbol: str, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        """Forget the symbol's book until its next partial; tell the venue (a marker row)."""
        book = self.books.pop(symbol, None)
        level = next(((side, px) for (_, side), px in book.items()), None) if book else None
        add_break(buffer, self._chain, symbol, level, (recv, recv), session, line)

    def _symbol(
        self,
        symbol: str,
        action: str,
        rows: list[dict[str, Any]],
        recv: int,
        session: str,
        line: int,
        buffer: RowBuffer,
    ) -> None:
        keys = [(_i64(r["id"]), _SIDES[r["side"]]) for r in rows]
        if action == "partial":
            levels = [
                (k, _num(r["price"]), _num(r["size"])) for k, r in zip(keys, rows, strict=True)
            ]
            self.books[symbol] = {k: px for k, px, _ in levels}
            self._chain.start(symbol, line)
            for (_, side), px, size in levels:
                buffer.add(
                    FrameKind.DEPTH,
                    (recv, recv, symbol, session, True, 0, line, 0, side, px, size, line),
                )
            return
        book = self.books.get(symbol)
        problem = ""
        if book is None:
            problem = "no partial yet (waiting for one)"
        elif action == "insert":
            held = [k for k in keys if k in book]
            problem = f"insert of held id {held[0][0]}" if held else ""
        else:
            unknown = [k for k in keys if k not in book]
            problem = f"{action} of unknown id {unknown[0][0]}" if unknown else ""
        if problem:
            # resync: everything until the next partial is a gap
            self._drop(symbol, recv, session, line, buffer)
            buffer.stats.reject(RowReject.SEQUENCE_GAP, line, f"{symbol}: {problem}", len(rows))
            return
        assert book is not None
        if action == "insert":
            levels = [
                (k, _num(r["price"]), _num(r["size"])) for k, r in zip(keys, rows, strict=True)
            ]
        elif action == "update":
            levels = [(k, book[k], _num(r["size"])) for k, r in zip(keys, rows, strict=True)]
        else:
            levels = [(k, book[k], 0.0) for k in keys]
        ids = self._chain.ids(symbol, line)
        for key, px, size in levels:
            if action == "delete":
                del book[key]
            else:
                book[key] = px
            buffer.add(
                FrameKind.DEPTH,
                (recv, recv, symbol, session, False, *ids, key[1], px, size, line),
            )
