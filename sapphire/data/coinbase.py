"""Coinbase Exchange websocket messages (``level2``/``level2_batch``, ``matches``, ``ticker``).

Feed ``wss://ws-feed.exchange.coinbase.com`` (formerly ``ws-feed.pro.coinbase.com``); every
message is a JSON object with ``type``. Others (``subscriptions``, ``heartbeat``, ``error``,
``status``, the ``full`` channel's ``received``/``open``/``done``) are counted as ignored:

* ``snapshot``: ``{product_id, bids: [[price, size]], asks: [...]}`` (``time`` only on newer
  feeds: without it ``ts_event_ns`` is the receive time).
* ``l2update``: ``{product_id, time, changes: [[side "buy"/"sell", price, size]]}``; ``size``
  is the absolute size at ``price``, ``"0"`` removes the level. ``level2_batch`` sends the
  same messages, batched every 50 ms.
* ``match`` and ``last_match`` (the last trade before subscribing, a real trade, kept):
  ``{trade_id, maker_order_id, taker_order_id, side, size, price, product_id, sequence,
  time}``. ``side`` is the **maker's** order side (see :data:`_AGGRESSOR`).
* ``ticker``: ``{sequence, product_id, price, best_bid, best_ask, time, ...}``, with
  ``best_bid_size``/``best_ask_size`` on newer feeds: then a BBO row. Without sizes a ticker
  cannot be a canonical BBO row: it is counted as ignored and only checks the rebuilt book
  (``ticker_matches``/``ticker_mismatches``, ``ticker_unchecked`` without a two-sided synced
  book). The ticker channel and the book channel are separate streams, so a mismatch is a
  statistic, not a reject.

Containers: the messages one per line as the venue sent them (``coinbase_json``, detected by
content: :func:`sniff`), or inside a cryptofeed log (``<recv_s>: <json>``, handled by
:mod:`sapphire.data.cryptofeed` with :class:`CoinbaseHandler`). A bare message has no receive
time: the latest exchange ``time`` seen so far in the file stands for it, and a message
without ``time`` before any timed one (the snapshot right after subscribing) waits for the
next timed message.

Units are the venue's: spot sizes in the base currency. Symbols are the ``product_id`` as
sent ("BTC-USD").

Integrity: ``level2`` carries no sequence number (delivery is guaranteed), so the book is
chained by line number as in :mod:`sapphire.data.cryptofeed_bitmex`; an ``l2update`` before
its product's ``snapshot`` is a ``sequence_gap``. An ``l2update`` with a bad field is lost:
the product's book is dropped, its updates are ``sequence_gap`` until the next snapshot, and
one break marker row is emitted in the lost update's place
(:data:`sapphire.data.schemas.BREAK_PREV`, a delete at a level the book held) so that the
venue's book counts a gap and offers no liquidity until then, instead of staying synced on
stale levels. ``match`` and ``ticker`` carry the product's
``sequence``: one below the last accepted one of its channel arrived late (Coinbase warns
that websocket messages can arrive out of order) and is rejected as ``out_of_order``; a match
with the same sequence again (subscribed through both ``matches`` and ``full``) is a
``duplicate_trade_id``.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Final

import msgspec
import polars as pl

from sapphire.data.binance_json import RowBuffer, _i64, _num, _text, price_levels
from sapphire.data.cryptofeed_bitmex import iso_ns
from sapphire.data.cryptofeed_rows import FIELD_ERRORS, Chain, add_break, held_level
from sapphire.data.hftbacktest_raw import chunked, iter_lines
from sapphire.data.schemas import FrameKind
from sapphire.data.stream import Chunk, EventStream, Instruments
from sapphire.data.validation import DataFileError, RejectStats, RowReject

FORMAT: Final = "coinbase_json"
TYPES: Final = ("snapshot", "l2update", "match", "last_match", "ticker")
"""The message types this module reads (also how a file is recognised by content)."""
_SIDES: Final = {"buy": 1, "sell": -1}
# A match's ``side`` is the resting (maker) order's side: a "sell" maker was lifted by a
# buyer, so the aggressor, which the canonical ``side`` column holds, is the opposite one.
_AGGRESSOR: Final = {"buy": -1, "sell": 1}
_SNIFF_LINES: Final = 64
_DECODER = msgspec.json.Decoder()


def is_message(msg: Any) -> bool:
    """A Coinbase Exchange market-data message (the shape this module reads)."""
    return (
        isinstance(msg, dict)
        and msg.get("type") in TYPES
        and isinstance(msg.get("product_id"), str)
    )


def time_ns(value: Any) -> int:
    """``"2019-08-14T20:42:27.265Z"`` -> ns; Coinbase times are UTC even without a zone."""
    text = _text(value)
    zoned = text.endswith(("Z", "z")) or "+" in text[10:] or "-" in text[10:]
    return iso_ns(text if zoned else f"{text}+00:00")


def _changes(raw: Any) -> list[tuple[int, float, float]]:
    if not isinstance(raw, list):
        raise TypeError("changes are not a list")
    out = []
    for change in raw:
        if not isinstance(change, list) or len(change) != 3:
            raise TypeError(f"change is not [side, price, size]: {change!r}")
        out.append((_SIDES[change[0]], _num(change[1]), _num(change[2])))
    return out


def row_count(msg: Any) -> int:
    """How many canonical rows a message would give (1 when it cannot say)."""
    if not isinstance(msg, dict):
        return 1
    parts = ("bids", "asks") if msg.get("type") == "snapshot" else ("changes",)
    return max(sum(len(p) for k in parts if isinstance(p := msg.get(k), list)), 1)


class CoinbaseHandler:
    """Stateful: one instance per pass over one file (it holds the books per product)."""

    def __init__(self) -> None:
        # product -> (bids, asks) as price -> size; absent: no snapshot yet
        self.books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
        self.absent_deletes = 0  # size 0 for a price the book does not hold (harmless)
        self.ticker_matches = 0
        self.ticker_mismatches = 0
        self.ticker_unchecked = 0
        self.mismatch_lines: list[int] = []
        self._seq: dict[tuple[str, str], int] = {}  # (channel, product) -> last sequence
        self._chain = Chain()

    def __call__(self, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        if not isinstance(msg, dict):
            buffer.stats.reject(RowReject.MALFORMED, line, "message is not an object")
            return
        kind = msg.get("type")
        if kind not in TYPES:
            buffer.stats.ignored += 1  # subscriptions, heartbeat, error, full-channel orders
            return
        try:
            product = _text(msg["product_id"])
            if kind == "snapshot":
                self._snapshot(product, msg, recv, session, line, buffer)
            elif kind == "l2update":
                try:
                    self._update(product, msg, recv, session, line, buffer)
                except FIELD_ERRORS:
                    # a lost update: the book is unknown now; tell the venue (a marker row)
                    level = held_level(self.books.pop(product, None))
                    add_break(buffer, self._chain, product, level, (recv, recv), session, line)
                    raise
            elif kind == "ticker":
                self._ticker(product, msg, recv, session, line, buffer)
            else:
                self._match(product, msg, recv, session, line, buffer)
        except FIELD_ERRORS as exc:
            buffer.stats.reject(RowReject.MALFORMED, line, f"bad field: {exc!r}", row_count(msg))

    def _late(self, channel: str, product: str, seq: int) -> int:
        """The last accepted sequence when ``seq`` is not after it (else -1, and ``seq`` is)."""
        last = self._seq.get((channel, product), -1)
        if seq <= last:
            return last
        self._seq[(channel, product)] = seq
        return -1

    def _match(
        self, product: str, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        row = (
            time_ns(msg["time"]),
            recv,
            product,
            session,
            _num(msg["price"]),
            _num(msg["size"]),
            _AGGRESSOR[msg["side"]],
            _i64(msg["trade_id"]),
            line,
        )
        seq = _i64(msg["sequence"])
        last = self._late("matches", product, seq)
        if last < 0:
            buffer.add(FrameKind.TRADES, row)
        elif seq == last:  # the same match twice (the matches and the full channel both send it)
            detail = f"{product}: trade_id={row[7]} sequence {seq} again"
            buffer.stats.reject(RowReject.DUPLICATE_TRADE_ID, line, detail)
        else:
            detail = f"{product}: match sequence {seq} < {last} (arrived late)"
            buffer.stats.reject(RowReject.OUT_OF_ORDER, line, detail)

    def _ticker(
        self, product: str, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        bid, ask = _num(msg["best_bid"]), _num(msg["best_ask"])
        sized = "best_bid_size" in msg and "best_ask_size" in msg
        sizes = (0.0, 0.0)
        if sized:
            sizes = (_num(msg["best_bid_size"]), _num(msg["best_ask_size"]))
        ts = time_ns(msg["time"]) if "time" in msg else recv  # the first ticker has no time
        seq = _i64(msg["sequence"])
        last = self._late("ticker", product, seq)
        if last >= 0:  # late or replayed: it says nothing about the current book
            if sized:
                detail = f"{product}: ticker sequence {seq} <= {last} (late or replayed)"
                buffer.stats.reject(RowReject.OUT_OF_ORDER, line, detail)
            else:
                buffer.stats.ignored += 1  # a sizeless ticker is no row to reject
            return
        self._check(product, bid, ask, line)
        if not sized:
            buffer.stats.ignored += 1
            return
        buffer.add(
            FrameKind.BBO, (ts, recv, product, session, seq, bid, sizes[0], ask, sizes[1], line)
        )

    def _check(self, product: str, bid: float, ask: float, line: int) -> None:
        book = self.books.get(product)
        if book is None or not book[0] or not book[1]:
            self.ticker_unchecked += 1
        elif (max(book[0]), min(book[1])) == (bid, ask):
            self.ticker_matches += 1
        else:
            self.ticker_mismatches += 1
            self.mismatch_lines.append(line)

    def _snapshot(
        self, product: str, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        levels = [*price_levels(msg["bids"], 1), *price_levels(msg["asks"], -1)]
        ts = time_ns(msg["time"]) if "time" in msg else recv
        self.books[product] = (
            {px: size for side, px, size in levels if side == 1 and size},
            {px: size for side, px, size in levels if side == -1 and size},
        )
        self._chain.start(product, line)
        for side, px, size in levels:
            buffer.add(
                FrameKind.DEPTH,
                (ts, recv, product, session, True, 0, line, 0, side, px, size, line),
            )

    def _update(
        self, product: str, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        changes = _changes(msg["changes"])
        ts = time_ns(msg["time"])
        book = self.books.get(product)
        if book is None:
            if changes:
                detail = f"{product}: l2update without a snapshot (waiting for one)"
                buffer.stats.reject(RowReject.SEQUENCE_GAP, line, detail, len(changes))
            return
        if not changes:
            return
        ids = self._chain.ids(product, line)
        for side, px, size in changes:
            held = book[0 if side == 1 else 1]
            if size:
                held[px] = size
            elif held.pop(px, None) is None:
                self.absent_deletes += 1
            buffer.add(
                FrameKind.DEPTH, (ts, recv, product, session, False, *ids, side, px, size, line)
            )


class BareLineParser:
    """One Coinbase message per line, no receive time (see the module docstring)."""

    def __init__(self, session: str = "") -> None:
        self.handler = CoinbaseHandler()
        self.session = session
        self._recv: int | None = None  # latest exchange time seen: the stand-in receive time
        self._waiting: list[tuple[Any, int]] = []  # untimed messages before any timed one

    def __call__(self, line: bytes, number: int, buffer: RowBuffer) -> None:
        decoded, msg = buffer.json_line(line, number)
        if not decoded:
            return
        try:
            stamp = time_ns(msg["time"]) if isinstance(msg, dict) and "time" in msg else None
        except (ValueError, TypeError):
            stamp = None  # the handler rejects the bad field with the message
        if stamp is not None:
            self._recv = stamp if self._recv is None else max(self._recv, stamp)
            waiting, self._waiting = self._waiting, []
            for early, early_line in waiting:
                self.handler(early, self._recv, self.session, early_line, buffer)
        if self._recv is None:
            if is_message(msg):
                self._waiting.append((msg, number))
            else:
                self.handler(msg, 0, self.session, number, buffer)  # ignored or malformed
            return
        self.handler(msg, self._recv, self.session, number, buffer)

    def finish(self, stats: RejectStats) -> None:
        """Messages still waiting: the file never said what time it was."""
        for msg, number in self._waiting:
            stats.reject(
                RowReject.MALFORMED, number, "no timed message in the file", row_count(msg)
            )
        self._waiting = []


def sniff(path: Path) -> bool:
    """Whether the first lines of ``path`` hold bare Coinbase Exchange messages."""
    stats = RejectStats()
    for _, line in islice(iter_lines(path, stats), _SNIFF_LINES):
        try:
            if is_message(_DECODER.decode(line)):
                return True
        except msgspec.DecodeError:
            continue
    return False


def _chunks(path: Path, stats: RejectStats, session: str) -> Iterator[Chunk]:
    parse = BareLineParser(session)
    yield from chunked(path, stats, parse)
    parse.finish(stats)
    if stats.rows_in == 0:
        raise DataFileError(f"{path}: no market-data messages in this Coinbase file")


def load_coinbase_frames(path: str | Path) -> dict[FrameKind, pl.DataFrame]:
    """Canonical frames per kind of a file of bare Coinbase Exchange messages."""
    path = Path(path)
    parts: dict[FrameKind, list[pl.DataFrame]] = {}
    parse = BareLineParser(_session(path))
    for chunk in chunked(path, RejectStats(source=str(path)), parse, chunk_rows=500_000):
        for kind, frame in chunk:
            parts.setdefault(kind, []).append(frame.drop("line"))
    if not parts:
        raise DataFileError(f"{path}: no market-data messages in this Coinbase file")
    return {kind: pl.concat(frames) for kind, frames in parts.items()}


def stream_coinbase(path: str | Path, instruments: Instruments | None = None) -> EventStream:
    """Lazy validated events; without instruments they are inferred in a first pass."""
    from sapphire.data.cryptofeed import infer_instruments  # cryptofeed imports this module

    path = Path(path)
    if instruments is None:
        instruments = infer_instruments(load_coinbase_frames(path), "COINBASE")
    kinds = (FrameKind.TRADES, FrameKind.BBO, FrameKind.DEPTH)
    session = _session(path)
    return EventStream(path, FORMAT, kinds, instruments, lambda st: _chunks(path, st, session))


def _session(path: Path) -> str:
    """The date in the file name, as for cryptofeed logs ("" without one)."""
    from sapphire.data.cryptofeed import _session as of_name  # cryptofeed imports this module

    return of_name(path)
