"""L2 against real Redis servers: the shared one on 6379 and private ones this test starts."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sapphire.adapters.bq_emulator import free_port
from sapphire.adapters.redis_cache import RedisCache
from sapphire.storage.cache import L1Cache
from sapphire.storage.compression import LZ4, RAW, ZSTD, pack, unpack
from sapphire.storage.tiered import TieredCache

REDIS_SERVER = shutil.which("redis-server")


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            str(REDIS_SERVER),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--enable-debug-command",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = redis.Redis(port=port, socket_timeout=0.2)
    for _ in range(100):
        try:
            probe.ping()
            return proc
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("private redis-server did not start")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server binary not installed")
    port = free_port()
    procs = [start_redis(port, tmp_path)]
    yield port, procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_round_trip_ttl_and_compression_on_real_redis(redis_prefix: str) -> None:
    l2 = RedisCache(prefix=redis_prefix)
    small, big = b"tiny", (b"BTCUSDT,612345,4,buy;" * 500)
    assert l2.set("s", small) and l2.set("b", big)
    assert l2.get("s") == small and l2.get("b") == big and l2.get("none") is None
    raw = redis.Redis(port=6379)
    assert raw.get(redis_prefix + "s") == RAW + small
    stored_big = raw.get(redis_prefix + "b")
    assert stored_big is not None and stored_big[:1] == LZ4 and len(stored_big) < len(big) // 5
    assert 295 <= raw.ttl(redis_prefix + "b") <= 300


def test_compression_codecs_round_trip_and_reject_garbage() -> None:
    data = os.urandom(64) * 100
    for codec, head in (("lz4", LZ4), ("zstd", ZSTD), ("none", RAW)):
        packed = pack(data, codec)  # type: ignore[arg-type]
        assert packed[:1] == head and unpack(packed) == data
    with pytest.raises(ValueError, match="unknown compression header"):
        unpack(b"\x09abc")
    with pytest.raises(ValueError, match="corrupt"):
        unpack(LZ4 + b"\xff\xff\xff\x7fnot lz4")


def test_maxmemory_lru_config_is_applied_and_restored(redis_prefix: str) -> None:
    l2 = RedisCache(prefix=redis_prefix)
    raw = redis.Redis(port=6379, decode_responses=True)
    before = l2.configure_memory("512mb", "allkeys-lru")
    try:
        assert before is not None
        assert raw.config_get("maxmemory")["maxmemory"] == str(512 * 1024 * 1024)
        assert raw.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        assert l2.set("k", b"v") and l2.get("k") == b"v"
    finally:
        raw.config_set("maxmemory", before["maxmemory"] if before else "0")
        raw.config_set("maxmemory-policy", before["maxmemory-policy"] if before else "noeviction")
    assert raw.config_get("maxmemory")["maxmemory"] == (before or {}).get("maxmemory", "0")


def test_closed_port_degrades_to_l1_and_loader_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    l2 = RedisCache(port=free_port(), backoff_initial_s=60)
    cache = TieredCache(L1Cache(clock=time.monotonic_ns), l2)
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        values = [cache.get(f"k{i % 5}", lambda k: k * 2) for i in range(200)]
    assert time.perf_counter() - t0 < 1.0  # one failed connect, then skipped
    assert values[:5] == ["k0k0", "k1k1", "k2k2", "k3k3", "k4k4"]
    assert cache.loads == 5 and cache.stats["l1"].hits == 195
    assert l2.stats.outages == 1 and l2.stats.warnings == 1 and not l2.available
    assert l2.stats.skipped >= 8  # later L2 reads/writes were not attempted
    assert sum("degrading" in r.message for r in caplog.records) == 1


def test_real_outage_then_reconnect(
    private_redis: tuple[int, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    port, procs = private_redis
    l2 = RedisCache(port=port, prefix="t:", backoff_initial_s=0.05, backoff_max_s=0.2)
    assert l2.set("a", b"1") and l2.get("a") == b"1"
    procs[0].kill()
    procs[0].wait()
    assert l2.get("a") is None and not l2.available and l2.stats.outages == 1
    assert l2.set("b", b"2") is False  # during the back-off: skipped, no exception
    procs.append(start_redis(port, tmp_path))  # Redis comes back (empty)
    deadline = time.monotonic() + 5
    while not l2.set("a", b"3"):
        assert time.monotonic() < deadline, "cache never reconnected"
        time.sleep(0.05)
    assert l2.available and l2.stats.reconnects == 1 and l2.get("a") == b"3"


def test_slow_redis_times_out_quickly_and_degrades(
    private_redis: tuple[int, list[subprocess.Popen[bytes]]],
) -> None:
    port, _ = private_redis
    l2 = RedisCache(port=port, prefix="t:", socket_timeout_s=0.05, backoff_initial_s=0.05)
    assert l2.set("a", b"1")
    blocker = threading.Thread(
        target=lambda: redis.Redis(port=port).execute_command("DEBUG", "SLEEP", "0.6")  # type: ignore[no-untyped-call]
    )
    blocker.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    assert l2.get("a") is None  # server is stalled: a miss after one short timeout
    assert time.perf_counter() - t0 < 0.3
    assert l2.stats.errors == 1 and not l2.available
    blocker.join()
    time.sleep(0.06)
    assert l2.get("a") == b"1" and l2.stats.reconnects == 1


# ---------------------------------------------------------------- leases across processes
def _process(prefix: str, lease_s: float | None = 2.0, port: int = 6379) -> TieredCache:
    """One agent process's hierarchy: its own L1 and Redis client, the shared prefix."""
    l2 = RedisCache(port=port, prefix=prefix, socket_timeout_s=0.5)
    return TieredCache(L1Cache(clock=time.monotonic_ns), l2, lease_s=lease_s)


def _slow_loader(calls: list[str], result: str, delay_s: float = 0.2) -> Any:
    async def load(key: str) -> str:
        calls.append(key)
        await asyncio.sleep(delay_s)
        return result

    return load


def test_processes_missing_one_key_at_once_load_it_once(redis_prefix: str) -> None:
    """Three processes ask for the same model answer at the same instant: one calls the
    model, the two others are answered from L2 once its value is there."""
    caches = [_process(redis_prefix) for _ in range(3)]
    calls: list[str] = []

    async def main() -> list[Any]:
        return list(
            await asyncio.gather(*(c.aget("q", _slow_loader(calls, "buy")) for c in caches))
        )

    assert asyncio.run(main()) == ["buy", "buy", "buy"]
    assert calls == ["q"]
    assert sum(c.loads for c in caches) == 1
    assert sum(c.shared_waits for c in caches) == 2
    # the waiters' lookups end as L2 hits, the leaseholder's as the one L2 miss
    assert sum(c.stats["l2"].hits for c in caches) == 2
    assert sum(c.stats["l2"].misses for c in caches) == 1


def test_without_a_lease_every_process_loads_its_own_miss(redis_prefix: str) -> None:
    caches = [_process(redis_prefix, lease_s=None) for _ in range(3)]
    calls: list[str] = []

    async def main() -> None:
        await asyncio.gather(*(c.aget("q", _slow_loader(calls, "buy")) for c in caches))

    asyncio.run(main())
    assert len(calls) == 3


def test_a_failed_leaseholder_hands_the_load_to_a_waiter(redis_prefix: str) -> None:
    """The leaseholder's call fails (a timeout, a refused request): nothing is cached, the
    lease is released and the waiter loads for itself instead of waiting it out."""
    first, second = _process(redis_prefix, lease_s=30.0), _process(redis_prefix, lease_s=30.0)
    calls: list[str] = []

    async def failing(key: str) -> str:
        calls.append("failed")
        await asyncio.sleep(0.1)
        raise TimeoutError("no answer")

    async def main() -> Any:
        leader = asyncio.ensure_future(first.aget("q", failing))
        await asyncio.sleep(0.02)  # the lease is taken
        t0 = time.monotonic()
        value = await second.aget("q", _slow_loader(calls, "sell", 0.05))
        with pytest.raises(TimeoutError):
            await leader
        return value, time.monotonic() - t0

    value, waited = asyncio.run(main())
    assert value == "sell" and calls == ["failed", "q"]
    assert waited < 5.0  # far less than the 30 s lease
    assert second.shared_waits == 1 and second.loads == 1


def test_a_lapsed_lease_is_waited_for_at_most_lease_s(redis_prefix: str) -> None:
    """A leaseholder that died holding the lease (its key set by hand here): the waiter loads
    after the lease lapses, not forever."""
    holder = RedisCache(prefix=redis_prefix)
    assert holder.claim("q", 300)
    cache = _process(redis_prefix, lease_s=5.0)
    calls: list[str] = []
    t0 = time.monotonic()
    assert asyncio.run(cache.aget("q", _slow_loader(calls, "hold", 0.0))) == "hold"
    assert calls == ["q"] and 0.2 < time.monotonic() - t0 < 3.0


def test_unreachable_redis_grants_every_lease(tmp_path: Path) -> None:
    caches = [_process("p:", port=free_port()) for _ in range(2)]
    calls: list[str] = []

    async def main() -> None:
        await asyncio.gather(*(c.aget("q", _slow_loader(calls, "buy", 0.05)) for c in caches))

    asyncio.run(main())
    assert len(calls) == 2 and not any(c.shared_waits for c in caches)
