"""Load every file of ../shared/data into canonical polars frames, and stream USDT-M depth.

    .venv/bin/python benchmarks/load_all.py [--runs 5] [--stream-runs 3]

Prints medians: whole data set load (s, rows/s); the USDT-M depth fast path
(``load_depth_frame`` + ``with_ticks``) against a bare ``pl.read_csv`` of the same file as
the baseline; and typed-event streaming of that file (events/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import polars as pl

from sapphire.data.hftbacktest import load_depth_frame
from sapphire.data.instruments import known_instrument, with_ticks
from sapphire.data.registry import detect, load_frames, stream_events

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAPPHIRE_SHARED_DATA", REPO.parent / "shared" / "data"))
DEPTH = SHARED / "book" / "hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz"


def _median(fn: object, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stream-runs", type=int, default=3)
    args = parser.parse_args()
    files = [
        p
        for p in sorted(SHARED.rglob("*"))
        if p.is_file()
        and p.name not in {"README.md", "SHA256SUMS"}
        and "exchangeInfo" not in p.name
    ]

    def load_all() -> int:
        return sum(f.height for p in files for f in load_frames(p).values())

    secs, rows = _median(load_all, args.runs)
    print(
        f"load_all: {len(files)} files, {rows:,} rows, median {secs:.3f} s, "
        f"{rows / secs / 1e6:.2f} M rows/s (runs={args.runs})"
    )

    inst = known_instrument("binance-usdm", "BTCUSDT")
    assert inst is not None
    base, raw = _median(lambda: pl.read_csv(DEPTH), args.runs)
    fast, frame = _median(lambda: with_ticks(load_depth_frame(DEPTH), inst), args.runs)
    n = raw.height  # type: ignore[attr-defined]
    print(f"usdm depth baseline pl.read_csv: {base:.3f} s ({n / base / 1e6:.2f} M rows/s)")
    print(
        f"usdm depth load_depth_frame+with_ticks: {fast:.3f} s ({n / fast / 1e6:.2f} M rows/s), "
        f"ratio vs baseline {fast / base:.2f}x"
    )
    assert frame.height == n  # type: ignore[attr-defined]

    def stream() -> tuple[int, int]:
        s = stream_events(DEPTH, inst)
        events = sum(1 for _ in s)
        return events, s.stats.rows_in

    secs, (events, levels) = _median(stream, args.stream_runs)  # type: ignore[misc]
    print(
        f"usdm depth typed-event stream: {events:,} events ({levels:,} level rows) median "
        f"{secs:.2f} s, {events / secs / 1e3:.0f} k events/s (runs={args.stream_runs})"
    )
    print(f"format of {DEPTH.name}: {detect(DEPTH).name}")


if __name__ == "__main__":
    main()
