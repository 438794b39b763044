"""Kraken Futures websocket v1 messages of cryptofeed logs -> canonical rows.

Feeds (``wss://futures.kraken.com/ws/v1``); every message is a JSON object with ``feed`` and
``product_id``; ``{"event": ...}`` objects (info, subscribed, heartbeat) are ignored:

* ``book_snapshot``: ``{"timestamp": ms, "seq", "bids": [{"price", "qty"}], "asks": [...]}``.
* ``book``: one level per message, ``{"side": "buy"/"sell", "seq", "price", "qty",
  "timestamp": ms}``; ``qty`` is the absolute size at ``price``, 0 deletes it.
* ``trade``: ``{"uid", "side" (taker), "type": "fill", "seq", "time": ms, "qty", "price"}``,
  emitted with ``trade_id = seq`` (``uid`` is a UUID; ``seq`` is per product).
  ``trade_snapshot`` (the last 100 trades before subscribing) is history, not the recorded
  window's prints: counted as ignored, no events.
* ``ticker_lite``: ``bid``/``ask`` prices only, no sizes and no exchange time, so it cannot
  be a canonical BBO row: it is counted as ignored, and used instead to check the rebuilt
  book: at each ticker the handler compares the ticker's bid/ask with the best bid/ask of the
  book rebuilt from every earlier line of the file (``ticker_matches`` / ``ticker_mismatches``;
  ``ticker_unchecked`` when the product has no synced two-sided book). Kraken throttles the
  ticker, so a mismatch is a statistic, not a reject.

Units are the venue's, unconverted: the ``PI_``/``FI_`` contracts are **inverse** (USD
prices, ``qty`` = number of 1-USD contracts), and stay in contracts here. Symbols are the
``product_id`` as sent ("PI_XBTUSD", "FI_XBTUSD_210730").

Integrity: a product's ``book`` messages carry ``seq`` = previous ``seq`` + 1, starting after
the snapshot's ``seq``. A message that breaks the chain (or arrives before any snapshot) is
rejected as ``sequence_gap`` and the product waits for the next snapshot: a log cannot ask
for one, so the rest of its updates are gaps too. Accepted messages are chained on ``seq``
with :class:`~sapphire.data.cryptofeed_rows.Chain`: ``first_update_id = final_update_id =
seq`` and ``prev_final_update_id`` = the previous seq (the first after a snapshot ``(0, seq,
0)``), so :class:`sapphire.book.l2.L2Book` chains them like Binance futures diffs. Where such
a break (or an update with a bad field) drops a synced book, one break marker row is emitted
in its place (:data:`sapphire.data.schemas.BREAK_PREV`, a delete at a level the book held):
the venue's book counts a gap there and offers no liquidity until the next snapshot, instead
of staying synced on the levels of before the break.
"""

from __future__ import annotations

from typing import Any, Final

from sapphire.data.binance_json import RowBuffer, _i64, _num, _text
from sapphire.data.cryptofeed_rows import (
    FIELD_ERRORS,
    Chain,
    Row,
    add_break,
    held_level,
    parse_rows,
)
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import RowReject

_MS: Final = 1_000_000
_SIDES: Final = {"buy": 1, "sell": -1}
FEEDS: Final = ("book_snapshot", "book", "trade_snapshot", "trade", "ticker_lite")
"""The data feeds this module reads (also how a log is recognised by content)."""


def _snapshot_levels(raw: Any, side: int) -> list[tuple[int, float, float]]:
    if not isinstance(raw, list):
        raise TypeError("levels are not a list")
    out = []
    for level in raw:
        if not isinstance(level, dict):
            raise TypeError(f"level is not {{price, qty}}: {level!r}")
        out.append((side, _num(level["price"]), _num(level["qty"])))
    return out


class KrakenFuturesHandler:
    """Stateful: one instance per pass over one file (it holds the books per product)."""

    def __init__(self) -> None:
        # product -> (bids, asks) as price -> qty; absent: not synced (no snapshot, or a gap)
        self.books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
        self.absent_deletes = 0  # qty 0 for a price the book does not hold (harmless)
        self.ticker_matches = 0
        self.ticker_mismatches = 0
        self.ticker_unchecked = 0
        self.mismatch_lines: list[int] = []
        self._seq: dict[str, int] = {}  # seq of the last applied book message
        self._chain = Chain()  # on seq

    def __call__(self, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer) -> None:
        if not isinstance(msg, dict):
            buffer.stats.reject(RowReject.MALFORMED, line, "message is not an object")
            return
        feed = msg.get("feed")
        if "event" in msg or feed not in FEEDS:
            buffer.stats.ignored += 1  # info, subscribed, heartbeat, other feeds
            return
        try:
            product = _text(msg["product_id"])
            if feed == "book_snapshot":
                self._snapshot(product, msg, recv, session, line, buffer)
            elif feed == "book":
                try:
                    self._delta(product, msg, recv, session, line, buffer)
                except FIELD_ERRORS:
                    # a lost update: the book is unknown now
                    self._drop(product, (recv, recv), session, line, buffer)
                    raise
            elif feed == "ticker_lite":
                self._ticker(product, msg, line)
                buffer.stats.ignored += 1
            elif feed == "trade_snapshot":
                # the last 100 trades *before* the subscription: history, not prints of the
                # recorded window. As trades they arrived at once, out of time order, were
                # restamped to the receive time and fed agents, marks and the venue's matching
                buffer.stats.ignored += 1
            else:
                self._trades(product, [msg], recv, session, line, buffer)
        except FIELD_ERRORS as exc:
            buffer.stats.reject(RowReject.MALFORMED, line, f"bad field: {exc!r}")

    def _snapshot(
        self, product: str, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        ts, seq = _i64(msg["timestamp"], _MS), _i64(msg["seq"])
        levels = [*_snapshot_levels(msg["bids"], 1), *_snapshot_levels(msg["asks"], -1)]
        self.books[product] = (
            {px: qty for side, px, qty in levels if side == 1 and qty},
            {px: qty for side, px, qty in levels if side == -1 and qty},
        )
        self._seq[product] = seq
        self._chain.start(product, seq)
        for side, px, qty in levels:
            buffer.add(
                FrameKind.DEPTH, (ts, recv, product, session, True, 0, seq, 0, side, px, qty, line)
            )

    def _delta(
        self, product: str, msg: Any, recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        side, seq = _SIDES[msg["side"]], _i64(msg["seq"])
        px, qty, ts = _num(msg["price"]), _num(msg["qty"]), _i64(msg["timestamp"], _MS)
        book = self.books.get(product)
        if book is None:
            detail = f"{product}: update without a synced book (waiting for a snapshot)"
            buffer.stats.reject(RowReject.SEQUENCE_GAP, line, detail)
            return
        last = self._seq[product]
        if seq != last + 1:
            # resync: everything until the next snapshot is a gap
            self._drop(product, (ts, recv), session, line, buffer)
            buffer.stats.reject(RowReject.SEQUENCE_GAP, line, f"{product}: seq {seq} != {last + 1}")
            return
        self._seq[product] = seq
        held = book[0 if side == 1 else 1]
        if qty:
            held[px] = qty
        elif held.pop(px, None) is None:
            self.absent_deletes += 1
        ids = self._chain.ids(product, seq)
        buffer.add(FrameKind.DEPTH, (ts, recv, product, session, False, *ids, side, px, qty, line))

    def _drop(
        self, product: str, times: tuple[int, int], session: str, line: int, buffer: RowBuffer
    ) -> None:
        """Forget the product's book until its next snapshot; tell the venue (a marker row)."""
        book = self.books.pop(product, None)
        level = held_level(book)
        add_break(buffer, self._chain, product, level, times, session, line)

    def _trades(
        self, product: str, raw: Any, recv: int, session: str, line: int, buffer: RowBuffer
    ) -> None:
        if not isinstance(raw, list):
            raise TypeError("trades are not a list")

        def row(trade: Any) -> Row:
            return (
                _i64(trade["time"], _MS),
                recv,
                _text(trade.get("product_id", product)),
                session,
                _num(trade["price"]),
                _num(trade["qty"]),
                _SIDES[trade["side"]],
                _i64(trade["seq"]),
                line,
            )

        rows = parse_rows(buffer, line, raw, row, "trade")
        # The snapshot lists the newest trade first; consumers expect time order.
        for parsed in sorted(rows, key=lambda r: (r[0], r[7])):
            buffer.add(FrameKind.TRADES, parsed)

    def _ticker(self, product: str, msg: Any, line: int) -> None:
        bid, ask = _num(msg["bid"]), _num(msg["ask"])
        book = self.books.get(product)
        if book is None or not book[0] or not book[1]:
            self.ticker_unchecked += 1
            return
        if (max(book[0]), min(book[1])) == (bid, ask):
            self.ticker_matches += 1
        else:
            self.ticker_mismatches += 1
            self.mismatch_lines.append(line)
