"""Reading the Parquet store back: lazy scans with partition pruning, and run summaries.

Money columns come back as ``pl.Decimal(38, 9)`` (see :mod:`sapphire.storage.schemas`): they
sum and compare as exact decimals with no cast, and ``to_list()`` gives ``Decimal`` values.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import polars as pl
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source

from sapphire.storage.schemas import table_schema

_HIVE = {"date": pl.Date(), "symbol": pl.String()}


_PLAIN_ID = re.compile(r"^[A-Za-z0-9._-]+$")  # no glob character in the file pattern
# The embedded store's file names, one rule for its writer (ParquetBackend) and its readers:
# a flush's file ``part-<sink>-<12-digit flush>.parquet``; a merge's, until its sources are
# gone, the same name hidden (``.<name>.merging``: no read's pattern lists it)
FLUSH_DIGITS = 12


def part_name(sink_id: str, flush_id: int) -> str:
    return f"part-{sink_id}-{flush_id:0{FLUSH_DIGITS}d}.parquet"


def part_pattern(sink_id: str) -> str:
    """A glob of ``sink_id``'s flush files (``sink_id`` as a glob: escape it if need be)."""
    return f"part-{sink_id}-{'[0-9]' * FLUSH_DIGITS}.parquet"


def merging_name(name: str) -> str:
    return f".{name}.merging"


class IncompleteRunError(OSError):
    """A run's table reads fewer rows than its sink committed: files of it are missing."""


def run_manifest(root: str | os.PathLike[str], run_id: str) -> Path:
    """The commit record of the sink named for ``run_id`` (see ``ParquetBackend``)."""
    return Path(root) / "_sapphire" / f"manifest-{run_id}.json"


# A read of a run is asked again this often, this far apart: a flush's move into place or a
# merge's gap (it removes its sources, then shows the merged file: 11-14 ms for 63 files on
# a loaded 2-vCPU VM) is over well within one wait; a run stopped inside either stays so,
# and is said after 0.2 s.
_RECHECKS = 10
_RECHECK_S = 0.02

Marks = dict[str, int]  # producer -> the highest seq committed


def committed_marks(root: str | os.PathLike[str], table: str, run_id: str) -> Marks | None:
    """The run's sink's committed marks of ``table`` (its manifest's); None where it keeps no
    manifest (or an unreadable one): nothing to compare a read with."""
    try:
        marks = json.loads(run_manifest(root, run_id).read_bytes())["watermarks"]
        return {str(p): int(m) for p, m in (marks.get(table) or {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _incomplete(
    root: Path, table: str, run_id: str, rows: int, committed: int
) -> IncompleteRunError:
    staging = root / "_sapphire" / f"staging-{run_id}"
    # or a merge of the run's files stopped between removing them and showing the merged
    # file (ParquetBackend names it so that no read lists it)
    waiting = next(staging.glob(f"*#{table}#*"), None) or next(
        (root / table).rglob(merging_name(part_pattern(glob.escape(run_id)))), None
    )
    if waiting is not None:
        return IncompleteRunError(
            f"{root / table}: {rows:,} of the {committed:,} rows run {run_id} committed "
            f"are in place; the rest wait in {waiting.parent} (the run stopped while storing "
            "them: its --resume moves them)"
        )
    return IncompleteRunError(
        f"{root / table}: {rows:,} of the {committed:,} rows run {run_id} "
        "committed are readable: files of this run are missing or moved"
    )


@dataclass(frozen=True, slots=True)
class Listing:
    """The files a read of a table found, in path order, and whether a merge's hidden file
    was beside them (a merge may be inside its gap: some of its rows in no listed file)."""

    files: list[str]
    merging: bool


def list_parts(base: Path, pattern: str) -> Listing:
    """``base``'s files matching ``pattern`` (a file-name glob), in path order: the order
    polars read a glob's files in, which a merge's naming keeps rows in (``ParquetBackend.
    _plan_merge``). A merge happens within one partition folder, and each folder is read in
    one pass that also sees its hidden merging files."""
    files: list[str] = []
    merging = False
    hidden = merging_name(pattern)
    for folder, _dirs, names in os.walk(base):
        for name in names:
            if fnmatch.fnmatchcase(name, pattern):
                files.append(os.path.join(folder, name))
            elif fnmatch.fnmatchcase(name, hidden):
                merging = True
    files.sort()
    return Listing(files, merging)


def read_table(root: str | os.PathLike[str], table: str, run_id: str | None = None) -> pl.LazyFrame:
    """All committed rows of ``table`` (plus the ``date`` partition column), lazily.

    Filters on ``symbol``/``date`` prune partitions; a table never written yields an empty
    frame with the table's schema rather than an error. The files are listed when the frame
    is collected, each time it is.

    A read of a run whose sink keeps a manifest (``sapphire run``'s) is the rows the run had
    committed at one moment of the read, each once, or :class:`IncompleteRunError`. Each
    producer numbers its rows of a table from 0 with no gap and the manifest keeps the
    highest committed, so a manifest commits ``mark + 1`` rows a producer. Every row a read
    finds was committed before its file was shown, so a read finding as many rows as the
    manifest read after it commits holds each of them: the run as it stood then. Finding
    fewer (a flush committed meanwhile, not moved into place yet; a listing inside a merge's
    gap; a deleted file), the rows at or under the marks read before the listing are counted
    instead, and taken when all are there: the run as it stood when the read began (a later
    flush's rows left out: some of its files may be in place and some not, no state the run
    was ever in). Else the read is taken again a few times before it is an error. A listing
    never holds a row twice: a merged file is shown after its sources are removed, and each
    file is opened after the whole listing, so one holding both fails on the source -- a
    merge's removal of a listed file before it is opened (``No such file``) makes the read
    list again. Once opened, the files stay open for the read (their rows readable whatever
    a merge removes meanwhile), and the read streams; a read of more files than the
    process may hold open reads them by path, whole, and again if a merge removed one.

    A read of every run (or of a run without a manifest) has nothing to count against: one
    that listed a folder with a merge's hidden file beside it lists again, a few times,
    until none shows (a merge stopped by a crash keeps it until its run's ``--resume``: then
    it reads what is there).
    """
    schema = table_schema(table)
    out = {**schema.polars_schema, "date": pl.Date()}

    def source(
        columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, _batch: int | None
    ) -> Iterator[pl.DataFrame]:
        for attempt in range(_RECHECKS):
            # the files stay open while the read streams: a merge's removal of one (it is
            # unlinked, not overwritten) leaves its rows readable to the end of this read
            with ExitStack() as pins:
                files, marks = _pin(Path(root), table, run_id, pins)
                lf = _scan(files, table, run_id, marks)
                if predicate is not None:
                    lf = lf.filter(predicate)
                if columns is not None:
                    lf = lf.select(columns)
                if n_rows is not None:
                    lf = lf.head(n_rows)
                if all(fd is not None for _, fd in files):
                    # in batches, as a scan of the files streamed them: one frame of the
                    # whole read held every row of a 10 M-row query (0.7 GB, not 0.15)
                    yield from lf.collect_batches()
                    return
                # by path (more files than descriptors to spare, or no /proc/self/fd): a
                # merge may remove one mid-read, so read whole, and again if it did
                try:
                    frame = lf.collect()
                except FileNotFoundError:
                    if attempt + 1 == _RECHECKS:
                        raise
                    time.sleep(_RECHECK_S)
                    continue
            yield frame
            return

    return register_io_source(source, schema=out, explain_name=f"sapphire {table}")


_EVERY = "*.parquet"  # every run's files


def _files(root: Path, table: str, run_id: str | None) -> str:
    """The file-name glob of a read: a run's files carry its id (``part-<run id>-<12-digit
    flush>``: its sink's), so read only those, and a damaged file of another run does not
    fail this one's read. Anchored on the flush number: run ``demo``'s pattern matched run
    ``demo-2``'s files. A run with its own manifest has no rows elsewhere; without one (a sink
    not named for its run) every file is scanned and filtered by run id."""
    if run_id is not None and _PLAIN_ID.match(run_id):
        own = part_pattern(run_id)
        if run_manifest(root, run_id).exists() or next((root / table).rglob(own), None):
            return own
    return _EVERY


# each listed file and a descriptor open on it (None: read by its path, see _can_hold)
Pinned = list[tuple[Path, int | None]]


def _pin(
    root: Path, table: str, run_id: str | None, keep: ExitStack
) -> tuple[Pinned, Marks | None]:
    """The files of one consistent read, each opened (``keep`` closes them), and the marks
    its rows are cut at (None: every row of the files).

    Counted against the run's manifest (``sapphire run``'s sink keeps one): the marks read
    before the files are listed, then the files' rows (their footers) against the manifest
    read after; fewer, the rows at or under the first marks, if all are there (see
    :func:`read_table`). A file gone between the listing and its opening was removed by a
    merge: listed again. Without a manifest, listed again while a merge's hidden file shows
    (a merge may be inside its gap), a few times."""
    base = root / table
    files = _files(root, table, run_id)
    # read before the files are listed: each row committed by then is in them, or coming
    start = None if run_id is None or files == _EVERY else committed_marks(root, table, run_id)
    rows = 0
    for attempt in range(_RECHECKS):
        if attempt:
            time.sleep(_RECHECK_S)
        listing = list_parts(base, files)
        pins = ExitStack()
        held = _can_hold(len(listing.files))
        try:
            pinned = [(Path(f), _open(f, pins) if held else None) for f in listing.files]
        except FileNotFoundError:  # a merge removed it after the listing: list again
            pins.close()
            if attempt + 1 == _RECHECKS:
                raise  # gone each time: not a merge's move
            continue
        if start is None:
            if listing.merging and attempt + 1 < _RECHECKS:
                pins.close()
                continue
            keep.enter_context(pins)  # the last listing: a merge stopped by a crash stays
            return pinned, None
        assert run_id is not None  # a manifest's marks are a run's
        try:
            rows = sum(_footer_rows(path, fd) for path, fd in pinned)
            # read after: each row listed was committed by then (its file was shown after
            # its commit), so as many rows as that manifest commits are each of them
            if rows >= _total(committed_marks(root, table, run_id) or start):
                keep.enter_context(pins)
                return pinned, None  # the run as it stood then
            # fewer: a flush committed meanwhile not in place yet, or a merge's gap (or a
            # file missing): the rows committed before the listing, if all are there
            under = _scan(pinned, table, None, start, ("producer_id", "seq"))
            rows = int(under.select(pl.len()).collect().item())
        except FileNotFoundError:  # read by path, and a merge removed one: list again
            pins.close()
            if attempt + 1 == _RECHECKS:
                raise
            continue
        if rows >= _total(start):
            keep.enter_context(pins)
            return pinned, start
        pins.close()
    assert start is not None and run_id is not None  # the uncounted path returned
    raise _incomplete(root, table, run_id, rows, _total(start))


class DamagedFileError(OSError):
    """A store file that is no readable Parquet file (cut short, overwritten)."""


def _footer_rows(path: Path, fd: int | None) -> int:
    try:
        return int(pq.read_metadata(_source(path, fd)).num_rows)
    except OSError:
        raise
    except Exception as exc:  # pyarrow's ArrowInvalid for a file cut short: name the file
        raise DamagedFileError(f"{path}: not a readable Parquet file ({exc})") from None


def _open(path: str, pins: ExitStack) -> int:
    fd = os.open(path, os.O_RDONLY)
    pins.callback(os.close, fd)
    return fd


_FD_DIR = next((d for d in ("/proc/self/fd", "/dev/fd") if os.path.isdir(d)), "")
"""Where a path opens a descriptor's file, unlinked or not (Linux, BSD/macOS; "": none)."""


def _source(path: Path, fd: int | None) -> str:
    """What a scan opens: the held descriptor's file, else the file by its path."""
    return str(path) if fd is None else f"{_FD_DIR}/{fd}"


def _can_hold(files: int) -> bool:
    """May a read hold ``files`` descriptors at once? Up to half the process's limit,
    raised towards its hard limit where that is needed: held all at once, a read of a
    store of 300 files failed "Too many open files" under a limit of 256. Where no path
    reaches a descriptor's file (Windows), never: the files are read by path."""
    if not _FD_DIR:
        return False
    try:
        import resource
    except ImportError:  # pragma: no cover - no such module where there is no /dev/fd
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if files <= soft // 2:
        return True
    want = 2 * files + 256
    if hard != resource.RLIM_INFINITY and want > hard:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        return False
    return True


def _total(marks: Marks) -> int:
    return sum(mark + 1 for mark in marks.values())


def _scan(
    files: Pinned,
    table: str,
    run_id: str | None,
    marks: Marks | None,
    columns: tuple[str, ...] = (),
) -> pl.LazyFrame:
    """A lazy scan of the pinned ``files`` with the hive columns of their folders (``date``,
    ``symbol``), the run's rows only, and with ``marks`` the rows at or under them."""
    schema = table_schema(table).polars_schema
    parts = []
    for path, fd in files:
        lf = pl.scan_parquet(
            _source(path, fd),
            schema={**schema},
            # a column added since a file was written (fills.internal) reads as null there
            missing_columns="insert",
            hive_partitioning=False,
        )
        parts.append(lf.with_columns(**_hive(path)))
    if parts:
        lf = pl.concat(parts, how="vertical")
    else:
        lf = pl.LazyFrame(schema=schema).with_columns(pl.lit(None, dtype=pl.Date).alias("date"))
    if marks is not None:
        mark = pl.col("producer_id").replace_strict(marks, default=-1, return_dtype=pl.Int64)
        lf = lf.filter(pl.col("seq") <= mark)
    if run_id is not None:
        lf = lf.filter(pl.col("run_id") == run_id)
    return lf.select(columns) if columns else lf


def _hive(path: Path) -> dict[str, pl.Expr]:
    """The partition columns a file's folders name (``date=2024-08-08/symbol=BTC%2FUSDT``),
    as the hive scan read them: the date a Date, the symbol url-decoded."""
    out: dict[str, pl.Expr] = {}
    for part in path.parent.parts:
        key, eq, value = part.partition("=")
        if eq and key in _HIVE:
            text = unquote(value)
            if key == "date":
                out[key] = pl.lit(text).str.to_date("%Y-%m-%d")
            else:
                out[key] = pl.lit(text, dtype=_HIVE[key])
    out.setdefault("date", pl.lit(None, dtype=pl.Date))
    return out


def list_runs(root: str | os.PathLike[str], table: str) -> list[str]:
    runs = read_table(root, table).select(pl.col("run_id").unique().sort()).collect()
    return [str(r) for r in runs["run_id"].to_list()]


def damaged_files(root: str | os.PathLike[str]) -> list[Path]:
    """The Parquet files under a store root that cannot be read (cut short, overwritten): a
    scan of the store fails on one of them for every run and table, and says which only as
    "File out of specification"."""
    import pyarrow.parquet as pq

    bad: list[Path] = []
    for path in sorted(Path(root).rglob("*.parquet")):
        try:
            pq.read_metadata(path)
        except Exception:  # whatever pyarrow raises for a broken file
            bad.append(path)
    return bad
