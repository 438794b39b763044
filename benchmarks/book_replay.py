"""Replay the USDT-M BTCUSDT depth recording through the fast book and through L2Book.

    .venv/bin/python benchmarks/book_replay.py [--repeats 5] [--use-cache]

Prints: load seconds, numba compile seconds (a fresh cache dir unless --use-cache, so it
is a real compile), batch updates/s (median of repeats, BBO recorded after every row),
per-update p50/p95/p99 of the single-update entry point, the same for the pure-Python
L2Book (with its sequencing), and the ratios. Pin it to one core with ``taskset -c 0``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from sapphire.book.l2 import L2Book
from sapphire.model.events import BookDelta, BookSnapshot, Side

# sapphire.book.fast / .sync (numba) are imported in main(), after NUMBA_CACHE_DIR is set.

REPO = Path(__file__).resolve().parents[1]
FILE = "book/hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz"
TICK, LOT = 0.1, 0.001
IDS = ("first_update_id", "final_update_id", "prev_final_update_id")


def shared_data() -> Path:
    override = os.environ.get("SAPPHIRE_SHARED_DATA")
    return Path(override) if override else REPO.parent / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--use-cache", action="store_true", help="keep numba's on-disk cache")
    args = ap.parse_args()
    if not args.use_cache:
        # Must be set before numba is imported, so the compile time below is a real compile.
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="sapphire-numba-")

    path = shared_data() / FILE
    if not path.is_file():
        print(f"data file not found: {path}", file=sys.stderr)
        return 1

    # -- load ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    df = pl.read_csv(
        path,
        columns=["is_snapshot", *IDS, "side", "price", "qty"],
        schema_overrides={
            "is_snapshot": pl.Int8,
            **{c: pl.Int64 for c in IDS},
            "side": pl.Utf8,
            "price": pl.Float64,
            "qty": pl.Float64,
        },
    ).with_columns(
        pl.col(*IDS).fill_null(0),
        side=pl.when(pl.col("side") == "bid").then(1).otherwise(-1).cast(pl.Int8),
        price=(pl.col("price") / TICK).round().cast(pl.Int64),
        qty=(pl.col("qty") / LOT).round().cast(pl.Int64),
    )
    cols = {c: df[c].to_numpy() for c in df.columns}
    load_s = time.perf_counter() - t0
    n_rows = df.height
    print(f"file                 {path.name}: {n_rows:,} rows")
    print(f"load (polars csv.gz -> int ticks/lots columns)  {load_s:8.3f} s")

    # -- numba compile (first calls on a tiny slice) ------------------------------------------
    t0 = time.perf_counter()
    from sapphire.book.fast import FastBook, replay_depth
    from sapphire.book.sync import sync_plan

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tiny = slice(0, 3000)
    sync_plan(*(cols[c][tiny] for c in ("is_snapshot", *IDS)))
    replay_depth(cols["side"][tiny], cols["price"][tiny], cols["qty"][tiny])
    FastBook().update(1, 100, 1)
    compile_s = time.perf_counter() - t0
    print(
        f"numba compile (excluded below){'' if not args.use_cache else ' [cache]'}"
        f"                {compile_s:8.3f} s  (import {import_s:.3f} s)"
    )

    # -- sequencing plan + batch replay ----------------------------------------------------------
    t0 = time.perf_counter()
    plan = sync_plan(*(cols[c] for c in ("is_snapshot", *IDS)))
    plan_s = time.perf_counter() - t0
    side, price, qty = (cols[c][plan.order] for c in ("side", "price", "qty"))
    n = len(plan.order)
    print(
        f"sync_plan            {plan_s:8.3f} s  {n:,} rows to apply, gaps {plan.gaps}, "
        f"stale {plan.stale}"
    )

    def batch(record: bool) -> tuple[float, FastBook]:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            book, _ = replay_depth(side, price, qty, reset=plan.reset, record=record)
            times.append(time.perf_counter() - t)
        return statistics.median(times), book

    def end_to_end() -> float:
        t = time.perf_counter()
        p = sync_plan(*(cols[c] for c in ("is_snapshot", *IDS)))
        s, pr, q = (cols[c][p.order] for c in ("side", "price", "qty"))
        replay_depth(s, pr, q, reset=p.reset, record=True)
        return time.perf_counter() - t

    e2e_s = statistics.median(end_to_end() for _ in range(args.repeats))
    rec_s, book = batch(True)
    norec_s, _ = batch(False)
    fast_ups = n / rec_s
    print(
        f"fast batch replay, BBO recorded   {rec_s:8.4f} s  {fast_ups / 1e6:8.2f} M updates/s "
        f"(median of {args.repeats})"
    )
    print(
        f"fast batch replay, no recording   {norec_s:8.4f} s  {n / norec_s / 1e6:8.2f} M updates/s"
    )
    print(
        f"fast end to end (plan+gather+replay) {e2e_s:8.4f} s  {n_rows / e2e_s / 1e6:8.2f} M rows/s"
    )
    print(
        f"  window {book.capacity:,} ticks, far levels dropped {book.dropped}, final BBO "
        f"{book.best_bid()} / {book.best_ask()}"
    )

    # -- per-update latency, single-update entry point -------------------------------------------
    clock = time.perf_counter_ns
    overhead = np.empty(200_000, dtype=np.int64)
    for i in range(overhead.shape[0]):
        t = clock()
        overhead[i] = clock() - t
    timer_ns = float(np.median(overhead))

    fb = FastBook()
    lat = np.empty(n, dtype=np.int64)
    sides, prices, qtys, resets = side.tolist(), price.tolist(), qty.tolist(), plan.reset.tolist()
    update = fb.update
    for i in range(n):
        if resets[i]:
            fb.clear()
        s, p, q = sides[i], prices[i], qtys[i]
        t = clock()
        update(s, p, q)
        lat[i] = clock() - t
    assert fb.best_bid() == book.best_bid() and fb.best_ask() == book.best_ask()
    p50, p95, p99 = (float(np.percentile(lat, x)) / 1e3 for x in (50, 95, 99))
    print(
        f"fast per-update (FastBook.update)  p50 {p50:6.2f} us  p95 {p95:6.2f} us  "
        f"p99 {p99:6.2f} us  (timer overhead {timer_ns / 1e3:.2f} us included)"
    )

    ok = fast_ups >= 1e6 and p95 <= 5.0
    print(f"goal (>= 1 M updates/s batch, per-update p95 <= 5 us): {'met' if ok else 'NOT met'}")

    # -- baseline: L2Book, file order, with its own sequencing -----------------------------------
    t0 = time.perf_counter()
    events = build_events(cols)
    build_s = time.perf_counter() - t0
    print(f"L2Book events built (BookDelta structs)  {build_s:8.3f} s  {len(events):,} events")

    def l2_run(timed: bool) -> tuple[float, L2Book, np.ndarray]:
        l2 = L2Book("BTCUSDT")
        apply_delta, apply_snapshot = l2.apply_delta, l2.apply_snapshot
        l2_lat = np.empty(len(events), dtype=np.int64)
        t = time.perf_counter()
        for i, ev in enumerate(events):
            if timed:
                t1 = clock()
            if isinstance(ev, BookDelta):
                apply_delta(ev)
            else:
                apply_snapshot(ev)
            if timed:
                l2_lat[i] = clock() - t1
        return time.perf_counter() - t, l2, l2_lat

    l2_s = statistics.median(l2_run(False)[0] for _ in range(args.repeats))
    _, l2, l2_lat = l2_run(True)
    l2_ups = n_rows / l2_s
    is_delta = np.array([isinstance(e, BookDelta) for e in events])
    q50, q95, q99 = (float(np.percentile(l2_lat[is_delta], x)) / 1e3 for x in (50, 95, 99))
    same = (l2.best_bid(), l2.best_ask()) == (book.best_bid(), book.best_ask())
    print(
        f"L2Book replay (baseline)          {l2_s:8.4f} s  {l2_ups / 1e6:8.2f} M updates/s "
        f"(median of {args.repeats}; gaps {l2.gaps}, stale {l2.stale}; same final BBO: {same})"
    )
    print(
        f"L2Book per-update (apply_delta)   p50 {q50:6.2f} us  p95 {q95:6.2f} us  p99 {q99:6.2f} us"
    )
    print(f"ratio fast/L2Book throughput      {fast_ups / l2_ups:8.1f} x")
    print(f"ratio L2Book/fast per-update p50  {q50 / p50:8.1f} x")
    return 0


def build_events(cols: dict[str, npt.NDArray[np.int64]]) -> list[BookDelta | BookSnapshot]:
    """One BookDelta per level; a snapshot (consecutive is_snapshot rows) is one event."""
    keys = list(zip(*(cols[c].tolist() for c in ("is_snapshot", *IDS)), strict=True))
    sides = {1: Side.BUY, -1: Side.SELL}
    out: list[BookDelta | BookSnapshot] = []
    bids: list[tuple[int, int]] = []
    asks: list[tuple[int, int]] = []
    rows = zip(
        keys, cols["side"].tolist(), cols["price"].tolist(), cols["qty"].tolist(), strict=True
    )
    for k, ((snap, first, final, prev), side, price, qty) in enumerate(rows):
        last = k + 1 == len(keys) or keys[k + 1] != keys[k]
        if snap:
            (bids if side == 1 else asks).append((price, qty))
            if last:
                out.append(
                    BookSnapshot(
                        ts_event_ns=0,
                        symbol="BTCUSDT",
                        bids=tuple(bids),
                        asks=tuple(asks),
                        update_id=final,
                    )
                )
                bids, asks = [], []
            continue
        out.append(
            BookDelta(
                ts_event_ns=0,
                symbol="BTCUSDT",
                side=sides[side],
                price_ticks=price,
                qty_lots=qty,
                first_update_id=first,
                final_update_id=final,
                prev_final_update_id=prev,
                last_in_batch=last,
            )
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
