"""How every venue handler of a cryptofeed log turns a message's items into rows.

One concept, one place: a decoded JSON item with a missing or mistyped field is one counted
``malformed`` row, and the other items of the same message are still delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from sapphire.data.binance_json import RowBuffer
from sapphire.data.schemas import FrameKind
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
