"""Reading the Parquet store back: lazy scans with partition pruning, and run summaries.

Money columns come back as ``pl.Decimal(38, 9)`` (see :mod:`sapphire.storage.schemas`): they
sum and compare as exact decimals with no cast, and ``to_list()`` gives ``Decimal`` values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import polars as pl

from sapphire.storage.schemas import table_schema

_HIVE = {"date": pl.Date(), "symbol": pl.String()}


_PLAIN_ID = re.compile(r"^[A-Za-z0-9._-]+$")  # no glob character in the file pattern


def read_table(root: str | os.PathLike[str], table: str, run_id: str | None = None) -> pl.LazyFrame:
    """All committed rows of ``table`` (plus the ``date`` partition column), lazily.

    Filters on ``symbol``/``date`` prune partitions; a table never written yields an empty
    frame with the table's schema rather than an error.
    """
    schema = table_schema(table)
    base = Path(root) / table
    # a run's files carry its id (``part-<run id>-<flush>``: its sink's): read only those
    # where there are any, so a damaged file of another run does not fail this one's read
    files = "*.parquet"
    own = f"part-{run_id}-*.parquet"
    if run_id is not None and _PLAIN_ID.match(run_id) and next(base.rglob(own), None):
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
