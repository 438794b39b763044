"""Peak memory of a replay through `sapphire backtest`, for one recorded day and for all of
them back to back (issue 15, goal 5: below 1 GB RSS per process whatever the number of days).

Each case is the product command in its own process, so its peak RSS is that process's own
(``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it exits): the demo's three agents on the
shared Binance USDT-M BTCUSDT raw feeds (hftbacktest layout: depth, bookTicker, trades), every
event through venue, agents, risk, portfolio and the Parquet store.

    .venv/bin/python benchmarks/replay_memory.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
RAW = Path(os.environ.get("SAPPHIRE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "book"
DAYS = [
    "raw_hftbacktest/usdm_btcusdt_20230404.dat.gz",
    "raw_hftbacktest/usdm_btcusdt_20230405.dat.gz",
    "raw_hftbacktest/usdm_btcusdt_20240718.gz",
    "raw_hftbacktest/usdm_btcusdt_20240719.gz",
    "raw_hftbacktest/usdm_btcusdt_20240808.gz",
]


def run_case(files: list[str], tmp: Path, name: str) -> tuple[float, float, str]:
    raw = msgspec.yaml.decode((ROOT / "configs" / "demo.yaml").read_bytes())
    raw["data"] = {
        "source": "files",
        "files": [str(RAW / f) for f in files],
        "instrument_files": ["sample:instrument.json"],
        "clock": "exchange",
        "window_ns": 0,
        # the days are 15 months apart: a run over them all is refused by default (its
        # positions would carry across); memory is what is measured here, not PnL
        "max_session_gap_s": 0,
    }
    raw["storage"] = {"root": str(tmp / name)}
    config = tmp / f"{name}.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sapphire.cli",
            "backtest",
            "--config",
            str(config),
            "--run-id",
            name,
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise SystemExit(f"{name} failed: {done.stdout[-800:]} {done.stderr[-800:]}")
    head = next((ln for ln in done.stdout.splitlines() if ln.startswith(f"run {name}")), "")
    # ru_maxrss of children is the largest child so far: run the small case first
    return max(peak_kib, before) / 1024, wall, head


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        print("| replay | files | peak RSS MiB | wall s | sapphire backtest says |")
        print("|---|---|---|---|---|")
        for name, files in (("one-day", DAYS[-1:]), ("all-days", DAYS)):
            rss, wall, head = run_case(files, tmp, name)
            print(f"| {name} | {len(files)} | {rss:,.0f} | {wall:.1f} | {head} |")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
