"""A read of a run streams its files in batches (``sapphire query`` and ``report`` over a
large run): read as one frame, a 10 M-row query held every row (0.7 GB where the scan of
the files took 0.15 GB)."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from pathlib import Path

import polars as pl

from sapphire.storage.query import read_table
from sapphire.storage.schemas import table_schema

FILES, ROWS = 4, 60_000


def _store(root: Path) -> None:
    """A run's ``pnl`` table in ``FILES`` flush files of ``ROWS`` rows, and its manifest."""
    schema = table_schema("pnl").polars_schema
    folder = root / "pnl" / "date=2024-08-09" / "symbol=BTC%2FUSDT"
    folder.mkdir(parents=True)
    money = ("realized_pnl_quote", "unrealized_pnl_quote", "fees_quote", "equity_quote")
    for f in range(FILES):
        seq = pl.int_range(f * ROWS, (f + 1) * ROWS, eager=True)
        frame = pl.DataFrame({"seq": seq}).with_columns(
            ts_ns=pl.col("seq") * 1000,
            agent_id=pl.when(pl.col("seq") % 3 == 0).then(pl.lit("a")).otherwise(pl.lit("b")),
            run_id=pl.lit("big"),
            producer_id=pl.lit("p"),
            position_lots=pl.col("seq") % 7,
            **{c: pl.lit(Decimal("1.5")).cast(schema[c]) for c in money if c in schema},
        )
        for name, dtype in schema.items():  # every other column of the table, as null
            if name not in frame.columns:
                frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(name))
        frame.select([c for c in schema if c != "symbol"]).cast(
            {c: t for c, t in schema.items() if c != "symbol"}
        ).write_parquet(folder / f"part-big-{f:012d}.parquet")
    (root / "_sapphire").mkdir()
    manifest = {"flush_id": FILES, "watermarks": {"pnl": {"p": FILES * ROWS - 1}}}
    (root / "_sapphire" / "manifest-big.json").write_text(json.dumps(manifest))


def test_a_runs_read_comes_in_batches_with_its_partition_columns(tmp_path: Path) -> None:
    _store(tmp_path)
    lf = read_table(tmp_path, "pnl", "big").filter(pl.col("agent_id") == "a")
    batches = list(lf.collect_batches())
    assert len(batches) > 1, "one frame: the whole read in memory at once"
    assert max(b.height for b in batches) < FILES * ROWS // 3
    whole = pl.concat(batches)
    assert whole.height == len(range(0, FILES * ROWS, 3))  # every committed row, once
    assert whole["seq"].n_unique() == whole.height
    # the partition folders' columns, as a hive scan gave them (the symbol url-decoded)
    assert whole["symbol"].unique().to_list() == ["BTC/USDT"]
    assert whole["date"].unique().to_list() == [datetime.date(2024, 8, 9)]


def test_a_read_of_more_files_than_descriptors_to_spare_reads_them_all(tmp_path: Path) -> None:
    """Held open all at once, a store of 300 files failed "Too many open files" under a
    limit of 256 (a read of every run opens every file of the table). Such a read raises
    the soft limit where the hard one allows it, else reads the files by path."""
    import subprocess
    import sys

    folder = tmp_path / "pnl" / "date=2024-08-09" / "symbol=BTCUSDT"
    folder.mkdir(parents=True)
    schema = table_schema("pnl").polars_schema
    row = {c: pl.Series([None], dtype=t) for c, t in schema.items() if c != "symbol"}
    for f in range(300):
        frame = pl.DataFrame(row).with_columns(
            seq=pl.lit(f, dtype=schema["seq"]), run_id=pl.lit(f"r{f % 3}")
        )
        frame.write_parquet(folder / f"part-r{f % 3}-{f:012d}.parquet")
    script = (
        "import resource, sys\n"
        "from sapphire.storage import query\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "low = sys.argv[2] == 'low'\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256 if low else hard))\n"
        "print(query.read_table(sys.argv[1], 'pnl').collect().height)\n"
    )
    for hard in ("low", "keep"):  # by path (no room), then a raised soft limit
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), hard],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-500:]
        assert done.stdout.strip() == "300"
