"""Row validation bookkeeping: every source row is delivered or rejected with a reason.

Invariant of every stream (checked by the tests)::

    stats.rows_in == stats.rows_out + stats.rejected + stats.other_sessions

``rows_*`` count *rows* as defined in :mod:`sapphire.data.schemas` (one trade, one price level,
one BBO, one bar, one funding rate; an unparseable source line counts as one row).
Source messages Sapphire has no event for (Binance ``markPrice``, klines not yet closed,
header lines) are not rows; they are counted in ``ignored``.
``events_out`` counts typed events and can be smaller than ``rows_out`` because all levels of
one snapshot become a single :class:`~sapphire.model.events.BookSnapshot`. A depth *break
marker* (:data:`sapphire.data.schemas.BREAK_PREV`) is an event of no source row: it counts in
``events_out`` and ``breaks`` only.

Bad rows never raise out of a stream; only a file that cannot be opened or is not a known
format raises :class:`DataFileError`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final


class DataFileError(Exception):
    """A data file is missing, unreadable, or not in a format Sapphire knows.

    Its text is one line, as every command's error is: a parser's message may run on over
    several (polars: 'Did you mean "trade_ms"?' on a line of its own, kept, joined), and
    its hints that name its own API ("Consider setting 'truncate_ragged_lines=True'"),
    which no user of a command can set, are dropped."""

    def __init__(self, message: object = "") -> None:
        lines = [line.strip() for line in str(message).splitlines()]
        super().__init__(" ".join(x for x in lines if x and not x.startswith("Consider ")))


class RowReject(enum.StrEnum):
    MALFORMED = "malformed"  # unparseable line or field, missing column
    NON_FINITE = "non_finite"  # NaN or inf price/qty
    NON_POSITIVE_PRICE = "non_positive_price"
    NEGATIVE_QTY = "negative_qty"
    ZERO_QTY = "zero_qty"  # valid for depth deletes, not for trades or snapshot levels
    OFF_GRID = "off_grid"  # price/qty not a whole number of the instrument's ticks/lots
    OUT_OF_ORDER = "out_of_order"  # timestamp earlier than the previous row's
    DUPLICATE_TRADE_ID = "duplicate_trade_id"
    CROSSED_BOOK = "crossed_book"  # BBO with bid >= ask
    SEQUENCE_GAP = "sequence_gap"  # depth message not contiguous with the previous one
    UNKNOWN_SYMBOL = "unknown_symbol"  # no instrument for the row's symbol
    CHECKSUM_MISMATCH = "checksum_mismatch"  # rebuilt book disagrees with the venue's checksum
    # the file ends in a cut or corrupt block (a gzip stream cut short): one row counted, and
    # the rest of the file, if any, never read (a summary shows it apart from a bad row)
    TRUNCATED = "truncated"
    # a book update before the file's first snapshot of its symbol (Tardis: "skip until the
    # first is_snapshot row"): applied to an empty book it made a partial, crossed book the
    # venue called synced
    BEFORE_SNAPSHOT = "before_snapshot"
    # a funding rate with no settlement time (Deribit's continuous funding in a Tardis
    # derivative_ticker): not a payment; charged at every ticker row it was ~86,400 a day
    NO_SETTLEMENT_TIME = "no_settlement_time"


MAX_EXAMPLES = 5

DAMAGED: Final = f"{RowReject.TRUNCATED}: "
"""The prefix of a run report's key naming a damaged file (``"truncated: trades.csv.gz"``)."""


def damage_key(reason: RowReject, path: Path) -> str:
    """A source's run-report key for ``reason``: a file cut or corrupt is named (the summary
    says which, and the run's command fails on it); every other reason is counted as is."""
    return f"{DAMAGED}{path.name}" if reason is RowReject.TRUNCATED else str(reason)


def damaged_files(rejected: Mapping[str, int]) -> list[str]:
    """The files a run's ``input_rejected`` names as cut or corrupt."""
    return sorted(k.removeprefix(DAMAGED) for k in rejected if k.startswith(DAMAGED))


# Bumped whenever any stream's reported state changes (a rejection counted, a selected
# session met, a cached stream's state applied): a replay that tracks where each source's
# state changed compares this one int per event instead of the state itself.
STATE_CHANGES: list[int] = [0]


@dataclass(slots=True)
class RejectStats:
    """Counts per reason plus the first few examples ``(line, reason, detail)``.

    ``line`` is the 1-based line of the source file (header included) where known, else the
    0-based row index.
    """

    source: str = ""
    rows_in: int = 0
    rows_out: int = 0
    events_out: int = 0
    ignored: int = 0  # source messages of kinds with no event (markPrice, open klines)
    # delivered rows whose size a loader moved onto the instrument's size grid from float
    # noise (Bybit linear sizes are float32 sums: 12.849999 for 12.85)
    snapped: int = 0
    # books a loader found broken and told the venue of with a marker event (no source row)
    breaks: int = 0
    # rows of recording sessions the run did not select (``data.sessions``): read, not built
    other_sessions: int = 0
    counts: dict[RowReject, int] = field(default_factory=dict)
    examples: list[tuple[int, RowReject, str]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(self.counts.values())

    def reject(self, reason: RowReject, line: int, detail: str = "", rows: int = 1) -> None:
        self.rows_in += rows
        self.counts[reason] = self.counts.get(reason, 0) + rows
        STATE_CHANGES[0] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((line, reason, detail[:200]))

    def deliver(self, rows: int = 1) -> None:
        self.rows_in += rows
        self.rows_out += rows
        self.events_out += 1

    def skip_sessions(self, rows: int) -> None:
        self.rows_in += rows
        self.other_sessions += rows

    def balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.rejected + self.other_sessions

    def summary(self) -> str:
        parts = [f"rows_in={self.rows_in}", f"rows_out={self.rows_out}"]
        parts.append(f"events_out={self.events_out}")
        parts.extend(f"{reason.value}={n}" for reason, n in sorted(self.counts.items()))
        if self.snapped:
            parts.append(f"snapped={self.snapped}")
        if self.breaks:
            parts.append(f"breaks={self.breaks}")
        if self.other_sessions:
            parts.append(f"other_sessions={self.other_sessions}")
        return " ".join(parts)
