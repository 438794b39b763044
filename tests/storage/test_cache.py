from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.storage.cache import (
    MISS,
    L1Cache,
    LevelCounts,
    add_counts,
    cache_summary,
    counts_of,
    hit_report,
)
from sapphire.storage.tiered import TieredCache

S = 1_000_000_000


class ManualClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def test_l1_ttl_expires_at_exactly_ttl() -> None:
    clock = ManualClock()
    l1 = L1Cache(clock=clock, ttl_ns=60 * S)
    l1.set("k", None)  # None is a value, not a miss
    clock.now = 60 * S - 1
    assert l1.get("k") is None
    clock.now = 60 * S
    assert l1.get("k") is MISS and l1.expirations == 1 and len(l1) == 0


def test_l1_evicts_least_recently_used() -> None:
    l1 = L1Cache(clock=ManualClock(), max_entries=3)
    for k in "abc":
        l1.set(k, k)
    assert l1.get("a") == "a"  # a is now the most recent
    l1.set("d", "d")
    assert l1.get("b") is MISS and l1.get("a") == "a" and l1.evictions == 1


@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), max_size=200), st.integers(1, 8))
def test_l1_never_exceeds_bound_and_returns_last_value(
    ops: list[tuple[int, bool]], cap: int
) -> None:
    l1 = L1Cache(clock=ManualClock(), max_entries=cap)
    last: dict[int, int] = {}
    for i, (k, write) in enumerate(ops):
        if write:
            l1.set(k, i)
            last[k] = i
        else:
            got = l1.get(k)
            assert got is MISS or got == last[k]
        assert len(l1) <= cap


def test_read_through_fills_l1_and_counts_per_level() -> None:
    clock = ManualClock()
    cache = TieredCache(L1Cache(clock=clock, ttl_ns=60 * S))
    calls: list[str] = []

    def loader(key: str) -> int:
        calls.append(key)
        return 42

    assert cache.get("x", loader) == 42
    assert cache.get("x", loader) == 42
    assert calls == ["x"]
    s = cache.summary()
    assert (s["l1"]["hits"], s["l1"]["misses"], s["l3"]["hits"]) == (1, 1, 1)
    clock.now = 61 * S  # expired: the loader runs again
    assert cache.get("x", lambda k: 7) == 7 and cache.loads == 2


def test_threads_stampede_runs_one_loader() -> None:
    cache = TieredCache(L1Cache(clock=time.monotonic_ns))
    started = threading.Barrier(16)
    calls = 0
    lock = threading.Lock()

    def loader(key: str) -> str:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(0.05)
        return key.upper()

    results: list[str] = []

    def worker() -> None:
        started.wait()
        results.append(cache.get("btc", loader))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == 1 and results == ["BTC"] * 16


def test_async_stampede_runs_one_loader_and_errors_reach_all_waiters() -> None:
    cache = TieredCache(L1Cache(clock=time.monotonic_ns))
    calls = 0

    async def loader(key: str) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return len(key)

    async def failing(key: str) -> int:
        await asyncio.sleep(0.01)
        raise LookupError(key)

    async def main() -> None:
        got = await asyncio.gather(*(cache.aget("four", loader) for _ in range(50)))
        assert got == [4] * 50 and calls == 1
        res = await asyncio.gather(
            *(cache.aget("bad", failing) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, LookupError) for r in res)
        assert await cache.aget("bad", loader) == 3  # a failure is not cached

    asyncio.run(main())


def test_sync_loader_error_propagates_and_is_not_cached() -> None:
    cache = TieredCache(L1Cache(clock=time.monotonic_ns))

    def boom(key: str) -> int:
        raise KeyError(key)

    with pytest.raises(KeyError):
        cache.get("k", boom)
    assert cache.stats["l3"].errors == 1
    assert cache.get("k", lambda k: 5) == 5


def test_l1_concurrent_readers_and_writers_stay_bounded() -> None:
    l1 = L1Cache(
        clock=time.monotonic_ns, max_entries=16, ttl_ns=1_000
    )  # tiny TTL: expiries race too
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for i in range(20_000):
                k = (i * 7 + seed) % 40
                if i % 3 == 0:
                    l1.set(k, k)
                else:
                    v = l1.get(k)
                    assert v is MISS or v == k
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(l1) <= 16


def test_hit_report_counts_each_lookup_once_and_what_the_source_answered() -> None:
    tiers = TieredCache(L1Cache(clock=ManualClock()), _DictL2())
    other_process = TieredCache(L1Cache(clock=ManualClock()), tiers.l2)
    for _ in range(3):
        tiers.get("spec", lambda k: "v")  # L3 once, then L1
    other_process.get("spec", lambda k: "never")  # L1 miss, L2 hit
    with pytest.raises(KeyError):
        tiers.get("gone", _raise_key_error)  # a failed load answers nothing
    report = hit_report(add_counts(counts_of(tiers.stats), counts_of(other_process.stats)))
    assert report["lookups"] == 5
    assert report["l1"] == {"hits": 2, "misses": 3, "errors": 0, "hit_ratio": 2 / 5}
    assert report["l2"] == {"hits": 1, "misses": 2, "errors": 0, "hit_ratio": 1 / 3}
    assert report["l3"] == {"loads": 1, "errors": 1}
    assert report["combined_hit_ratio"] == 3 / 5  # 2 from L1 + 1 from L2, of 5


def test_cache_summary_sums_processes_per_cache_and_drops_unused_caches() -> None:
    one = {"instruments": {"l1": LevelCounts(misses=1), "l3": LevelCounts(hits=1)}}
    two = {
        "instruments": {"l1": LevelCounts(misses=1), "l2": LevelCounts(hits=1)},
        "llm_decisions": {"l1": LevelCounts()},  # made, never asked
    }
    out = cache_summary([one, two])
    assert set(out) == {"instruments", "all"}
    assert out["instruments"]["lookups"] == 2 and out["instruments"]["l3"]["loads"] == 1
    assert out["instruments"]["combined_hit_ratio"] == 0.5
    assert out["all"] == out["instruments"]
    assert cache_summary([]) == {}


class _DictL2:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def set(self, key: str, value: bytes) -> object:
        self.data[key] = value
        return True

    def delete(self, key: str) -> object:
        return self.data.pop(key, None)


def _raise_key_error(key: str) -> str:
    raise KeyError(key)
