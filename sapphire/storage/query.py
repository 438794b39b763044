"""Reading the Parquet store back: lazy scans with partition pruning, and run summaries.

Money columns come back as ``pl.Decimal(38, 9)`` (see :mod:`sapphire.storage.schemas`): they
sum and compare as exact decimals with no cast, and ``to_list()`` gives ``Decimal`` values.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

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


def check_complete(
    root: str | os.PathLike[str], table: str, run_id: str, count: Callable[[], int]
) -> None:
    """Raise :class:`IncompleteRunError` when ``count()`` (the rows a read of ``table``
    finds for the run) is fewer than the run's sink committed. Each producer numbers its
    rows of a table from 0 with no gap and the manifest keeps the highest committed, so a
    table holds ``mark + 1`` rows a producer; a deleted or lost file read as fewer rows.

    A run still writing commits a flush (its manifest) a moment before the flush's files
    are moved into place: a read in between is asked again a few times before it is an
    error; a run that stopped in between has them waiting in its staging folder (or, stopped
    inside a merge of its files, in a hidden file beside them)."""
    rows = 0
    for attempt in range(_RECHECKS):
        committed = _committed(root, table, run_id)
        if committed is None:
            return  # no record of this run's sink (or an unreadable one): nothing to compare
        rows = count()
        if rows >= committed:
            return
        if attempt + 1 < _RECHECKS:
            time.sleep(_RECHECK_S)
    staging = Path(root) / "_sapphire" / f"staging-{run_id}"
    # or a merge of the run's files stopped between removing them and showing the merged
    # file (ParquetBackend names it so that no read lists it)
    merging = Path(root) / table
    waiting = next(staging.glob(f"*#{table}#*"), None) or next(
        merging.rglob(merging_name(part_pattern(glob.escape(run_id)))), None
    )
    if waiting is not None:
        raise IncompleteRunError(
            f"{Path(root) / table}: {rows:,} of the {committed:,} rows run {run_id} committed "
            f"are in place; the rest wait in {waiting.parent} (the run stopped while storing "
            "them: its --resume moves them)"
        )
    raise IncompleteRunError(
        f"{Path(root) / table}: {rows:,} of the {committed:,} rows run {run_id} "
        "committed are readable: files of this run are missing or moved"
    )


_RECHECKS = 5
_RECHECK_S = 0.05


def _committed(root: str | os.PathLike[str], table: str, run_id: str) -> int | None:
    try:
        marks = json.loads(run_manifest(root, run_id).read_bytes())["watermarks"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sum(int(mark) + 1 for mark in (marks.get(table) or {}).values())


def read_table(root: str | os.PathLike[str], table: str, run_id: str | None = None) -> pl.LazyFrame:
    """All committed rows of ``table`` (plus the ``date`` partition column), lazily.

    Filters on ``symbol``/``date`` prune partitions; a table never written yields an empty
    frame with the table's schema rather than an error.
    """
    schema = table_schema(table)
    base = Path(root) / table
    # A run's files carry its id (``part-<run id>-<12-digit flush>``: its sink's): read only
    # those, so a damaged file of another run does not fail this one's read. Anchored on the
    # flush number: run ``demo``'s pattern matched run ``demo-2``'s files. A run with its own
    # manifest has no rows elsewhere; without one (a sink not named for its run) every file
    # is scanned and filtered by run id.
    files = "*.parquet"
    if run_id is not None and _PLAIN_ID.match(run_id):
        own = part_pattern(run_id)
        if next(base.rglob(own), None) is not None or run_manifest(root, run_id).exists():
            files = own
    if not base.is_dir() or next(base.rglob(files), None) is None:
        empty = pl.DataFrame(schema=schema.polars_schema).with_columns(
            pl.lit(None, dtype=pl.Date).alias("date")
        )
        lf = empty.lazy()
    else:
        lf = pl.scan_parquet(
            str(base / "**" / files),
            hive_partitioning=True,
            hive_schema=_HIVE,
            schema={**schema.polars_schema},
            # a column added since a file was written (fills.internal) reads as null there
            missing_columns="insert",
        )
    if run_id is not None:
        lf = lf.filter(pl.col("run_id") == run_id)
    return lf


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
