"""``sapphire query RUN_ID --table fills``: print a run's stored rows from the Parquet store."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import polars as pl

from sapphire.storage.query import read_table, run_summary
from sapphire.storage.schemas import TABLES, SchemaMismatchError

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
    parser.add_argument("--symbol", default=None, help="only this symbol")
    parser.add_argument("--limit", type=int, default=50, help="rows to print (0: all)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not Path(args.root).is_dir():
        print(
            f"sapphire query: no store at {args.root} (use the 'store' path a run printed)",
            file=sys.stderr,
        )
        return 2
    try:
        if args.table is None:
            frame = run_summary(args.root, args.run_id, sorted(TABLES))
        else:
            lf = read_table(args.root, args.table, args.run_id)
            if args.symbol is not None:
                lf = lf.filter(pl.col("symbol") == args.symbol)
            lf = lf.sort("ts_ns", "producer_id", "seq")
            if args.limit > 0:
                lf = lf.head(args.limit)
            frame = lf.collect()
        summary = (
            frame if args.table is None else run_summary(args.root, args.run_id, sorted(TABLES))
        )
    except (SchemaMismatchError, OSError, pl.exceptions.PolarsError) as exc:
        print(f"sapphire query: {exc}", file=sys.stderr)
        return 2
    if int(summary["rows"].sum()) == 0:
        print(f"sapphire query: run {args.run_id!r} has no rows in {args.root}", file=sys.stderr)
        return 1
    if args.format == "csv":
        sys.stdout.write(frame.write_csv())
    elif args.format == "json":
        sys.stdout.write(frame.write_json() + "\n")
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=40):
            print(frame)
    return 0
