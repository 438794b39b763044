"""Lazy typed-event streams with their rejection statistics, and chunked file readers."""

from __future__ import annotations

import gzip
import heapq
import io
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from sapphire.data.convert import EventBuilder, Tagged
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import STATE_CHANGES, DataFileError, RejectStats, RowReject
from sapphire.model import Instrument
from sapphire.model.events import AnyMarketEvent
from sapphire.model.times import utc_text

BLOCK_SIZE = 1 << 22  # bytes of decompressed CSV per chunk: bounded memory, few Python calls
PREFETCH_BLOCKS = 1  # chunks a reader thread holds decoded ahead of the stream's consumer


Instruments = Instrument | Mapping[str, Instrument]
"""One instrument for every row, or one per symbol (rows of other symbols are rejected)."""

Chunk = list[tuple[FrameKind, pl.DataFrame]]
"""One read step: canonical frames per kind, rows in source order within each frame."""

# No crypto market existed before Bitcoin's first block (2009-01-03). A file whose first time
# is earlier holds its times in another unit than its format's (seconds read as milliseconds
# land in January 1970): every event would be decades off and a run would mark, fund and
# stamp fills in 1970 without a word, so the file is refused, naming the time it read.
FIRST_MARKET_NS = 1_230_940_800 * 1_000_000_000


class EventStream:
    """A one-shot, lazy stream of typed events from one file.

    Iterate it for events, or :meth:`tagged` for ``(session, event)`` pairs. ``stats`` fills
    while the stream is consumed; after exhaustion ``stats.balanced()`` holds.

    Sources that mix kinds (raw websocket logs) yield several frames per chunk, each chunk
    ending on a message boundary; their events are merged back into receive-time order.
    """

    def __init__(
        self,
        path: Path,
        fmt: str,
        kinds: tuple[FrameKind, ...],
        instrument: Instruments,
        chunks: Callable[[RejectStats], Iterator[Chunk]],
    ) -> None:
        self.path = path
        self.format = fmt
        self.kinds = kinds
        self.instrument = instrument
        self.stats = RejectStats(source=str(path))
        self._chunks = chunks
        self._used = False
        self._sessions: frozenset[str] | None = None
        self._dated = False  # the first timed row checked against FIRST_MARKET_NS
        self.sessions_seen: set[str] = set()
        """The selected sessions met so far (with :meth:`select_sessions`)."""

    def select_sessions(self, sessions: Iterable[str]) -> None:
        """Build events only from rows of ``sessions`` (before the stream is read): a
        file holding several recording sessions is decoded as columns, and the other
        sessions' rows are counted (``stats.other_sessions``), never made into events."""
        if self._used:
            raise RuntimeError(f"{self.path}: sessions must be selected before reading")
        self._sessions = frozenset(sessions)

    def _check_epoch(self, frame: pl.DataFrame) -> None:
        times = frame.get_column("ts_event_ns").drop_nulls() if frame.height else None
        if times is None or not times.len():
            return
        self._dated = True
        first = int(times[0])
        if first < FIRST_MARKET_NS:
            raise DataFileError(
                f"{self.path}: first event time {utc_text(first, 3)} is before any crypto "
                f"market (2009): its time column is in another unit than {self.format}'s"
            )

    def _selected(self, frame: pl.DataFrame) -> pl.DataFrame:
        if not self._dated:
            self._check_epoch(frame)
        if self._sessions is None:
            return frame
        if "session" not in frame.columns:
            raise DataFileError(f"{self.path}: no session column to select sessions by")
        kept = frame.filter(pl.col("session").is_in(list(self._sessions)))
        if kept.height < frame.height:
            self.stats.skip_sessions(frame.height - kept.height)
        if kept.height:
            self.sessions_seen.update(kept.get_column("session").unique().to_list())
            STATE_CHANGES[0] += 1
        return kept

    def tagged(self) -> Iterator[Tagged]:
        if self._used:
            raise RuntimeError(f"{self.path}: an EventStream can be consumed once")
        self._used = True
        builders: dict[FrameKind, EventBuilder] = {}

        def builder(kind: FrameKind) -> EventBuilder:
            if kind not in builders:
                builders[kind] = EventBuilder(kind, self.instrument, self.stats)
            return builders[kind]

        select = self._selected
        for parts in self._chunks(self.stats):
            if len(parts) == 1 and len(self.kinds) == 1:
                yield from builder(parts[0][0]).feed(select(parts[0][1]))
                continue
            outs = [
                [*builder(kind).feed(select(frame)), *builder(kind).finish()]
                for kind, frame in parts
            ]
            yield from heapq.merge(*outs, key=_recv_key)
        # a file whose end was cut (a corrupt gzip tail, a last line with no end of line):
        # the message held at its end may have lost levels, so it is not given as complete
        cut = RowReject.TRUNCATED in self.stats.counts
        for each in builders.values():
            yield from each.finish(cut=cut)

    def __iter__(self) -> Iterator[AnyMarketEvent]:
        for _, event in self.tagged():
            yield event


def _recv_key(item: Tagged) -> int:
    return item[1].ts_recv_ns or item[1].ts_event_ns


def open_binary(path: Path) -> BinaryIO:
    """Open a file, transparently gunzipping ``*.gz``; a missing file is a DataFileError."""
    try:
        if path.name.endswith(".gz"):
            return cast(BinaryIO, gzip.open(path, "rb"))
        return open(path, "rb")
    except OSError as exc:
        raise DataFileError(f"{path}: cannot open: {exc}") from exc


def csv_header(path: Path) -> list[str]:
    """Column names of a (gzipped) CSV, stripped of spaces (the CSV reader is given these
    names, so ``session, price`` reads as ``price``); an unreadable header is a
    DataFileError."""
    try:
        with open_binary(path) as probe:
            header = probe.readline().decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise DataFileError(f"{path}: cannot read CSV header: {exc}") from exc
    names = [name.strip() for name in header.rstrip("\r\n").split(",")]
    if len(names) < 2:
        raise DataFileError(f"{path}: no CSV header")
    return names


def has_rows(path: Path, header: bool) -> bool:
    """Whether anything but white space follows the header line (``header``) or starts the
    file. A file that cannot be read says True: the reader then counts what is wrong."""
    try:
        with open_binary(path) as probe:
            if header:
                probe.readline()
            while True:
                data = probe.read(1 << 16)
                if not data:
                    return False
                if data.strip():
                    return True
    except (OSError, EOFError, zlib.error):
        return True


def require_rows(path: Path, header: bool = True) -> None:
    """A data file with no row at all is the file's error (one line naming it), not a run
    that silently reads nothing from it."""
    if not has_rows(path, header):
        where = "nothing after the CSV header" if header else "empty file"
        raise DataFileError(f"{path}: no rows ({where})")


class _CompleteLines(io.RawIOBase):
    """A decompressed stream handed on in whole lines: where the compressed data is cut or
    corrupt it ends cleanly after the last complete line (the error kept in ``error``), so
    the CSV reader parses every row before the damage instead of failing its whole block."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._buf = bytearray()
        self._live = True
        self.error: BaseException | None = None
        # the file lines that are empty (line 1 is the header), found as they are handed on:
        # the parser keeps them as all-null rows, as it does a row of empty fields, which is
        # a malformed row to count, not a blank line to drop
        self.blank: set[int] = set()
        self._line = 1  # the line the next byte handed on belongs to
        self._after_newline = False  # the last byte handed on ended a line
        # a last line with no end of line, held back: a file cut inside a row at a clean
        # end of file ("13.887" cut to "13.88") is no row to read as a valid one
        self.unterminated: bytes | None = None
        # lines holding bytes that are no UTF-8, each handed on as a one-field line (an
        # invalid row to the CSV reader: counted as malformed on its line, the rows around it
        # read); what was wrong, by line number. Invalid UTF-8 failed the reader's whole
        # block, and the file's rest with it.
        self.undecodable: dict[int, str] = {}

    def readable(self) -> bool:
        return True

    @property
    def last_line(self) -> int:
        """The number of the line the next byte handed on belongs to (at the end: the
        unterminated line held back)."""
        return self._line

    def read(self, size: int | None = -1) -> bytes:
        size = size if size is not None and size > 0 else 1 << 22
        while self._live and len(self._buf) < size:
            try:
                # read1: what one read of the file decompresses, never lost with a later error
                data = self._raw.read1(size)
            except (OSError, EOFError, zlib.error) as exc:
                self.error, self._live = exc, False
                del self._buf[self._buf.rfind(b"\n") + 1 :]  # a cut line is no row
                break
            if not data:
                self._live = False
                tail = self._buf.rfind(b"\n") + 1
                if self._buf[tail:].strip():
                    self.unterminated = bytes(self._buf[tail:])
                    del self._buf[tail:]
                break
            self._buf += data
        take = size
        if self._live:  # more to come: whole lines only (a longer line goes on in pieces)
            take = self._buf.rfind(b"\n", 0, size) + 1 or size
        out = bytes(self._buf[:take])
        del self._buf[:take]
        if not out.isascii():  # the common case costs one scan for a high bit
            out = self._blank_undecodable(out)
        self._note_blank_lines(out)
        return out

    def _blank_undecodable(self, out: bytes) -> bytes:
        """``out`` with each line that is no UTF-8 replaced by a one-field line: one pass over
        its lines (decoding the rest of the block again at each bad line took minutes for a
        block of Latin-1 rows). A piece of a line longer than a read, after the last newline,
        is left as it is: its end comes later."""
        lines = out.split(b"\n")
        changed = False
        for i in range(len(lines) - 1):
            line = lines[i]
            if line.isascii():
                continue
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                text = line[:80].decode("utf-8", "replace")
                self.undecodable[self._line + i] = f"invalid UTF-8: {text}"
                lines[i] = b"\x00"
                changed = True
        return b"\n".join(lines) if changed else out

    def _note_blank_lines(self, out: bytes) -> None:
        if not out:
            return
        # an empty line is a newline right after another (rare: found with find, not per line)
        if self._after_newline and (out[:1] == b"\n" or out[:2] == b"\r\n"):
            self.blank.add(self._line)
        for pattern in (b"\n\n", b"\n\r\n"):
            at = out.find(pattern)
            while at >= 0:
                self.blank.add(self._line + out.count(b"\n", 0, at + 1))
                at = out.find(pattern, at + 1)
        self._line += out.count(b"\n")
        self._after_newline = out[-1:] == b"\n"


def csv_string_chunks(
    path: Path, stats: RejectStats, block_size: int = BLOCK_SIZE
) -> Iterator[tuple[int, pl.DataFrame]]:
    """Read a (gzipped) CSV lazily as all-string polars chunks with their first line number.

    Rows with a wrong number of fields, or with bytes that are no UTF-8, are counted as
    malformed in ``stats`` (the rows around them are read). The formats read here never
    quote a field, so a stray ``"`` is a character of its field, not the start of a quoted
    field that swallows the rest of the file. A corrupt gzip block ends the stream with one
    truncated row, because a CSV reader cannot resynchronise after it; so does a last line
    with no end of line (a file cut inside a row).
    """
    names = csv_header(path)
    if not has_rows(path, header=True):
        return  # no reader opened on a header alone (pyarrow's could abort at exit)
    # Decompressing and parsing run on a thread of their own, a block ahead (pyarrow and
    # polars release the GIL): on a replay they overlap the event building instead of adding
    # to it. The thread only reads; every count goes into ``stats`` here, in order.
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=PREFETCH_BLOCKS)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                items.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        invalid: list[tuple[int, str]] = []  # lines counted as malformed, not yet handed on

        def skip(row: pacsv.InvalidRow) -> str:
            number = row.number if row.number is not None else -1
            why = source.undecodable.pop(number, None)  # a line _CompleteLines blanked out
            invalid.append((number, why or f"{row.actual_columns} fields: {row.text}"))
            return "skip"

        def runs(
            first: int, frame: pl.DataFrame, blank: set[int], out: list[tuple[int, pl.DataFrame]]
        ) -> int:
            """The batch's rows as runs of consecutive file lines, in ``out``, and the line
            after its last. Invalid lines (those of ``invalid``) hold no row; empty lines
            (``blank``) are all-null rows, dropped here. The parser reads a block ahead, so
            either may already hold later batches' lines: only those this batch reaches are
            used."""
            skipped = {n for n, _ in invalid}
            height = frame.height
            end = first + height
            if not any(first <= n < end for n in skipped) and not any(
                first <= n < end for n in blank
            ):
                out.append((first, frame))  # the common case: every row on its own line
                number = end
            else:
                numbers, number = [], first
                for _ in range(height):
                    while number in skipped:
                        number += 1
                    numbers.append(number)
                    number += 1
                start = None
                for i in range(height + 1):
                    empty = i == height or numbers[i] in blank
                    if i < height and empty:
                        blank.discard(numbers[i])
                    if start is not None and (empty or numbers[i] != numbers[start] + i - start):
                        out.append((numbers[start], frame.slice(start, i - start)))
                        start = None
                    if start is None and not empty:
                        start = i
            while number in skipped:  # invalid lines right after the batch's last row
                number += 1
            return number

        line = 2  # line 1 is the header
        try:
            with open_binary(path) as stream:
                source = _CompleteLines(stream)
                try:
                    reader = pacsv.open_csv(
                        source,
                        # no readahead: an invalid row is reported while its own block is
                        # parsed, so each count lands before the rows it sits among (with
                        # readahead the next block's went in early, as timing fell)
                        read_options=pacsv.ReadOptions(
                            block_size=block_size,
                            use_threads=False,
                            # the header's names as the loaders see them (stripped)
                            column_names=names,
                            skip_rows=1,
                        ),
                        parse_options=pacsv.ParseOptions(
                            invalid_row_handler=skip,
                            ignore_empty_lines=False,
                            # no format read here quotes: a stray '"' is a bad field, not
                            # a quoted one running on to the end of the file
                            quote_char=False,
                        ),
                        convert_options=pacsv.ConvertOptions(
                            column_types={name: pa.string() for name in names},
                            strings_can_be_null=True,
                            # "nan"/"NULL" stay text: NaN is non-finite, not missing
                            null_values=[""],
                        ),
                    )
                except (OSError, pa.ArrowInvalid, EOFError) as exc:
                    put("truncated", [(line, f"unreadable data: {exc}")])
                    return
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        break
                    except (OSError, pa.ArrowInvalid, EOFError) as exc:
                        if invalid:
                            put("malformed", invalid)
                        put("truncated", [(line, f"unreadable data: {exc}")])
                        return
                    frame = pl.from_arrow(batch)
                    assert isinstance(frame, pl.DataFrame)
                    parts: list[tuple[int, pl.DataFrame]] = []
                    line = runs(line, frame, source.blank, parts)
                    # each invalid line is counted just before the rows after it: the parser
                    # may have met the next block's already (when it did depends on timing),
                    # and a count landing early differs from run to run in what a replay
                    # stopped at an event reports
                    mine = sorted(r for r in invalid if r[0] < line)
                    invalid[:] = [r for r in invalid if r[0] >= line]
                    at = 0
                    for part in parts:
                        upto = at
                        while upto < len(mine) and mine[upto][0] < part[0]:
                            upto += 1
                        if upto > at and not put("malformed", mine[at:upto]):
                            return
                        at = upto
                        if not put("frame", part):
                            return
                    if at < len(mine) and not put("malformed", mine[at:]):
                        return
                if invalid:
                    put("malformed", invalid)
                if source.error is not None:
                    cut = f"{path}: cut or corrupt after line {line - 1}: {source.error}"
                    put("truncated", [(line, cut)])
                elif source.unterminated is not None:
                    text = source.unterminated[:80].decode("utf-8", "replace")
                    cut = f"{path}: last line has no end of line (cut inside a row?): {text}"
                    put("truncated", [(source.last_line, cut)])
        except BaseException as exc:  # reported where the stream is read
            put("error", exc)
        finally:
            put("end", None)

    worker = threading.Thread(target=read, name=f"csv {path.name}", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "frame":
                yield value
            elif kind == "malformed":  # (line, detail) of each row counted as malformed
                for number, detail in value:
                    stats.reject(RowReject.MALFORMED, number, detail)
            elif kind == "truncated":  # the file's readable part ends here
                for number, detail in value:
                    stats.reject(RowReject.TRUNCATED, number, detail)
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()  # a reader left early (the data's end_ns): the thread ends, file closed
        worker.join()  # no reader thread (nor arrow reader it owns) outlives the stream


def mark_bad(raw: pl.DataFrame, typed: pl.DataFrame, columns: dict[str, str]) -> pl.DataFrame:
    """Add ``_bad``: a raw field was present but did not parse to its typed column."""
    # Only a null typed value can be bad: a column that parsed everywhere needs no look at
    # its raw strings (stripping them was ~7 % of a depth replay).
    checks = [
        pl.Series(raw[src].is_not_null() & (raw[src].str.strip_chars() != ""))
        & typed[dst].is_null()
        for dst, src in columns.items()
        if typed[dst].null_count()
    ]
    if not checks:
        return typed.with_columns(pl.lit(False).alias("_bad"))
    bad = checks[0]
    for check in checks[1:]:
        bad = bad | check
    return typed.with_columns(bad.fill_null(True).alias("_bad"))
