"""Kraken spot websocket v1 messages of cryptofeed logs -> canonical rows.

Channels (``wss://ws.kraken.com``); data messages are JSON **arrays**, events are objects
(``systemStatus``, ``subscriptionStatus``, ``heartbeat``: counted as ignored):

* ``book-<depth>``: ``[channelID, payload, "book-1000", pair]``, or
  ``[channelID, askPayload, bidPayload, "book-1000", pair]`` when both sides change. A
  snapshot payload is ``{"as": [[price, volume, time]], "bs": [...]}``; an update payload
  ``{"a": [...]}`` and/or ``{"b": [...]}``, the last one with ``"c"``, the checksum. Levels
  may carry a 4th element ``"r"`` (republished after a trade): it is an ordinary update.
  ``volume`` is the absolute size at ``price``; ``"0.00000000"`` deletes it.
* ``trade``: ``[channelID, [[price, volume, time, side, orderType, misc], ...], "trade", pair]``
  with ``side`` the taker's ``b``/``s``. Kraken v1 trades carry no id: ``trade_id`` is 0.
* ``ticker``: ``{"a": [price, wholeLotVolume, lotVolume], "b": [...], ...}`` -> BBO rows. The
  message has no exchange time: ``ts_event_ns`` is the receive time.

Units are the venue's: spot volumes are in the base currency. Symbols are Kraken's pair names
as sent ("XBT/CHF": Kraken writes BTC as XBT); the slash is kept because dropping it would
make pairs such as "ADA/XBT" and "ADAX/BT" indistinguishable in principle.

Timestamps: a book message's ``ts_event_ns`` is the latest level ``time`` it carries (the last
change Kraken reports), a trade's its own ``time``.

Integrity: v1 books have no sequence number, only ``c``: the unsigned CRC32, as a decimal
string, of the best 10 asks (ascending) then the best 10 bids (descending), each ``price``
then ``volume`` with the ``.`` removed and leading zeros stripped, concatenated. It is
verified after every update on the loader's own string book (original strings). A mismatch
rejects that message as ``checksum_mismatch`` and every later update of the pair as
``sequence_gap`` until the next snapshot. Kraken keeps at most ``depth`` levels per side and
silently forgets the ones pushed beyond it; the loader does the same and emits them as
deletes (qty 0) in the same message, so a consumer's book equals the verified one. Accepted
messages chain by line number, as in :mod:`sapphire.data.cryptofeed_okx`. Where a mismatch (or
a book message with a bad field) drops a synced book, one break marker row is emitted in its
place (:data:`sapphire.data.schemas.BREAK_PREV`, a delete at a level the book held): the
venue's book counts a gap there and offers no liquidity until the next snapshot, instead of
staying synced on the levels of before the break.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from typing import Any, Final

from sapphire.data.binance_json import RowBuffer, _num, _text
from sapphire.data.cryptofeed_rows import FIELD_ERRORS, Chain, Row, add_break, add_rows, held_level
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import RowReject

CHECKSUM_DEPTH: Final = 10
_SIDES: Final = {"b": 1, "s": -1}
_I64_MAX: Final = 2**63 - 1


def seconds_ns(text: Any) -> int:
    """Kraken's ``"1618678133.365913"`` (seconds, decimal string) -> ns, exactly."""
    value = _text(text)
    whole, _, frac = value.partition(".")
    if not whole.isdigit() or not (frac.isdigit() or frac == "") or len(frac) > 9:
        raise ValueError(f"not a seconds timestamp: {value!r}")
    ns = int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])
    if ns > _I64_MAX:
        raise ValueError(f"timestamp out of range: {value!r}")
    return ns


def _digits(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def kraken_checksum(asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> int:
    """Kraken's CRC32 of the best asks (ascending) then bids (descending), as an int."""
    parts = [_digits(px) + _digits(qty) for px, qty in (*asks, *bids)]
    return zlib.crc32("".join(parts).encode())


class _Side:
    """One side of the string book: sorted float keys plus the original strings."""

    __slots__ = ("descending", "keys", "levels")

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.keys: list[float] = []  # ascending; the best is last for bids, first for asks
        self.levels: dict[float, tuple[str, str]] = {}

    def set(self, price: float, px: str, qty: str, size: float) -> None:
        if size == 0:
            if self.levels.pop(price, None) is not None:
                del self.keys[bisect_left(self.keys, price)]
            return
        if price not in self.levels:
            insort(self.keys, price)
        self.levels[price] = (px, qty)

    def trim(self, depth: int) -> list[float]:
        """Forget the levels beyond ``depth`` (worst first); return their prices."""
        extra = len(self.keys) - depth
        if extra <= 0:
            return []
        if self.descending:
            cut, self.keys = self.keys[:extra], self.keys[extra:]
        else:
            cut, self.keys = self.keys[-extra:], self.keys[:-extra]
        for price in cut:
            del self.levels[price]
        return cut

    def best(self, n: int) -> list[tuple[str, str]]:
        keys = self.keys[::-1][:n] if self.descending else self.keys[:n]
        return [self.levels[k] for k in keys]


def _levels(raw: Any, side: int) -> list[tuple[int, str, str, float, float, int]]:
    if not isinstance(raw, list):
        raise TypeError("levels are not a list")
    out = []
    for level in raw:
        if not isinstance(level, list) or len(level) < 3:
            raise TypeError(f"level is not [price, volume, time, ...]: {level!r}")
        px, qty = _text(level[0]), _text(level[1])
        out.append((side, px, qty, _num(px), _num(qty), seconds_ns(level[2])))
    return out


class KrakenHandler:
    """Stateful: one instance per pass over one file (it holds the string books)."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[_Side, _Side]] = {}  # pair -> (bids, asks); absent: unsynced
        self.checksums_ok = 0
        self.checksum_mismatches = 0
        self.unverified = 0  # updates without a "c" field
        self.trimmed = 0  # levels forgotten beyond the subscribed depth
        self.mismatch_lines: list[int] = []
        self._chain = Chain()  # on line numbers

    def __call__(self, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        if isinstance(msg, dict):
            buffer.stats.ignored += 1  # systemStatus, subscriptionStatus, heartbeat
            return
        if not isinstance(msg, list) or len(msg) < 4:
            buffer.stats.reject(RowReject.MALFORMED, line, "not a Kraken data message")
            return
        try:
            channel, pair = _text(msg[-2]), _text(msg[-1])
            payloads = msg[1:-2]
            if channel.startswith("book"):
                try:
                    self._book(channel, pair, payloads, recv, session, line, buffer)
                except FIELD_ERRORS:
                    # a lost message: the book is unknown now
                    self._drop(pair, (recv, recv), session, line, buffer)
                    raise
            elif channel == "trade":
                self._trades(pair, payloads, recv, session, line, buffer)
            elif channel == "ticker":
                self._ticker(pair, payloads, recv, session, line, buffer)
            else:
                buffer.stats.ignored += 1  # spread, ohlc: no canonical kind here
        except FIELD_ERRORS as exc:
            buffer.stats.reject(RowReject.MALFORMED, line, f"bad field: {exc!r}")

    def _trades(
        self, pair: str, payloads: list[Any], recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        if len(payloads) != 1 or not isinstance(payloads[0], list):
            raise TypeError("trade payload is not a list")

        def row(raw: Any) -> Row:
            px, qty = _num(_text(raw[0])), _num(_text(raw[1]))
            return (seconds_ns(raw[2]), recv, pair, session, px, qty, _SIDES[raw[3]], 0, line)

        add_rows(buffer, FrameKind.TRADES, line, payloads[0], row, "trade")

    def _ticker(
        self, pair: str, payloads: list[Any], recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        if len(payloads) != 1 or not isinstance(payloads[0], dict):
            raise TypeError("ticker payload is not an object")
        bid, ask = payloads[0]["b"], payloads[0]["a"]
        # [price, wholeLotVolume, lotVolume]: the exact size is the lot volume string
        px = (_num(_text(bid[0])), _num(_text(bid[2])), _num(_text(ask[0])), _num(_text(ask[2])))
        buffer.add(FrameKind.BBO, (recv, recv, pair, session, 0, *px, line))

    def _drop(
        self, pair: str, times: tuple[int, int], session: str, line: int, buffer: RowBuffer
    ) -> None:
        """Forget the pair's book until its next snapshot; tell the venue (a marker row)."""
        book = self.books.pop(pair, None)
        level = held_level(None if book is None else (book[0].keys, book[1].keys))
        add_break(buffer, self._chain, pair, level, times, session, line)

    def _book(
        self,
        channel: str,
        pair: str,
        payloads: list[Any],
        recv: int,
        session: str,
        line: int,
        buffer: RowBuffer,
    ) -> None:
        depth = int(channel.partition("-")[2] or "10")
        if not payloads or not all(isinstance(p, dict) for p in payloads):
            raise TypeError("book payload is not an object")
        snapshot = any("as" in p or "bs" in p for p in payloads)
        levels = []
        checksum: str | None = None
        for payload in payloads:
            keys = ("bs", "as") if snapshot else ("b", "a")
            levels += _levels(payload.get(keys[0], []), 1)
            levels += _levels(payload.get(keys[1], []), -1)
            if "c" in payload:
                checksum = _text(payload["c"])
        if not levels:
            raise ValueError("book message without levels")
        expected = None if checksum is None else int(checksum)
        ts = max(level[5] for level in levels)
        if snapshot:
            self.books[pair] = (_Side(descending=True), _Side(descending=False))
        elif pair not in self.books:
            detail = f"{pair}: update without a synced book (waiting for a snapshot)"
            buffer.stats.reject(RowReject.SEQUENCE_GAP, line, detail, len(levels))
            return
        bids, asks = self.books[pair]
        for side, px, qty, price, size, _ in levels:
            (bids if side == 1 else asks).set(price, px, qty, size)
        # Levels Kraken no longer reports; they become explicit deletes below.
        gone = [(1, p) for p in bids.trim(depth)] + [(-1, p) for p in asks.trim(depth)]
        if expected is None:
            if not snapshot:
                self.unverified += 1
        else:
            got = kraken_checksum(asks.best(CHECKSUM_DEPTH), bids.best(CHECKSUM_DEPTH))
            if got != expected:
                self.checksum_mismatches += 1
                self.mismatch_lines.append(line)
                self._drop(pair, (ts, recv), session, line, buffer)
                detail = f"{pair}: checksum {got} != {expected}"
                buffer.stats.reject(RowReject.CHECKSUM_MISMATCH, line, detail, len(levels))
                return
            self.checksums_ok += 1
        self.trimmed += len(gone)
        if snapshot:
            self._chain.start(pair, line)
            ids = (0, line, 0)
        else:
            ids = self._chain.ids(pair, line)
        dropped = set(gone) if snapshot else set()  # a snapshot deeper than the channel
        for side, _, _, price, size, _ in levels:
            if (side, price) not in dropped:
                buffer.add(
                    FrameKind.DEPTH,
                    (ts, recv, pair, session, snapshot, *ids, side, price, size, line),
                )
        for side, price in [] if snapshot else gone:
            buffer.add(
                FrameKind.DEPTH, (ts, recv, pair, session, False, *ids, side, price, 0.0, line)
            )
