"""Peak memory and time of reading a large run back through the product's store reader
(``ParquetSource``: what ``sapphire query`` and ``sapphire report`` call): a synthetic
``pnl`` table of one run, ``--files`` flush files of ``--rows`` rows each (10 M rows by
default), with its manifest. Each query runs in a process of its own, so its peak RSS is
that query's (``ru_maxrss`` of the child).

    .venv/bin/python benchmarks/store_read_memory.py [--files 40] [--rows 250000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import polars as pl

from sapphire.storage.schemas import table_schema

QUERY = """
import resource, sys, time
import polars as pl
from sapphire.adapters.stores import ParquetSource
source, op = ParquetSource(sys.argv[1]), sys.argv[2]
t = time.perf_counter()
if op == "first_rows":  # `sapphire query RUN --table pnl`: filter, order, the first rows
    out = source.first_rows("pnl", "big", {"agent_id": "a"}, 21)
elif op == "summary":  # `sapphire query RUN`: counts and time range
    out = source.summary("pnl", "big")
else:  # a report's per-agent sums
    lf = source.read("pnl", "big").group_by("agent_id")
    out = lf.agg(pl.col("position_lots").sum()).collect()
print(f"{time.perf_counter() - t:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}")
"""


def make_store(root: Path, files: int, rows: int) -> None:
    schema = table_schema("pnl").polars_schema
    folder = root / "pnl" / "date=2024-08-09" / "symbol=BTCUSDT"
    folder.mkdir(parents=True)
    money = ("realized_pnl_quote", "unrealized_pnl_quote", "fees_quote", "equity_quote")
    for f in range(files):
        seq = pl.int_range(f * rows, (f + 1) * rows, eager=True)
        frame = pl.DataFrame({"seq": seq}).with_columns(
            ts_ns=pl.col("seq") * 1000,
            agent_id=pl.when(pl.col("seq") % 3 == 0).then(pl.lit("a")).otherwise(pl.lit("b")),
            run_id=pl.lit("big"),
            producer_id=pl.lit("p"),
            position_lots=pl.col("seq") % 7,
            **{c: pl.lit(Decimal("1.5")).cast(schema[c]) for c in money if c in schema},
        )
        for name, dtype in schema.items():
            if name not in frame.columns:
                frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(name))
        cols = [c for c in schema if c != "symbol"]
        frame.select(cols).cast({c: schema[c] for c in cols}).write_parquet(
            folder / f"part-big-{f:012d}.parquet"
        )
    (root / "_sapphire").mkdir()
    manifest = {"flush_id": files, "watermarks": {"pnl": {"p": files * rows - 1}}}
    (root / "_sapphire" / "manifest-big.json").write_text(json.dumps(manifest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--rows", type=int, default=250_000)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        make_store(Path(tmp), args.files, args.rows)
        print(
            f"store: {args.files * args.rows:,} rows in {args.files} files, written in "
            f"{time.perf_counter() - started:.1f} s"
        )
        print("| query | s | peak RSS MiB |")
        print("|---|---|---|")
        for op in ("first_rows", "summary", "per_agent_sum"):
            done = subprocess.run(
                [sys.executable, "-c", QUERY, tmp, op], capture_output=True, text=True, check=True
            )
            seconds, rss = done.stdout.split()
            print(f"| {op} | {seconds} | {rss} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
