"""``sapphire query RUN_ID --table fills``: print a run's stored rows from the Parquet store."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from sapphire.storage.schemas import TABLES

if TYPE_CHECKING:
    from sapphire.adapters.stores import StoreSource

DEFAULT_ROOT_ENV = "SAPPHIRE_STORE_ROOT"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "query", help="show a run's stored rows (Parquet store)", description=__doc__
    )
    parser.add_argument("run_id", help="run id to select")
    parser.add_argument(
        "--table",
        default=None,
        help=f"table to print ({', '.join(sorted(TABLES))}); omitted: a per-table summary",
    )
    parser.add_argument(
        "--root",
        default=os.environ.get(DEFAULT_ROOT_ENV, "runs/store"),
        help=f"store root (default: ${DEFAULT_ROOT_ENV} or ./store)",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="read from the store of this system config (Parquet root or BigQuery dataset)",
    )
    parser.add_argument("--symbol", default=None, help="only this symbol")
    parser.add_argument("--limit", type=int, default=50, help="rows to print (0: all)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.set_defaults(handler=run)


def _source(args: argparse.Namespace) -> StoreSource:
    """The store to read: ``--config``'s (Parquet or BigQuery), else the Parquet ``--root``."""
    from sapphire.adapters.stores import ParquetSource, open_source
    from sapphire.config.system import load_config

    if args.config:
        return open_source(load_config(args.config))
    if not Path(args.root).is_dir():
        raise FileNotFoundError(
            f"no store at {args.root} (use the 'store' path a run printed, or --config)"
        )
    return ParquetSource(args.root)


def summarize(source: StoreSource, run_id: str) -> pl.DataFrame:
    """Row count, symbols and time span of ``run_id`` in each table of ``source``."""
    parts = [
        source.read(table, run_id)
        .select(
            pl.lit(table).alias("table"),
            pl.len().alias("rows"),
            pl.col("symbol").n_unique().alias("symbols"),
            pl.col("ts_ns").min().alias("first_ts_ns"),
            pl.col("ts_ns").max().alias("last_ts_ns"),
        )
        .collect()
        for table in sorted(TABLES)
    ]
    return pl.concat(parts)


def run(args: argparse.Namespace) -> int:
    try:
        source = _source(args)
        summary = summarize(source, args.run_id)
        if args.table is None:
            frame = summary
        else:
            lf = source.read(args.table, args.run_id)
            if args.symbol is not None:
                lf = lf.filter(pl.col("symbol") == args.symbol)
            lf = lf.sort("ts_ns", "producer_id", "seq")
            if args.limit > 0:
                lf = lf.head(args.limit)
            frame = lf.collect()
    except FileNotFoundError as exc:
        print(f"sapphire query: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bad config, schema, store or connection: one line, never a trace
        print(f"sapphire query: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    where = source.location
    if int(summary["rows"].sum()) == 0:
        print(f"sapphire query: run {args.run_id!r} has no rows in {where}", file=sys.stderr)
        return 1
    if args.format == "csv":
        sys.stdout.write(frame.write_csv())
    elif args.format == "json":
        sys.stdout.write(frame.write_json() + "\n")
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=40):
            print(frame)
    return 0
