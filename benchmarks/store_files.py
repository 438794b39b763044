"""Files and read time of a long live run's store (issue 19): the real ``StepRows ->
StorageSink -> ParquetBackend`` path on a simulated clock, three agents writing a PnL row a
second and the sink committing when due (1 s or 500 rows), as the storage actor's timer does;
then the files of the ``pnl`` table and the time of ``read_table(...).collect()``, what
``sapphire query``, ``sapphire report`` and the console read. Before the store merged a
sink's small files, a day was ~86,400 files per table.

    .venv/bin/python benchmarks/store_files.py [--hours 1 4 24]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from sapphire.config.system import load_config
from sapphire.kernel import assembly
from sapphire.kernel.rows import StepRows
from sapphire.storage.parquet_backend import ParquetBackend
from sapphire.storage.query import read_table
from sapphire.storage.records import PnlSnapshot
from sapphire.storage.sink import StorageSink

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_723_161_256_000_000_000  # 2024-08-08 23:54 UTC: a run that crosses a day
NS = 1_000_000_000


def simulate(root: Path, seconds: int) -> tuple[int, int, float, float]:
    """(pnl files, rows read, read s, mean ms a commit) of ``seconds`` of a run."""
    inst = assembly.load_instruments(load_config(ROOT / "configs" / "demo.yaml").data)
    run = "store-files"
    rows = StepRows(run, "coordinator", False, instruments=inst)
    sink = StorageSink(
        ParquetBackend(root, sink_id=run, durable=False),
        batch_size=500,
        max_delay_ns=NS,
        auto_flush=False,
    )
    commits, commit_s = 0, 0.0
    for s in range(seconds):
        now = T0 + s * NS
        for agent in ("mm_as", "momentum", "meanrev"):
            rows.add_pnl(
                PnlSnapshot(
                    ts_event_ns=now,
                    agent_id=agent,
                    symbol="BTCUSDT",
                    position_lots=1,
                    realized_pnl_quote=Decimal(0),
                    unrealized_pnl_quote=Decimal(0),
                    fees_quote=Decimal(0),
                    equity_quote=Decimal(0),
                    funding_quote=Decimal(0),
                )
            )
        for table, frame in rows.take_new().items():
            sink.submit_frame(table, frame, now_ns=now)
        if sink.flush_due(now + NS):
            started = time.perf_counter()
            sink.flush(now + NS)
            commit_s += time.perf_counter() - started
            commits += 1
    sink.flush(T0 + (seconds + 1) * NS)
    files = len(list((root / "pnl").rglob("*.parquet")))
    started = time.perf_counter()
    n = read_table(root, "pnl", run).collect().height
    return files, n, time.perf_counter() - started, 1e3 * commit_s / max(commits, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 4.0])
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| simulated run | pnl files | rows | read_table().collect() | ms a commit |")
    print("|---|---|---|---|---|")
    for hours in args.hours:
        with tempfile.TemporaryDirectory() as tmp:
            files, n, read_s, commit_ms = simulate(Path(tmp), int(hours * 3600))
        print(f"| {hours:g} h | {files:,} | {n:,} | {read_s:.3f} s | {commit_ms:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
