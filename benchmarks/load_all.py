"""Load every file of ../shared/data through the product's loaders; stream the largest file.

    .venv/bin/python benchmarks/load_all.py [--runs 5] [--stream-runs 3]

Prints medians: whole data set load (s, rows/s) and rows/s per detected format (the
registry's ``detect`` + ``load_frames``, as every command loads a file); the USDT-M depth
fast path (``load_depth_frame`` + ``with_ticks``) against a bare ``pl.read_csv`` of the same
file as the baseline; typed-event streaming of that file (events/s); and the peak resident
memory of streaming the largest market-data file through ``stream_events`` (chunked, as a
replay reads it) against two baselines measured in the same run: a child that only imports,
and a child that loads the same file whole into frames.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from sapphire.data.hftbacktest import load_depth_frame
from sapphire.data.instruments import known_instrument, with_ticks
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.validation import DataFileError

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


def _peak_rss_kib() -> int:
    """The process's high-water resident set (VmHWM), from /proc: no psutil needed."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(mode: str, path: Path) -> None:
    """Runs in a fresh interpreter so its peak RSS is this one job's, not the parent's."""
    before = _peak_rss_kib()
    start = time.perf_counter()
    if mode == "stream":
        s = stream_events(path)
        rows = sum(1 for _ in s)
    elif mode == "whole":
        rows = sum(f.height for f in load_frames(path).values())
    else:
        rows = 0
    secs = time.perf_counter() - start
    print(before, _peak_rss_kib(), rows, f"{secs:.3f}")


def _measure_child(mode: str, path: Path) -> tuple[int, int, int, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]), int(out[1]), int(out[2]), float(out[3])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stream-runs", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min), cpus: {os.cpu_count()}")
    candidates = [
        p
        for p in sorted(SHARED.rglob("*"))
        if p.is_file() and p.name not in {"README.md", "SHA256SUMS"}
    ]
    files, skipped = [], []
    for p in candidates:
        try:
            fmt = detect(p).name
            load_frames(p)  # instrument metadata says "not market data" here
        except DataFileError:
            skipped.append(p.name)
            continue
        files.append((p, fmt))
    print(f"{len(skipped)} metadata files skipped (instrument lists, exchangeInfo)")

    def load_all() -> int:
        return sum(f.height for p, _ in files for f in load_frames(p).values())

    secs, rows = _median(load_all, args.runs)
    print(
        f"load_all: {len(files)} files, {rows:,} rows, median {secs:.3f} s, "
        f"{rows / secs / 1e6:.2f} M rows/s (runs={args.runs})"
    )

    by_format: dict[str, list[Path]] = {}
    for p, fmt in files:
        by_format.setdefault(fmt, []).append(p)
    print("| format | files | rows | median s | rows/s |")
    print("|---|---|---|---|---|")
    for fmt, paths in sorted(by_format.items()):
        secs, n = _median(
            lambda paths=paths: sum(f.height for p in paths for f in load_frames(p).values()),
            args.runs,
        )
        print(f"| {fmt} | {len(paths)} | {n:,} | {secs:.3f} | {n / secs:,.0f} |")  # type: ignore[operator]

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

    largest, largest_fmt = max(files, key=lambda pf: pf[0].stat().st_size)
    size_mib = largest.stat().st_size / 2**20
    print(f"largest file: {largest.name} ({size_mib:.1f} MiB on disk, {largest_fmt})")
    imports, _, _, _ = _measure_child("imports", largest)
    _, whole_peak, whole_rows, whole_s = _measure_child("whole", largest)
    _, stream_peak, stream_events_n, stream_s = _measure_child("stream", largest)
    mib = 1024
    print(f"peak RSS, interpreter + imports only (baseline): {imports / mib:.0f} MiB")
    print(
        f"peak RSS, loaded whole into frames: {whole_peak / mib:.0f} MiB "
        f"(+{(whole_peak - imports) / mib:.0f} MiB; {whole_rows:,} rows in {whole_s:.2f} s)"
    )
    print(
        f"peak RSS, streamed as typed events: {stream_peak / mib:.0f} MiB "
        f"(+{(stream_peak - imports) / mib:.0f} MiB; {stream_events_n:,} events in "
        f"{stream_s:.2f} s); stream/whole above baseline "
        f"{(stream_peak - imports) / max(whole_peak - imports, 1):.2f}x"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
