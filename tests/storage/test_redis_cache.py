"""L2 against real Redis servers: the shared one on 6379 and private ones this test starts."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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
