"""Embedded Parquet store: a hive-partitioned dataset per table, committed atomically.

Layout under ``root``::

    <table>/date=YYYY-MM-DD/symbol=<url-encoded>/part-<sink>-<flush>.parquet   (visible data)
    _sapphire/manifest-<sink>.json                                           (commit record)
    _sapphire/staging-<sink>/<flush>#<table>#date=..#symbol=..#part-...parquet   (in flight)

A flush is a small two-phase commit: (1) every file of the flush is written (and fsynced)
into its staging folder, invisible to readers; (2) the manifest, holding the flush id and the
producers' high-water marks, replaces the old one with ``os.replace`` -- this is the commit
point; (3) staged files are moved into the dataset with ``os.replace``. On start,
:meth:`ParquetBackend.recover` rolls a staged flush forward if the manifest committed it and
deletes it otherwise, so the visible rows always equal the manifest's marks.

One sink (``sink_id``) owns one manifest; several sinks may share a root if they write
disjoint producers.

Compaction. A live run commits about once a second, one file per table and partition each
time: 86 k files a day per table, which made every read slower (3,600 files: 1.2 s). So a
flush may *merge* its new rows of a partition with this sink's earlier files there (never
another sink's) into the one file it writes, ``part-<sink>-<flush>``: the flush's own
commit carries the merge. The merged file is staged like any other; the manifest, the
commit point, lists the files it replaces (``retire``). Publishing moves the merged file
into its folder under a name no reader lists (``.part-<sink>-<flush>.parquet.merging``),
removes the files it replaces, then renames it to its own name. A crash before the
manifest leaves the old files untouched (the staged merge is deleted); after it,
:meth:`ParquetBackend.recover` finishes the moves and removals, so after recovery the
visible rows are exactly the committed ones, each once. :meth:`ParquetBackend._plan_merge`
says when a partition is merged.

Readers list files (``query.read_table``): no order of k unlinks and a rename makes them one
step for a reader. The sources are removed *before* the merged file appears, never after,
so a listing never holds a row twice (which no reader could tell from two real rows): a
reader opens its files after listing all of them, and one that listed both a source and
the merged file finds the source gone. One that listed a file a merge then removes, before
opening it, fails ("No such file") and lists again. One taken inside the gap (k unlinks
then one rename: 11-14 ms for 63 files on a loaded 2-vCPU VM's ext4, once every
``compact_at`` flushes of a partition) misses those rows, as one misses a committed flush
not yet moved: a read of a run counts its rows against the manifest and reads again
(``read_table``), a read of every run lists again while a hidden merging file shows. A
process dying inside the gap leaves those rows in the hidden merged file (a read of the run
says so) until its sink starts again (``--resume``) and shows it. A move that fails (a full
disk) fails before anything is removed: the flush waits in staging as any other.

Files are encoded by pyarrow's Parquet writer, with settings chosen by measurement (ad hoc,
30 k real tick rows in 2,000-row chunks, one thread): dictionary pages for string columns
only (identity columns repeat one value per write), DELTA_BINARY_PACKED for timestamps,
sequence numbers and ids (near-monotone), plain for the rest, zstd at pyarrow's default
level 1. That is 0.20 us of CPU per row (with the conversion to Arrow) and 160 kB, against
0.34-0.40 us and 297 kB for polars' own writer (zstd level 3), 0.37 us and 477 kB with
dictionary pages on every column, and 0.28 us for zstd level 3 at no smaller size.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sapphire.storage.files import atomic_write_bytes, fsync_dir
from sapphire.storage.query import FLUSH_DIGITS, merging_name, part_name
from sapphire.storage.sink import CommitState

Compression = Literal["zstd", "lz4", "snappy", "uncompressed"]
# zstd: 30 k real tick rows take 160 kB against 264 (lz4), 241 (snappy) and 820 kB (none),
# for 0.20 us of CPU a row against 0.17-0.18 (the encodings dominate it); stored bytes are
# what recordings, backups and uploads pay for. Scratch stores can pass compression="lz4".
DEFAULT_COMPRESSION: Compression = "zstd"
_PYARROW_CODEC = {"zstd": "zstd", "lz4": "lz4", "snappy": "snappy", "uncompressed": "none"}

log = logging.getLogger(__name__)

_META = "_sapphire"
_SEP = "#"
_NS_PER_DAY = 86_400 * 1_000_000_000
_EPOCH = date(1970, 1, 1)
# a merged file's key-value metadata: how many flushes' files it holds (none: one)
_PARTS_KEY = b"sapphire.parts"

# Measured (2 vCPU VM, ext4; flushes of 3 tick rows, as a paper run's pnl): a read costs
# ~0.2 ms of CPU a file (4,096 files: 0.84-0.92 s; their rows in 1 file: 3.5 ms). Merging
# costs 0.58-0.63 ms of CPU a flush at 16 or 64 (0.75 at 256; 0.86-1.03 with 500-row
# flushes), against 2.9-3.8 ms to commit one. Over a day of 86,400 flushes a partition holds
# at most 60 files at 16 (each row rewritten 3.5 times), 146 at 64 (2.0 times) and 510 at
# 256 (1.75): 64 keeps a day's read of a partition to ~30 ms for ~half the rewrites of 16.
DEFAULT_COMPACT_AT = 64
# The most rows one merge writes: it holds them in memory (250 k tick rows: +106 MB of RSS,
# 0.13 s; 1 M: +384 MB, 0.41 s). A file of half as many is final, never merged again:
# 125-250 k rows is a good Parquet file already (a file's ~0.2 ms is lost in reading it).
DEFAULT_COMPACT_ROWS = 250_000


def partition_dir(table: str, day: str, symbol: str) -> str:
    # percent-encoding keeps "BTC/USDT:USDT" one path segment; polars decodes it on scan
    return f"{table}/date={day}/symbol={quote(symbol, safe='')}"


@dataclass(frozen=True, slots=True)
class _Piece:
    """One of this sink's files in a partition: the flush it is named for, how many flushes'
    files it holds, and its rows (-1: its footer cannot be read; it is never merged)."""

    flush_id: int
    parts: int
    rows: int


@dataclass(slots=True)
class _Plan:
    """What a staged flush changes beyond adding its files: per partition folder, the files
    of this sink its merged file replaces, and the folder's files once it is committed."""

    flush_id: int
    retire: dict[str, list[str]] = field(default_factory=dict)
    pieces: dict[str, list[_Piece]] = field(default_factory=dict)


class _UnreadableSource(Exception):
    def __init__(self, piece: _Piece, why: BaseException) -> None:
        super().__init__(str(why))
        self.piece = piece


class ParquetBackend:
    """:class:`~sapphire.storage.sink.SinkBackend` writing Parquet files under ``root``.

    ``compact_at``: a flush merges a partition's files of this sink once that many of one
    size would be there (see :meth:`_plan_merge`); None never merges. ``compact_rows``: the
    most rows a merge writes into one file."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        sink_id: str = "sink0",
        compression: Compression = DEFAULT_COMPRESSION,
        compression_level: int | None = None,
        durable: bool = True,
        compact_at: int | None = DEFAULT_COMPACT_AT,
        compact_rows: int = DEFAULT_COMPACT_ROWS,
    ) -> None:
        if not sink_id or "/" in sink_id or sink_id.startswith("."):
            raise ValueError(f"sink_id must be a plain name, got {sink_id!r}")
        if compact_at is not None and compact_at < 2:
            raise ValueError(f"compact_at must be >= 2 or None, got {compact_at}")
        if compact_rows < 2:
            raise ValueError(f"compact_rows must be >= 2, got {compact_rows}")
        self.root = Path(root)
        self.sink_id = sink_id
        self.compression: Compression = compression
        self.compression_level = compression_level
        self.durable = durable
        self.compact_at = compact_at
        self.compact_rows = compact_rows
        self._meta = self.root / _META
        self._manifest = self._meta / f"manifest-{sink_id}.json"
        self._staging = self._meta / f"staging-{sink_id}"
        self._known_dirs: set[Path] = set()
        self._unpublished: set[int] = set()
        self._own = re.compile(rf"part-{re.escape(sink_id)}-([0-9]{{{FLUSH_DIGITS}}})\.parquet")
        # partition folder -> this sink's files there as committed, oldest first (read from
        # the folder when first needed, then kept up to date by each commit)
        self._pieces: dict[str, list[_Piece]] = {}
        # committed flushes whose merges have not removed all they replace yet
        self._retiring: dict[int, dict[str, list[str]]] = {}
        self._plan: _Plan | None = None  # of the flush staged last, until it commits

    def _file_name(self, flush_id: int) -> str:
        return part_name(self.sink_id, flush_id)

    # ------------------------------------------------------------------ recovery
    def _load_manifest(self) -> dict[str, Any]:
        if not self._manifest.exists():
            return {}
        doc: dict[str, Any] = json.loads(self._manifest.read_text())
        return doc

    def read_manifest(self) -> CommitState:
        doc = self._load_manifest()
        if not doc:
            return CommitState()
        return CommitState(int(doc["flush_id"]), doc["watermarks"])

    def recover(self) -> CommitState:
        doc = self._load_manifest()
        state = CommitState(int(doc["flush_id"]), doc["watermarks"]) if doc else CommitState()
        retire = doc.get("retire") or {}
        self._retiring = {int(f): {d: list(n) for d, n in m.items()} for f, m in retire.items()}
        self._pieces.clear()
        staged = {self._flush_of(p) for p in self._staged()}
        for flush_id in sorted(staged | set(self._retiring)):
            if flush_id <= state.flush_id:
                # committed, not yet moved (or its merge not yet done): roll forward
                self._publish(flush_id)
            else:
                for p in self._staged(flush_id):  # never committed: roll back
                    p.unlink()
                self._retiring.pop(flush_id, None)
        return state

    def _staged(self, flush_id: int | None = None) -> list[Path]:
        if not self._staging.is_dir():
            return []
        pattern = "*.parquet" if flush_id is None else f"{flush_id:012d}{_SEP}*.parquet"
        return sorted(self._staging.glob(pattern))

    @staticmethod
    def _flush_of(staged: Path) -> int:
        return int(staged.name.split(_SEP, 1)[0])

    # ------------------------------------------------------------------ commit
    def commit(self, flush_id: int, frames: Mapping[str, pl.DataFrame], state: CommitState) -> None:
        for committed in sorted(self._unpublished):  # finish earlier commits first
            self._publish(committed)
            self._unpublished.discard(committed)
        self._stage(flush_id, frames)
        self._write_manifest(state)  # the commit point
        plan, self._plan = self._plan, None
        if plan is not None and plan.flush_id == flush_id:
            self._pieces.update(plan.pieces)
            if plan.retire:
                self._retiring[flush_id] = plan.retire
        try:
            self._publish(flush_id)
        except OSError as exc:
            # committed already: reporting failure would make the sink re-commit the same
            # flush id over these rows; finish the move on the next commit or recovery
            self._unpublished.add(flush_id)
            log.warning("parquet: flush %d committed, publishing deferred: %s", flush_id, exc)

    def finish(self) -> None:
        """The run's end: move every committed flush still staged (its move failed at its
        commit) into the store. Raises ``OSError`` where it still cannot: those rows are
        committed (the next start of this sink moves them) but no reader sees them yet."""
        for committed in sorted(self._unpublished):
            try:
                self._publish(committed)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"parquet: flush {committed} is committed but not moved into {self.root} "
                    f"({exc.strerror or exc}); it waits in {self._staging}, moved when this "
                    "run's sink starts again (--resume)",
                ) from exc
            self._unpublished.discard(committed)

    def _stage(self, flush_id: int, frames: Mapping[str, pl.DataFrame]) -> None:
        self._plan = plan = _Plan(flush_id)
        for leftover in self._staged(flush_id):  # an earlier failed attempt at this flush id
            leftover.unlink()
        self._staging.mkdir(parents=True, exist_ok=True)
        # a merge reads the files it replaces where readers find them: only over a store
        # whose earlier commits are all in place (what is known of its folders may be stale)
        merging = self.compact_at is not None and not self._unpublished
        if not merging:
            self._pieces.clear()
        name = self._file_name(flush_id)
        for table, frame in frames.items():
            if frame.height == 0:
                continue
            for day, symbol, part in _partitions(frame):
                iso = (_EPOCH + timedelta(days=day)).isoformat()
                folder = partition_dir(table, iso, str(symbol))
                # flat staging: one folder, the final path folded into the name ('#' never
                # occurs in a table name, a date or a percent-encoded symbol)
                rel = f"{folder}/{name}"
                target = self._staging / f"{flush_id:012d}{_SEP}{rel.replace('/', _SEP)}"
                if merging:
                    data, parts = self._merge_into(plan, folder, part)
                else:
                    data, parts = _arrow(part), 1
                self._write_arrow(data, part.schema, target, parts)
                if self.durable:
                    with open(target, "rb") as fh:
                        os.fsync(fh.fileno())
        if self.durable:
            fsync_dir(self._staging)  # the staged names must survive as long as the manifest

    def _merge_into(self, plan: _Plan, folder: str, part: pl.DataFrame) -> tuple[pa.Table, int]:
        """``part`` (this flush's rows of ``folder``) with the files of this sink there it
        absorbs (:meth:`_plan_merge`) before it, in flush order; and how many flushes' files
        that is. Records the merge in ``plan``."""
        pieces = self._pieces_in(folder)
        if pieces and pieces[-1].flush_id >= plan.flush_id:
            # a file named for this flush or a later one (flush ids started again: a lost
            # manifest?): merging would order rows wrongly, or retire the file it writes
            log.warning("parquet: %s holds flush %d or later; not merged", folder, plan.flush_id)
            self._pieces.pop(folder, None)
            return _arrow(part), 1
        while True:
            cut = self._plan_merge(pieces, part.height)
            try:
                merged = self._merged(folder, pieces[cut:], part)
            except _UnreadableSource as bad:  # a damaged file must not stop every commit
                name = self._file_name(bad.piece.flush_id)
                log.warning("parquet: %s/%s unreadable, not merged: %s", folder, name, bad)
                pieces = [_Piece(p.flush_id, p.parts, -1) if p == bad.piece else p for p in pieces]
                self._pieces[folder] = pieces
                continue
            break
        sources = pieces[cut:]
        parts = 1 + sum(p.parts for p in sources)
        if sources:
            plan.retire[folder] = [self._file_name(p.flush_id) for p in sources]
        plan.pieces[folder] = [*pieces[:cut], _Piece(plan.flush_id, parts, merged.num_rows)]
        return merged, parts

    def _merged(self, folder: str, sources: list[_Piece], part: pl.DataFrame) -> pa.Table:
        if not sources:
            return _arrow(part)
        paths = [self.root / folder / self._file_name(p.flush_id) for p in sources]
        try:
            # one read of them all: polars reads the files in parallel, ~4x faster than
            # pyarrow one by one (63 files of 3 rows: 10 ms against 35). A column added since
            # a file was written is null in its rows, as read_table reads the file alone.
            old = pl.read_parquet(
                paths,
                hive_partitioning=False,
                glob=False,
                schema=part.schema,
                missing_columns="insert",
            )
            return _arrow(pl.concat([old, part], rechunk=True))
        except (OSError, pl.exceptions.PolarsError) as exc:
            # a damaged file, or columns or types the table no longer has: file by file,
            # to tell which (that one is left alone) or to keep columns it does not know
            log.info("parquet: merging %s file by file: %s", folder, exc)
        data = _arrow(part).replace_schema_metadata(None)
        tables = []
        for piece, path in zip(sources, paths, strict=True):
            try:
                with pq.ParquetFile(path) as fh:
                    table = fh.read().replace_schema_metadata(None)
                pa.unify_schemas([table.schema, data.schema], promote_options="permissive")
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise _UnreadableSource(piece, exc) from exc
            tables.append(table)
        merged = pa.concat_tables([*tables, data], promote_options="permissive")
        names = data.column_names
        return merged.select([*names, *(n for n in merged.column_names if n not in names)])

    def _pieces_in(self, folder: str) -> list[_Piece]:
        pieces = self._pieces.get(folder)
        if pieces is not None:
            return pieces
        pieces = []
        try:
            entries = list(os.scandir(self.root / folder))
        except (FileNotFoundError, NotADirectoryError):  # no folder yet (or a file there)
            entries = []
        for entry in entries:
            own = self._own.fullmatch(entry.name)
            if own is None:
                continue
            try:
                meta = pq.read_metadata(entry.path)
                parts, rows = int((meta.metadata or {}).get(_PARTS_KEY, b"1")), meta.num_rows
            except (OSError, ValueError, pa.ArrowException) as exc:
                log.warning("parquet: %s unreadable, not merged: %s", entry.path, exc)
                parts, rows = 1, -1
            pieces.append(_Piece(int(own.group(1)), parts, rows))
        pieces.sort(key=lambda p: p.flush_id)
        self._pieces[folder] = pieces
        return pieces

    def _plan_merge(self, pieces: list[_Piece], rows: int) -> int:
        """How many of ``pieces`` (this sink's files of a partition, oldest first) a new file
        of ``rows`` rows absorbs: it takes ``pieces[cut:]``, and this returns ``cut``.

        Why size tiers, as in an LSM tree: a file's tier is log_T of the flushes it holds
        (T = ``compact_at``); when T files of tier 0 would be there (the new one counting as
        one) they become one file of tier 1, and so on up within the same flush (with T - 1
        of tier 1 there, that one makes one of tier 2, ...). A partition keeps at most T - 1
        files a tier: at T = 64 at most 146 of this sink's files through a day of 86,400
        flushes (27 at its end), and a row is rewritten once per tier it climbs, log_T of the
        flushes (2.0 times a row over that day): O(n log n) in all, a bounded cost per row.
        Merging the whole partition every T flushes would keep fewer files but rewrite it
        whole each time, O(n^2 / T): ~250 k pnl rows rewritten by each merge near a day's
        end, to add 192. The tier counts flushes, not rows: a pnl flush of 3 rows and a
        tick flush of 500 both start at tier 0, and T files of a tier make one of the next.

        A merge writes at most ``compact_rows`` rows (it holds them in memory); a file of
        half as many is final, never merged again. Where a full tier would pass the limit,
        its newest files that fit are merged (each under half the limit, they make a final
        file), and a file made final also takes the files before it that fit.

        Files merge only with their newest neighbours: a merged file holds its sources'
        rows in flush order and, named for this flush, sorts after the files left before it,
        so readers (polars reads a glob's files in path order) get the rows in the order
        they would without merging."""
        fanin = self.compact_at
        if fanin is None:
            return len(pieces)
        final = self.compact_rows // 2

        def tier(piece: _Piece) -> int:
            if piece.rows < 0 or piece.rows >= final:
                return -1  # final or unreadable: never merged
            parts, level = piece.parts, 0
            while parts >= fanin:
                parts //= fanin
                level += 1
            return level

        cut, total, level, full = len(pieces), rows, 0, False
        while True:
            start = cut
            while start > 0 and tier(pieces[start - 1]) == level:
                start -= 1
            if cut - start + 1 < fanin:
                break
            group = sum(p.rows for p in pieces[start:cut])
            if total + group > self.compact_rows:
                full = True
                break
            cut, total, level = start, total + group, level + 1
        if full or total >= final:
            # the file made is (or, taking what fits, becomes) final: it takes the files
            # before it that fit, which would otherwise never merge again
            while cut > 0 and tier(pieces[cut - 1]) >= 0:
                if total + pieces[cut - 1].rows > self.compact_rows:
                    break
                cut -= 1
                total += pieces[cut].rows
        return cut

    def _write_arrow(self, table: pa.Table, schema: pl.Schema, target: Path, parts: int) -> None:
        strings, deltas = _encodings(schema)
        if parts > 1:
            table = table.replace_schema_metadata({_PARTS_KEY: str(parts).encode()})
        pq.write_table(
            table,
            target,
            compression=_PYARROW_CODEC[self.compression],
            compression_level=self.compression_level,
            use_dictionary=strings,
            column_encoding=dict.fromkeys(deltas, "DELTA_BINARY_PACKED"),
            write_statistics=True,
        )

    def _write_manifest(self, state: CommitState) -> None:
        doc: dict[str, object] = {"flush_id": state.flush_id, "watermarks": state.watermarks}
        # the merges the manifest commits: recover() removes what they replace (a merge
        # staged but not committed is deleted, and what it would replace stays)
        retire = {str(f): m for f, m in sorted(self._retiring.items())}
        if self._plan is not None and self._plan.retire:
            retire[str(self._plan.flush_id)] = self._plan.retire
        if retire:
            doc["retire"] = retire
        atomic_write_bytes(self._manifest, json.dumps(doc).encode(), durable=self.durable)

    def _publish(self, flush_id: int) -> None:
        retire = self._retiring.get(flush_id, {})
        merged = self._file_name(flush_id)
        for staged in self._staged(flush_id):
            rel = staged.name.split(_SEP, 1)[1].replace(_SEP, "/")
            final = self.root / rel
            if final.parent not in self._known_dirs:
                final.parent.mkdir(parents=True, exist_ok=True)
                self._known_dirs.add(final.parent)
            if rel.rsplit("/", 1)[0] in retire:
                # a merged file goes into its folder under a name no reader lists first: the
                # move that can fail (a full disk) fails before anything is removed
                os.replace(staged, final.with_name(merging_name(merged)))
            else:
                os.replace(staged, final)
        for folder, names in retire.items():
            self._swap(folder, merged, names)
        if retire and self.durable:
            # the removals must be on disk before a manifest forgets them (the next one)
            for folder in retire:
                if (self.root / folder).is_dir():
                    fsync_dir(self.root / folder)
            if self._staging.is_dir():
                fsync_dir(self._staging)
        self._retiring.pop(flush_id, None)

    def _swap(self, folder: str, merged: str, names: list[str]) -> None:
        """Show ``folder``'s merged file in place of the files it replaces: those go first,
        then one rename shows it, so no listing ever holds a row twice (one in between
        misses their rows; module doc). Finishes a swap a crash stopped anywhere."""
        where = self.root / folder
        hidden = where / merging_name(merged)
        if hidden.exists():
            for name in names:
                if name != merged:
                    (where / name).unlink(missing_ok=True)
            os.replace(hidden, where / merged)
        elif (where / merged).exists():  # shown before a crash: finish the removal
            for name in names:
                if name != merged:
                    (where / name).unlink(missing_ok=True)
        else:  # its rows are nowhere else: keep them
            log.warning("parquet: merged %s/%s is missing; its sources kept", folder, merged)


def _arrow(frame: pl.DataFrame) -> pa.Table:
    # large strings (not views): the layout every Parquet reader maps to STRING
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


def _partitions(frame: pl.DataFrame) -> list[tuple[int, object, pl.DataFrame]]:
    """``frame`` split by (day of ``ts_ns``, ``symbol``), in first-seen order.

    A commit is mostly one day and one symbol: two min/max pairs prove it without the
    group-by, which gathers every row into a new frame (a fifth of a commit's time)."""
    ts, symbols = frame.get_column("ts_ns"), frame.get_column("symbol")
    if not ts.null_count() and not symbols.null_count():
        lo, hi = ts.min(), ts.max()
        first = symbols.min()
        if (
            isinstance(lo, int)
            and isinstance(hi, int)
            and lo // _NS_PER_DAY == hi // _NS_PER_DAY
            and first == symbols.max()
        ):
            return [(lo // _NS_PER_DAY, first, frame)]
    # an integer day number is ~5x cheaper than formatting a date per row
    dated = frame.with_columns((pl.col("ts_ns") // _NS_PER_DAY).alias("_day"))
    return [
        (int(day), symbol, part.drop("_day"))
        for (day, symbol), part in dated.group_by(["_day", "symbol"], maintain_order=True)
    ]


def _encodings(schema: pl.Schema) -> tuple[list[str], list[str]]:
    """Columns to dictionary-encode (strings) and to delta-encode (Int64 timestamps,
    sequence numbers and ids, which rise by small steps within a commit)."""
    strings = [n for n, t in schema.items() if t == pl.String]
    deltas = [
        n
        for n, t in schema.items()
        if t == pl.Int64 and (n == "seq" or n.endswith("_ns") or n.endswith("_id"))
    ]
    return strings, deltas
