"""How every venue handler of a cryptofeed log turns a message's items into rows.

One concept, one place: a decoded JSON item with a missing or mistyped field is one counted
``malformed`` row, and the other items of the same message are still delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from sapphire.data.binance_json import RowBuffer
from sapphire.data.schemas import BREAK_PREV, FrameKind
from sapphire.data.validation import RowReject

FIELD_ERRORS: Final = (KeyError, TypeError, ValueError, IndexError, AttributeError)
"""What reading a missing or mistyped field of a decoded JSON message raises."""

Row = tuple[Any, ...]


def parse_rows(
    buffer: RowBuffer, line: int, items: Iterable[Any], row: Callable[[Any], Row], what: str
) -> list[Row]:
    """``row(item)`` for each item; a bad item is rejected as ``bad <what>`` and skipped."""
    rows = []
    for item in items:
        try:
            rows.append(row(item))
        except FIELD_ERRORS as exc:
            buffer.stats.reject(RowReject.MALFORMED, line, f"bad {what}: {exc!r}")
    return rows


def add_rows(
    buffer: RowBuffer,
    kind: FrameKind,
    line: int,
    items: Iterable[Any],
    row: Callable[[Any], Row],
    what: str,
) -> None:
    """:func:`parse_rows` straight into ``buffer`` as ``kind`` rows."""
    for parsed in parse_rows(buffer, line, items, row, what):
        buffer.add(kind, parsed)


class Chain:
    """Update ids that chain a venue's accepted book messages for :class:`L2Book`.

    A snapshot (or a venue's own resync) ``start``s a symbol at its id; each later accepted
    message with rows gets ``(first, final, prev_final)`` from :meth:`ids`. The first one
    after a snapshot is ``(0, id, 0)``: it straddles the snapshot by construction, whatever
    the venue's id (a ``cross_seq`` that is not contiguous, or a line number). Later ones are
    ``(id, id, id of the previous message with rows)``, like Binance futures diffs.

    Where the loader finds its own book broken, :meth:`broken` gives the ids of the one marker
    row it emits there (:data:`~sapphire.data.schemas.BREAK_PREV`) and ends the chain until
    the next ``start``.
    """

    def __init__(self) -> None:
        self._prev: dict[str, int] = {}  # id of the last message with rows
        self._fresh: set[str] = set()  # the next message is the first after a snapshot

    def start(self, symbol: str, first: int) -> None:
        self._prev[symbol] = first
        self._fresh.add(symbol)

    def ids(self, symbol: str, current: int) -> tuple[int, int, int]:
        if symbol in self._fresh:
            self._fresh.discard(symbol)
            out = (0, current, 0)
        else:
            out = (current, current, self._prev[symbol])
        self._prev[symbol] = current
        return out

    def broken(self, symbol: str) -> tuple[int, int, int] | None:
        """Ids of the marker row for a break of ``symbol``'s book; None when the symbol is not
        chained (no snapshot yet, or marked since the last one). The symbol is unchained.

        Why: the loader rejects the symbol's rows until the next snapshot, and a venue's book
        told nothing stays synced on the levels of before the break (an order fills against
        them for as long as the gap lasts). The marker makes that book see the break. With
        ``p`` the last id chained (every id the book holds is at most ``p``) it is
        ``(p + 2, p + 1, BREAK_PREV)``: ``final = p + 1`` is above the book's id (not stale);
        ``first > final`` is never the straddle ``first <= last + 1 <= final`` of a first diff
        after a snapshot, whatever ``last`` is, and ``prev = BREAK_PREV`` never the book's id
        (``prev == last``). So the book counts a gap and goes out of sync, and never applies
        the marker: held for the next snapshot, it is stale there (``p + 1 <=`` the snapshot's
        id, which is above ``p``: the snapshot comes after what was chained).
        """
        prev = self._prev.pop(symbol, None)
        self._fresh.discard(symbol)
        if prev is None:
            return None
        return prev + 2, prev + 1, BREAK_PREV


def held_level(book: tuple[Iterable[float], Iterable[float]] | None) -> tuple[int, float] | None:
    """A level ``(side, price)`` of a dropped ``(bid prices, ask prices)`` book, the first
    bid else the first ask, for a marker row; None for no book or an empty one."""
    for side, prices in ((1, book[0]), (-1, book[1])) if book is not None else ():
        for price in prices:
            return side, price
    return None


def add_break(
    buffer: RowBuffer,
    chain: Chain,
    symbol: str,
    level: tuple[int, float] | None,
    times: tuple[int, int],
    session: str,
    line: int,
) -> None:
    """The marker row (:meth:`Chain.broken`) of a break of ``symbol``'s book found at the
    message of ``times`` ``(ts_event_ns, ts_recv_ns)`` and ``line``, at ``level`` ``(side,
    price)``: a level the dropped book held. None when that book held no level: the venue's
    book is empty then too, with no liquidity to fill against (the chain still ends)."""
    ids = chain.broken(symbol)
    if ids is None or level is None:
        return
    side, price = level
    ts, recv = times
    row = (ts, recv, symbol, session, False, *ids, side, price, 0.0, line)
    buffer.add(FrameKind.DEPTH, row)
