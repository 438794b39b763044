"""A top of book derived from depth, for the symbols a run replays without a quote stream.

Why: most venues' recordings (Bybit, OKX, Kraken, BitMEX, Kraken Futures, Deribit, Tardis
book files) carry depth and no book-ticker channel, and agents that price off the touch (the
grid maker, mean reversion, momentum) read :class:`~sapphire.model.events.Quote` events: on
such data they never traded, and nothing said why. Binance's bookTicker is the top of its own
book; a derived quote is the same thing read off the recorded book.

One replay source (file) at a time: each depth event of a derived symbol is applied to that
source's :class:`~sapphire.book.l2.L2Book` (the venue's book and sync rule: snapshots, update
ids, gaps, break markers), and once the message is complete (a ``BookDeltas``' ``complete``,
a lone level's ``last_in_batch``, a snapshot) and the book is in sync, a ``Quote`` follows
the depth event, at its times, wherever the best bid or ask (price or size) moved since the
last quote. A book out of sync, never synced, or one-sided gives none: never a made-up price.
The quote is a pair of the source's stream right after its depth event, with the same times:
every runner (one process, Ray's readers by source, a restored merge that skips N events)
merges it there, since it shares its depth event's ordering key and source.

Which symbols (``data.derived_quotes: auto``): those no file of the run carries quotes of.
:func:`quoted_symbols` reads the start of each file that can hold quotes (its stream's kinds
name them), as the run's check reads each file's first rows; within a source a recorded quote
of a derived symbol (a ticker channel that started late) ends its derivation there.
"""

from __future__ import annotations

import array
import bisect
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final

import numpy as np

from sapphire.book.l2 import BookError, L2Book
from sapphire.data.convert import Tagged
from sapphire.data.registry import open_stream
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError
from sapphire.model import Instrument
from sapphire.model.events import BookDelta, BookDeltas, BookSnapshot, Quote

DERIVED: Final = "quotes derived from depth: "
"""The prefix of a run report's key counting one symbol's derived quotes (the replay's
report carries them beside its rejections, as :data:`~sapphire.data.validation.DAMAGED`
names a damaged file there: every runner reports them as of what it consumed)."""

# How far :func:`quoted_symbols` reads into a file: a recorder subscribes its channels at
# once, so a quote stream shows within its first seconds (every shared recording's first
# quote of each symbol is within its first 300 events); bounded, since a depth-only day is
# millions of rows read once more at every start.
SCAN_EVENTS = 200_000
SCAN_NS = 60 * 10**9


def derived_counts(report: Mapping[str, int]) -> dict[str, int]:
    """The derived quotes by symbol among a run report's counts (``input_rejected``)."""
    return {k.removeprefix(DERIVED): n for k, n in report.items() if k.startswith(DERIVED)}


def quoted_symbols(
    path: Path,
    instruments: Mapping[str, Instrument],
    sessions: Collection[str],
    wanted: Collection[str],
) -> set[str]:
    """The symbols of ``wanted`` (the file's own) that ``path`` holds quotes of, read from
    its start (:data:`SCAN_EVENTS`, :data:`SCAN_NS` of recorded time) and only where its
    stream can hold quotes at all. A file that fails to read says so when the run reads it:
    here, what it gave up to there."""
    found: set[str] = set()
    left = set(wanted)
    first: int | None = None
    try:
        stream = open_stream(path, instruments)
        if FrameKind.BBO not in stream.kinds:
            return found
        if sessions:
            stream.select_sessions(sessions)
        for n, (_, event) in enumerate(stream.tagged()):
            if type(event) is Quote and event.symbol in left:
                found.add(event.symbol)
                left.discard(event.symbol)
                if not left:
                    break
            if first is None:
                first = event.ts_event_ns
            if n >= SCAN_EVENTS or event.ts_event_ns - first > SCAN_NS:
                break
    except DataFileError:
        pass
    return found


class DerivedQuotes:
    """One replay source's derived quotes (see the module's doc) and where they stand in
    the source's pairs, so a run reports those among what it consumed (:meth:`counts`),
    whatever its reader read ahead."""

    def __init__(self, symbols: Iterable[str]) -> None:
        self.symbols = frozenset(symbols)
        # the positions (in the source's pairs) of the derived quotes not yet forgotten, and
        # their symbols (indexes into _names): 10 bytes a quote
        self._at = array.array("q")
        self._of = array.array("H")
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._first: list[int] = []  # per symbol: its first depth pair (listed from there)
        self._below: list[int] = []  # per symbol: quotes before the floor
        self._floor = 0

    def tagged(self, pairs: Iterable[Tagged]) -> Iterator[Tagged]:
        """``pairs`` with a derived quote after each depth event that moved the top."""
        derive = set(self.symbols)
        books: dict[str, L2Book] = {}
        tops: dict[str, tuple[int, int, int, int]] = {}
        at, of, index = self._at, self._of, self._index
        position = 0
        for session, event in pairs:
            yield session, event
            position += 1
            symbol = event.symbol
            if symbol not in derive:
                continue
            if type(event) is Quote:
                # the symbol has a quote stream (a ticker channel that came late): from here
                # that is its top of book, never two of them
                derive.discard(symbol)
                continue
            book = books.get(symbol)
            if type(event) is BookDeltas:
                if book is None:
                    book = books[symbol] = self._book(symbol, position - 1)
                book.apply_deltas(event)
                if not event.complete:
                    continue  # its last level never came: the next message ends it
                update_id = event.final_update_id
            elif type(event) is BookDelta:
                if book is None:
                    book = books[symbol] = self._book(symbol, position - 1)
                book.apply_delta(event)
                if not event.last_in_batch:
                    continue
                update_id = event.final_update_id
            elif type(event) is BookSnapshot:
                if book is None:
                    book = books[symbol] = self._book(symbol, position - 1)
                try:
                    book.apply_snapshot(event)
                except BookError:  # crossed or negative: the book stays, as the venue's does
                    continue
                update_id = event.update_id
            else:
                continue
            if not book.is_synced:
                continue
            bid, ask = book.best_bid(), book.best_ask()
            if bid is None or ask is None:
                continue
            top = (bid[0], bid[1], ask[0], ask[1])
            if tops.get(symbol) == top:
                continue
            tops[symbol] = top
            at.append(position)
            of.append(index[symbol])
            position += 1
            yield (
                session,
                Quote(
                    ts_event_ns=event.ts_event_ns,
                    ts_recv_ns=event.ts_recv_ns,
                    symbol=symbol,
                    bid_ticks=top[0],
                    bid_lots=top[1],
                    ask_ticks=top[2],
                    ask_lots=top[3],
                    update_id=update_id,
                ),
            )

    def _book(self, symbol: str, position: int) -> L2Book:
        """A symbol's book, at its first depth pair (``position``): listed from there."""
        self._index[symbol] = len(self._names)
        self._names.append(symbol)
        self._first.append(position)
        self._below.append(0)
        return L2Book(symbol)

    def counts(self, taken: int | None) -> dict[str, int]:
        """Derived quotes by symbol (run-report keys, :data:`DERIVED`) among the source's
        first ``taken`` pairs (None: all given so far); a symbol whose depth came is listed
        from its first depth pair on, 0 where its book never gave a quote."""
        if taken is not None and taken < self._floor:
            raise LookupError(f"quotes in {taken} pairs: forgotten (kept from {self._floor})")
        k = len(self._at) if taken is None else bisect.bisect_left(self._at, taken)
        n = self._by_symbol(k)
        return {
            f"{DERIVED}{name}": self._below[i] + n[i]
            for i, name in enumerate(self._names)
            if taken is None or self._first[i] < taken
        }

    def forget_before(self, taken: int) -> None:
        """No run asks about fewer than ``taken`` pairs any more: the quotes before there
        are kept as counts."""
        if taken <= self._floor:
            return
        self._floor = taken
        k = bisect.bisect_left(self._at, taken)
        if not k:
            return
        n = self._by_symbol(k)
        self._below = [b + c for b, c in zip(self._below, n, strict=True)]
        del self._at[:k]
        del self._of[:k]

    def _by_symbol(self, k: int) -> list[int]:
        """The first ``k`` kept quotes, counted by symbol."""
        if not k:
            return [0] * len(self._names)
        head = np.frombuffer(self._of, dtype=np.uint16, count=k)
        counts: list[int] = np.bincount(head, minlength=len(self._names)).tolist()
        del head  # the array cannot shrink while a view of it exists
        return counts
