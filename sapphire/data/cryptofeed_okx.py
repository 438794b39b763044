"""OKX v5 public websocket messages of cryptofeed logs -> canonical rows.

Channels (``wss://ws.okx.com:8443/ws/v5/public``):

* ``books`` (also ``books-l2-tbt``/``books50-l2-tbt``): ``{"arg": {"channel", "instId"},
  "action": "snapshot"/"update", "data": [{"asks": [[px, sz, "0", numOrders]], "bids": [...],
  "ts": ms, "checksum": int}]}``. ``sz`` is the absolute size at ``px``; ``"0"`` deletes it.
* ``trades``: ``data: [{instId, tradeId, px, sz, side (taker), ts}]``.
* ``tickers``: best bid/ask (``bidPx, bidSz, askPx, askSz, ts``) -> BBO rows.

Units are the venue's, unconverted: ``sz`` of futures and swaps is a number of **contracts**
(BTC-USD-220527: 100 USD, UNI-USD-SWAP: 10 USD, both inverse), of spot the base coin.
Symbols are OKX ``instId`` as sent ("BTC-USD-SWAP"): dropping the dashes would be ambiguous.

Integrity: the 2022 ``books`` messages carry no sequence number, only ``checksum``, the
signed CRC32 of ``bid1px:bid1sz:ask1px:ask1sz:...`` over the best 25 levels per side (the
shorter side's missing levels are skipped), built from the original strings. It is verified
after every snapshot and update on the loader's own string book. A mismatch rejects that
message as ``checksum_mismatch`` and every later update of the instrument as ``sequence_gap``
until the next snapshot. Where ``seqId``/``prevSeqId`` are present (later OKX versions) an
update whose ``prevSeqId`` is not the last ``seqId`` is a ``sequence_gap`` too. Accepted
messages chain by ``seqId`` or else by their line number in the log, as in
:mod:`sapphire.data.cryptofeed_bybit`. Where a mismatch, a broken ``seqId`` chain or a message
with a bad field drops a synced book, one break marker row is emitted in its place
(:data:`sapphire.data.schemas.BREAK_PREV`, a delete at a level the book held): the venue's
book counts a gap there and offers no liquidity until the next snapshot, instead of staying
synced on the levels of before the break.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Final

from sapphire.data.binance_json import RowBuffer, _i64, _num, _text
from sapphire.data.cryptofeed_rows import FIELD_ERRORS, Chain, Row, add_break, add_rows, held_level
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import RowReject

_SIDES: Final = {"buy": 1, "sell": -1}
_MS: Final = 1_000_000
CHECKSUM_DEPTH: Final = 25

# One side of the string book: float price (ordering) -> (price text, size text).
Side = dict[float, tuple[str, str]]


def okx_checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """OKX's signed CRC32 of the best levels, interleaved bid/ask, best first."""
    parts: list[str] = []
    for i in range(CHECKSUM_DEPTH):
        if i < len(bids):
            parts.extend(bids[i])
        if i < len(asks):
            parts.extend(asks[i])
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def _best(side: Side, descending: bool) -> list[tuple[str, str]]:
    keys = sorted(side, reverse=descending)[:CHECKSUM_DEPTH]
    return [side[k] for k in keys]


def _signed32(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise ValueError(f"checksum is not a signed 32-bit integer: {value!r}")
    return value


def _levels(raw: Any, side: int) -> list[tuple[int, str, str, float, float]]:
    if not isinstance(raw, list):
        raise TypeError("levels are not a list")
    out = []
    for level in raw:
        px, sz = _text(level[0]), _text(level[1])
        out.append((side, px, sz, _num(px), _num(sz)))
    return out


class OkxHandler:
    """Stateful: one instance per pass over one file (it holds the string books)."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[Side, Side]] = {}  # instId -> (bids, asks); absent: unsynced
        self.checksums_ok = 0
        self.checksum_mismatches = 0
        self.unverified = 0  # books messages without a checksum field
        self._seq: dict[str, int] = {}  # seqId (or line) of the last applied message
        self._chain = Chain()

    def __call__(self, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        if not isinstance(msg, dict):
            buffer.stats.reject(RowReject.MALFORMED, line, "message is not an object")
            return
        arg = msg.get("arg")
        if "event" in msg or not isinstance(arg, dict) or "data" not in msg:
            buffer.stats.ignored += 1  # subscribe acks, errors, pongs
            return
        try:
            channel = arg["channel"]
            data = msg["data"]
            if not isinstance(data, list):
                raise TypeError("data is not a list")
            if isinstance(channel, str) and channel.startswith("books") and "action" in msg:
                inst = _text(arg["instId"])
                try:
                    for item in data:
                        self._book(inst, msg["action"], item, recv, session, line, buffer)
                except FIELD_ERRORS:
                    # a lost message: the book is unknown now
                    self._drop(inst, (recv, recv), session, line, buffer)
                    raise
            elif channel == "trades":
                add_rows(
                    buffer, FrameKind.TRADES, line, data, self._trade(recv, session, line), "trade"
                )
            elif channel == "tickers":
                add_rows(
                    buffer, FrameKind.BBO, line, data, self._ticker(recv, session, line), "ticker"
                )
            else:
                buffer.stats.ignored += 1
        except FIELD_ERRORS as exc:
            buffer.stats.reject(RowReject.MALFORMED, line, f"bad field: {exc!r}")

    @staticmethod
    def _trade(recv: int, session: str, line: int) -> Callable[[Any], Row]:
        def row(raw: Any) -> Row:
            return (
                _i64(raw["ts"], _MS),
                recv,
                _text(raw["instId"]),
                session,
                _num(raw["px"]),
                _num(raw["sz"]),
                _SIDES[raw["side"]],
                _i64(raw["tradeId"]),
                line,
            )

        return row

    @staticmethod
    def _ticker(recv: int, session: str, line: int) -> Callable[[Any], Row]:
        def row(raw: Any) -> Row:
            px = (_num(raw["bidPx"]), _num(raw["bidSz"]), _num(raw["askPx"]), _num(raw["askSz"]))
            return (_i64(raw["ts"], _MS), recv, _text(raw["instId"]), session, 0, *px, line)

        return row

    def _drop(
        self, inst: str, times: tuple[int, int], session: str, line: int, buffer: RowBuffer
    ) -> None:
        """Forget the instrument's book until its next snapshot; tell the venue (a marker)."""
        book = self.books.pop(inst, None)
        level = held_level(book)
        add_break(buffer, self._chain, inst, level, times, session, line)

    def _book(
        self,
        inst: str,
        action: Any,
        item: Any,
        recv: int,
        session: str,
        line: int,
        buffer: RowBuffer,
    ) -> None:
        if not isinstance(item, dict):
            raise TypeError("book data is not an object")
        levels = [*_levels(item["bids"], 1), *_levels(item["asks"], -1)]
        ts = _i64(item["ts"], _MS)
        checksum = item.get("checksum")
        expected = None if checksum is None else _signed32(checksum)
        seq = _i64(item["seqId"]) if "seqId" in item else line
        rows = len(levels)
        snapshot = action == "snapshot"
        if snapshot:
            self.books[inst] = ({}, {})
        elif action != "update":
            raise ValueError(f"unknown action {action!r}")
        elif inst not in self.books:
            if rows:
                detail = f"{inst}: update without a synced book (waiting for a snapshot)"
                buffer.stats.reject(RowReject.SEQUENCE_GAP, line, detail, rows)
            return
        elif "prevSeqId" in item and _i64(item["prevSeqId"]) != self._seq[inst]:
            self._drop(inst, (ts, recv), session, line, buffer)
            detail = f"{inst}: prevSeqId {item['prevSeqId']} != {self._seq[inst]}"
            buffer.stats.reject(RowReject.SEQUENCE_GAP, line, detail, max(rows, 1))
            return
        bids, asks = self.books[inst]
        for side, px, sz, price, size in levels:
            book = bids if side == 1 else asks
            if size == 0:
                book.pop(price, None)
            else:
                book[price] = (px, sz)
        if expected is None:
            self.unverified += 1
        else:
            got = okx_checksum(_best(bids, True), _best(asks, False))
            if got != expected:
                self.checksum_mismatches += 1
                self._drop(inst, (ts, recv), session, line, buffer)
                detail = f"{inst}: checksum {got} != {expected}"
                buffer.stats.reject(RowReject.CHECKSUM_MISMATCH, line, detail, max(rows, 1))
                return
            self.checksums_ok += 1
        self._seq[inst] = seq
        if snapshot:
            self._chain.start(inst, seq)
        if not rows:
            return
        ids = (0, seq, 0) if snapshot else self._chain.ids(inst, seq)
        for side, _, _, price, size in levels:
            buffer.add(
                FrameKind.DEPTH,
                (ts, recv, inst, session, snapshot, *ids, side, price, size, line),
            )
