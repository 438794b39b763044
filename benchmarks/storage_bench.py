"""Storage and cache figures: sink -> Parquet throughput and flush p99, Parquet compression,
BigQuery emulator batch 500 vs batch 1, cache get latency per level, cache value compression,
and the storage sink actor with several producers: group commit vs the synchronous flush.

Run:  .venv/bin/python benchmarks/storage_bench.py [--quick] [--no-bq]
      .venv/bin/python benchmarks/storage_bench.py --actor-only [--producers 4 --frame-rows 2000]
                                                   [--packed]
Data: real Binance USDT-M BTCUSDT trades (shared/data), repeated to reach the row counts.
"""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import statistics
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import psutil  # type: ignore[import-untyped]
import ray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actors.storage_sink import StorageSinkActor, pack_tables  # noqa: E402
from sapphire.adapters.redis_cache import RedisCache  # noqa: E402
from sapphire.storage import compression  # noqa: E402
from sapphire.storage.cache import L1Cache  # noqa: E402
from sapphire.storage.parquet_backend import ParquetBackend  # noqa: E402
from sapphire.storage.query import read_table  # noqa: E402
from sapphire.storage.sink import StorageSink  # noqa: E402
from sapphire.storage.tiered import TieredCache  # noqa: E402
from tests.storage.conftest import TRADES_CSV, ticks_from_trades  # noqa: E402

SHARED = Path(os.environ.get("SAPPHIRE_SHARED_DATA", REPO.parent / "shared" / "data"))


def pct(values: list[int] | list[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def big_ticks(n: int) -> pl.DataFrame:
    base = ticks_from_trades(SHARED / TRADES_CSV, 50_000)
    reps = -(-n // base.height)
    frame = pl.concat([base] * reps).head(n)
    return frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"))


# ----------------------------------------------------------------------------- sink
def bench_sink(frame: pl.DataFrame, batch_size: int, submit_rows: int, durable: bool) -> None:
    with tempfile.TemporaryDirectory() as root:
        backend = ParquetBackend(root, durable=durable)
        sink = StorageSink(backend, batch_size=batch_size)
        flush_ns: list[int] = []
        orig = backend.commit

        def timed(*a: object, **k: object) -> None:
            t = time.perf_counter_ns()
            orig(*a, **k)  # type: ignore[arg-type]
            flush_ns.append(time.perf_counter_ns() - t)

        backend.commit = timed  # type: ignore[method-assign]
        t0 = time.perf_counter()
        for i in range(0, frame.height, submit_rows):
            sink.submit_frame("ticks", frame[i : i + submit_rows], now_ns=0)
        sink.flush(0)
        dt = time.perf_counter() - t0
        assert read_table(root, "ticks").select(pl.len()).collect().item() == frame.height
    print(
        f"  sink->parquet batch={batch_size:>7} submit={submit_rows:>6} durable={durable!s:5}: "
        f"{frame.height / dt:>12,.0f} rows/s  flushes={len(flush_ns):>5} "
        f"flush p50={pct(flush_ns, 0.5) / 1e6:7.2f} ms p99={pct(flush_ns, 0.99) / 1e6:7.2f} ms"
    )


def bench_sink_core(base: pl.DataFrame, producers: int, frame_rows: int, group_rows: int) -> None:
    """The sink core in one process, no Ray: frames as the actor receives them (4 producers'
    writes interleaved, each unpickled), de-duplicated and committed (durable Parquet) in
    groups of about ``group_rows``. CPU time per row of the whole thing and per write of
    the submit alone: what the actor's event loop and commit thread spend, without the
    scheduling noise of a shared host."""
    writes: list[pl.DataFrame] = []
    per_producer = []
    for p in range(producers):
        whole = pl.concat([base] * 4).with_columns(
            pl.lit(f"p{p}").alias("producer_id"),
            pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"),
        )
        per_producer.append([whole[i : i + frame_rows] for i in range(0, whole.height, frame_rows)])
    for batch in zip(*per_producer, strict=True):
        writes.extend(pickle.loads(pickle.dumps(f)) for f in batch)
    every = max(1, group_rows // frame_rows)
    with tempfile.TemporaryDirectory() as root:
        sink = StorageSink(ParquetBackend(root), batch_size=10**12, auto_flush=False)
        cpu0, t0, submit = time.process_time(), time.perf_counter(), 0.0
        for i, frame in enumerate(writes):
            s0 = time.process_time()
            sink.submit_frame("ticks", frame, now_ns=0)
            submit += time.process_time() - s0
            if (i + 1) % every == 0:
                sink.flush(0)
        sink.flush(0)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        rows = sum(f.height for f in writes)
        assert read_table(root, "ticks").select(pl.len()).collect().item() == rows
    print(
        f"  sink core: {len(writes)} writes of {frame_rows} rows, commits of {every * frame_rows}: "
        f"CPU {cpu / rows * 1e6:.3f} us a row (submit {submit / len(writes) * 1e6:.0f} us a "
        f"write), wall {wall / rows * 1e6:.3f} us a row, load {os.getloadavg()[0]:.1f}"
    )


# ----------------------------------------------------------------------------- sink actor
# Through the product's own path: the real StorageSinkActor on a local Ray cluster at the
# default settings (batch_rows 500, flush_interval_s 1.0, fsync'd Parquet), fed typed frames
# by several producer actors at once. Each producer waits for a write's reply before sending
# the next, as the coordinator does: an async actor does not run one caller's calls in order,
# and a later write arriving first would raise the de-duplication mark past the earlier one.
# Throughput counts rows durably committed: the clock stops when every producer's final
# ``flush`` (which commits everything) has returned.
@ray.remote(num_cpus=0)
class _Producer:
    def __init__(self, producer_id: str, base: pl.DataFrame, rows: int, frame_rows: int) -> None:
        self.pid = producer_id
        reps = -(-rows // base.height)
        whole = pl.concat([base] * reps).head(rows)
        whole = whole.with_columns(
            pl.lit(producer_id).alias("producer_id"),
            pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"),
        )
        # sliced up front so the timed loop sends, and does no frame building
        self.frames = [whole[i : i + frame_rows] for i in range(0, rows, frame_rows)]

    def ready(self) -> int:
        return len(self.frames)

    def run(self, sink: Any, packed: bool) -> dict[str, Any]:
        """Send every frame, one write at a time; time each row's acknowledgement: from its
        write being sent to the first reply whose committed watermark covers it. ``packed``:
        each write's frames go through ``pack_tables`` as it is sent."""
        sent: deque[tuple[int, float]] = deque()  # (last seq of a write, when it was sent)
        acks: list[float] = []

        def settle(marks: dict[str, int]) -> None:
            mark, now = marks.get("ticks", -1), time.perf_counter()
            while sent and sent[0][0] <= mark:
                acks.append(now - sent.popleft()[1])

        for frame in self.frames:
            sent.append((int(frame["seq"][-1]), time.perf_counter()))
            tables = pack_tables({"ticks": frame}) if packed else {"ticks": frame}
            settle(ray.get(sink.write.remote(self.pid, tables, 0, ""))[1])
        settle(ray.get(sink.flush.remote(self.pid, {}))[1])
        return {"acks": acks, "unacked": len(sent)}


def _cpu_by_role() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process and every process it started (the local Ray
    cluster: GCS, raylet, workers), each with its role in the benchmark."""
    out: dict[int, tuple[str, float]] = {}
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            cmd = " ".join(proc.cmdline())
            times = proc.cpu_times()
        except psutil.Error:
            continue
        if proc.pid == me.pid:
            role = "driver"
        elif "StorageSinkActor" in cmd:
            role = "sink"
        elif "_Producer" in cmd:
            role = "producers"
        else:
            role = "ray"  # GCS, raylet, idle workers, agents
        out[proc.pid] = (role, times.user + times.system)
    return out


def _cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    spent: dict[str, float] = {}
    for pid, (role, cpu) in after.items():
        spent[role] = spent.get(role, 0.0) + cpu - before.get(pid, (role, 0.0))[1]
    return spent


def bench_sink_actor(
    base: pl.DataFrame,
    *,
    group_commit: bool,
    producers: int,
    rows_per_producer: int,
    frame_rows: int,
    packed: bool = False,
    warm_up: bool = False,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root:
        build = functools.partial(ParquetBackend, root, durable=True)
        # the defaults of StorageConfig: batch_rows 500, flush_interval_s 1.0
        sink = StorageSinkActor.remote(build, 500, 1.0, group_commit)  # type: ignore[attr-defined]
        base_ref = ray.put(base)
        prods = [
            _Producer.remote(f"p{i}", base_ref, rows_per_producer, frame_rows)  # type: ignore[attr-defined]
            for i in range(producers)
        ]
        ray.get([p.ready.remote() for p in prods] + [sink.stats.remote()])
        load0 = os.getloadavg()[0]
        cpu0 = _cpu_by_role()
        t0 = time.perf_counter()
        results = ray.get([p.run.remote(sink, packed) for p in prods])
        dt = time.perf_counter() - t0
        cpu = _cpu_delta(cpu0, _cpu_by_role())
        load1 = os.getloadavg()[0]
        stats = ray.get(sink.stats.remote())
        ray.get(sink.close.remote())
        ray.kill(sink)
        for p in prods:
            ray.kill(p)
        total = producers * rows_per_producer
        stored = read_table(root, "ticks").select(pl.len()).collect().item()
        assert stored == total == stats["flushed_rows"], (stored, total, stats)
        assert all(r["unacked"] == 0 for r in results)
    acks = [a for r in results for a in r["acks"]]
    out = {
        "mode": ("group commit" if group_commit else "synchronous (old)")
        + (" packed" if packed else "")
        + (" warm-up" if warm_up else ""),
        "rows_s": total / dt,
        "commits": stats["flushes"],
        "mean_rows": stats["commit_mean_rows"],
        "p50_ms": stats["commit_p50_ms"],
        "p99_ms": stats["commit_p99_ms"],
        "max_ms": stats["commit_max_ms"],
        "commit_cpu_us": stats.get("commit_cpu_us_per_row", float("nan")),
        "commit_wall_us": stats.get("commit_wall_us_per_row", float("nan")),
        "ack_p50_ms": pct(acks, 0.5) * 1e3,
        "ack_p99_ms": pct(acks, 0.99) * 1e3,
        "load": (load0, load1),
        "total": total,
        "seconds": dt,
        "cpu": cpu,
    }
    per_m = {role: spent / total * 1e6 for role, spent in sorted(cpu.items())}
    print(
        f"  sink actor {out['mode']:<25} {producers} producers x {rows_per_producer:,} rows, "
        f"frames of {frame_rows}: {out['rows_s']:>10,.0f} rows/s durable "
        f"({dt:.2f} s)\n"
        f"    commits {out['commits']:>5} of {out['mean_rows']:>8,.0f} rows on average; "
        f"commit p50 {out['p50_ms']:6.2f} ms p99 {out['p99_ms']:6.2f} ms "
        f"max {out['max_ms']:6.1f} ms; "
        f"write->durable ack p50 {out['ack_p50_ms']:6.1f} ms p99 {out['ack_p99_ms']:6.1f} ms; "
        f"load {load0:.1f} -> {load1:.1f}\n"
        f"    CPU s per 1M rows: "
        + ", ".join(f"{role} {v:.2f}" for role, v in per_m.items())
        + f"; total {sum(per_m.values()):.2f} ({sum(cpu.values()) / dt:.2f} cores busy); "
        f"commit thread {out['commit_cpu_us']:.2f} us CPU / {out['commit_wall_us']:.2f} us "
        "wall a row"
    )
    return out


def bench_sink_actors(args: argparse.Namespace) -> None:
    """Both paths in the same run and cluster, group commit first, each after a warm-up;
    with ``--packed``, group commit again with the producers packing their frames
    (``pack_tables``), which the coordinator does not do yet."""
    base = ticks_from_trades(SHARED / TRADES_CSV, 50_000)
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", include_dashboard=False, namespace="storage-bench")
    print(
        f"  sink actor: durable Parquet, batch_rows 500, flush_interval_s 1.0, "
        f"cpu={os.cpu_count()}, load {os.getloadavg()[0]:.1f}"
    )
    try:
        modes = {"both": (True, False), "group": (True,), "sync": (False,)}[args.sink_mode]
        runs = [(g, False) for g in modes]
        if args.packed:
            runs.insert(1 if True in modes else 0, (True, True))
        for group_commit, packed in runs:
            common = {
                "group_commit": group_commit,
                "packed": packed,
                "producers": args.producers,
                "frame_rows": args.frame_rows,
            }
            bench_sink_actor(base, rows_per_producer=20 * args.frame_rows, warm_up=True, **common)
            rows = args.actor_rows if group_commit else args.sync_rows
            rows //= 10 if args.quick else 1
            bench_sink_actor(base, rows_per_producer=rows // args.producers, **common)
    finally:
        if started:
            ray.shutdown()


def bench_parquet_compression(frame: pl.DataFrame) -> None:
    print(f"  parquet compression, {frame.height:,} tick rows (write / size / full read):")
    raw_size = None
    with tempfile.TemporaryDirectory() as d:  # warm-up: first write pays one-off setup
        frame.write_parquet(Path(d) / "w.parquet")
    for codec in ("uncompressed", "snappy", "lz4", "zstd"):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "x.parquet"
            writes, reads = [], []
            for _ in range(5):
                t = time.perf_counter()
                frame.write_parquet(path, compression=codec)  # type: ignore[arg-type]
                writes.append(time.perf_counter() - t)
                t = time.perf_counter()
                pl.read_parquet(path)
                reads.append(time.perf_counter() - t)
            size = path.stat().st_size
            raw_size = raw_size or size
            print(
                f"    {codec:<13} write {statistics.median(writes) * 1e3:7.1f} ms  "
                f"size {size / 1e6:7.2f} MB ({size / raw_size:5.1%})  "
                f"read {statistics.median(reads) * 1e3:6.1f} ms"
            )


# ----------------------------------------------------------------------------- bigquery
def bench_bigquery(quick: bool) -> None:
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        from sapphire.adapters.bigquery import BigQueryBackend
        from sapphire.adapters.bq_emulator import start_emulator
    except ImportError as exc:
        print(f"  bigquery: skipped ({exc})")
        return
    rows = ticks_from_trades(SHARED / TRADES_CSV, 2_000 if quick else 10_000)
    with start_emulator() as emu:
        client = bigquery.Client(
            project=emu.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emu.endpoint},
        )
        for chunk, n in ((500, rows.height), (1, 200 if quick else 500)):
            backend = BigQueryBackend(
                client, f"b_{uuid.uuid4().hex[:8]}", tables=["ticks"], chunk_rows=chunk
            )
            sink = StorageSink(backend, batch_size=10**9, auto_flush=False)
            sink.submit_frame("ticks", rows.head(n), now_ns=0)
            t = time.perf_counter()
            sink.flush(0)
            dt = time.perf_counter() - t
            print(
                f"  bigquery emulator insertAll batch={chunk:>3}: {n / dt:>9,.0f} rows/s "
                f"({n} rows, {backend.insert_calls} calls, "
                f"{dt / backend.insert_calls * 1e3:.1f} ms/call)"
            )


# ----------------------------------------------------------------------------- cache
def lat(fn: Callable[[], object], n: int) -> list[int]:
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t)
    return out


def bench_cache(quick: bool) -> None:
    n = 20_000 if quick else 200_000
    l1 = L1Cache(clock=time.monotonic_ns)
    l1.set("k", {"bid": 1, "ask": 2})
    t = time.perf_counter_ns()
    for _ in range(n):
        l1.get("k")
    per = (time.perf_counter_ns() - t) / n
    print(f"  L1Cache.get hit (loop mean incl. loop):  {per:7.0f} ns")
    d = {"k": 1}
    t = time.perf_counter_ns()
    for _ in range(n):
        d.get("k")
    print(f"    baseline dict.get in the same loop:    {(time.perf_counter_ns() - t) / n:7.0f} ns")
    tiered = TieredCache(l1)
    t = time.perf_counter_ns()
    for _ in range(n):
        tiered.get("k", lambda k: None)
    print(f"  TieredCache.get L1 hit (with stats):     {(time.perf_counter_ns() - t) / n:7.0f} ns")

    l2 = RedisCache(prefix=f"bench:{uuid.uuid4().hex[:8]}:")
    payload = msgspec.msgpack.encode({"bid": 612345, "ask": 612346, "ts": 1_723_161_254_000})
    if not l2.set("small", payload):
        print("  L2: Redis at 127.0.0.1:6379 unavailable, skipped")
        return
    big = msgspec.msgpack.encode(ticks_from_trades(SHARED / TRADES_CSV, 2_000).to_dicts())
    l2.set("big", big)
    m = 2_000 if quick else 10_000
    small_ns = lat(lambda: l2.get("small"), m)
    big_ns = lat(lambda: l2.get("big"), m // 5)
    print(
        f"  L2 RedisCache.get small: p50 {pct(small_ns, 0.5) / 1e3:6.1f} us  "
        f"p99 {pct(small_ns, 0.99) / 1e3:6.1f} us"
    )
    print(
        f"  L2 RedisCache.get {len(big) / 1e3:.0f} kB (lz4): p50 {pct(big_ns, 0.5) / 1e3:6.1f} us  "
        f"p99 {pct(big_ns, 0.99) / 1e3:6.1f} us"
    )

    with tempfile.TemporaryDirectory() as root:
        sink = StorageSink(ParquetBackend(root, durable=False), batch_size=10**9, auto_flush=False)
        sink.submit_frame("ticks", ticks_from_trades(SHARED / TRADES_CSV, 20_000), now_ns=0)
        sink.flush(0)

        def l3_loader(key: str) -> object:
            return read_table(root, "ticks").filter(pl.col("seq") == int(key)).collect().to_dicts()

        cache = TieredCache(L1Cache(clock=time.monotonic_ns, max_entries=10), l2)
        for i in range(200 if quick else 1000):
            cache.get(str(i), l3_loader)  # L1 miss, L2 miss, L3 load
        cache.l1.clear()
        for i in range(200 if quick else 1000):
            cache.get(str(i), l3_loader)  # L1 miss, L2 hit
        s = cache.summary()
        print(
            f"  tiered: L2 hit p50 {s['l2']['p50_ns'] / 1e3:6.1f} us; "
            f"L3 parquet load p50 {s['l3']['p50_ns'] / 1e6:6.2f} ms "
            f"p99 {s['l3']['p99_ns'] / 1e6:6.2f} ms"
        )
    l2.clear_prefix()


def bench_value_compression() -> None:
    ticks = ticks_from_trades(SHARED / TRADES_CSV, 2_000)
    bars = pl.read_csv(
        SHARED / "ohlcv" / "nautilus_btc-perp_1m_2021-12-31_2022-02-01.csv.gz", n_rows=500
    )
    payloads = {
        "ticks msgpack (2000)": msgspec.msgpack.encode(ticks.to_dicts()),
        "bars json (500)": bars.write_json().encode(),
        "ticks msgpack (20)": msgspec.msgpack.encode(ticks.head(20).to_dicts()),
    }
    print("  cache value compression (size ratio, compress + decompress time per value):")
    for name, data in payloads.items():
        line = f"    {name:<22} raw {len(data):>8,} B |"
        for codec in ("lz4", "zstd"):
            packed = compression.pack(data, codec, threshold=0)  # type: ignore[arg-type]
            reps = 200
            t = time.perf_counter_ns()
            for _ in range(reps):
                compression.pack(data, codec, threshold=0)  # type: ignore[arg-type]
            c = (time.perf_counter_ns() - t) / reps
            t = time.perf_counter_ns()
            for _ in range(reps):
                compression.unpack(packed)
            u = (time.perf_counter_ns() - t) / reps
            line += f" {codec} {len(packed) / len(data):5.1%} {c / 1e3:7.1f}+{u / 1e3:6.1f} us |"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-bq", action="store_true")
    ap.add_argument("--actor-only", action="store_true", help="only the sink actor case")
    ap.add_argument("--no-actor", action="store_true", help="skip the sink actor case")
    ap.add_argument("--core-only", action="store_true", help="only the in-process sink core")
    ap.add_argument("--sink-mode", choices=("both", "group", "sync"), default="both")
    ap.add_argument("--packed", action="store_true", help="also group commit, packed frames")
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--frame-rows", type=int, default=2_000, help="rows per producer write")
    ap.add_argument("--actor-rows", type=int, default=4_000_000, help="rows, group commit")
    ap.add_argument("--sync-rows", type=int, default=1_000_000, help="rows, synchronous path")
    args = ap.parse_args()
    if args.core_only:
        base = ticks_from_trades(SHARED / TRADES_CSV, 50_000)
        for _ in range(2):  # the first pass also warms up
            bench_sink_core(base, args.producers, args.frame_rows, group_rows=16_000)
        return
    if args.actor_only:
        bench_sink_actors(args)
        return
    n = 200_000 if args.quick else 2_000_000
    frame = big_ticks(n)
    print(f"storage_bench: {n:,} real BTCUSDT tick rows, cpu={os.cpu_count()}")
    bench_parquet_compression(frame.head(1_000_000))
    small = frame.head(100_000 if args.quick else 200_000)
    bench_sink(small, batch_size=500, submit_rows=500, durable=True)
    bench_sink(small, batch_size=500, submit_rows=500, durable=False)
    bench_sink(frame, batch_size=100_000, submit_rows=10_000, durable=True)
    bench_sink(frame, batch_size=500_000, submit_rows=100_000, durable=True)
    bench_sink(frame, batch_size=500_000, submit_rows=100_000, durable=False)
    if not args.no_actor:
        bench_sink_actors(args)
    if not args.no_bq:
        bench_bigquery(args.quick)
    bench_cache(args.quick)
    bench_value_compression()


if __name__ == "__main__":
    main()
