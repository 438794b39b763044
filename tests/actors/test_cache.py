"""The agent actors' cache hierarchy on the real Redis (no Ray): instrument specs from the
source once, then from Redis in every other process; an unreachable or lying Redis never
changes the spec an agent is built on; counts survive a restart without being counted twice."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import pytest
import redis

from actors import metrics
from actors.cache import AgentCaches, InstrumentCache, instrument_key
from sapphire.adapters.bq_emulator import free_port
from sapphire.config.redis import RedisConfig
from sapphire.config.system import AgentSpec
from sapphire.data import sample
from sapphire.kernel.builders import AgentBuilder, WiringError, agent_builder
from sapphire.storage.cache import LevelCounts

SPEC = sample.sample_instrument()


@pytest.fixture
def redis_config() -> Iterator[RedisConfig]:
    """The local Redis under a key prefix of this test's own, deleted afterwards."""
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"test:actors-cache:{uuid.uuid4().hex[:12]}:"
    yield RedisConfig(cache_prefix=prefix)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


def _levels(cache: InstrumentCache) -> tuple[int, ...]:
    s = cache.tiers.stats
    return (s["l1"].hits, s["l1"].misses, s["l2"].hits, s["l2"].misses, s["l3"].hits)


def test_first_process_loads_the_source_later_ones_read_redis(redis_config: RedisConfig) -> None:
    first = InstrumentCache(redis_config)
    assert first.get(SPEC) == SPEC
    assert first.get(SPEC) == SPEC  # the same process again: L1
    assert _levels(first) == (1, 1, 0, 1, 1)
    stored = redis.Redis(port=6379).get(
        redis_config.cache_prefix + "instrument:" + instrument_key(SPEC)
    )
    assert stored is not None and SPEC.symbol.encode() in stored

    restarted = InstrumentCache(redis_config)  # a new process: empty L1
    got = restarted.get(SPEC)
    assert got == SPEC and got is not SPEC  # decoded from Redis, not the source object
    assert _levels(restarted) == (0, 1, 1, 0, 0)


def test_the_key_names_the_content_so_a_changed_spec_is_never_served_stale(
    redis_config: RedisConfig,
) -> None:
    InstrumentCache(redis_config).get(SPEC)
    cheaper = msgspec.structs.replace(SPEC, taker_fee_bps="4")
    assert instrument_key(cheaper) != instrument_key(SPEC)
    assert instrument_key(cheaper).startswith(f"{SPEC.venue}:{SPEC.symbol}:")
    other = InstrumentCache(redis_config)
    assert other.get(cheaper) == cheaper
    assert _levels(other) == (0, 1, 0, 1, 1)  # its own key: a miss, loaded from its source


def test_unreachable_redis_is_a_miss_and_the_source_serves(redis_config: RedisConfig) -> None:
    down = RedisConfig(port=free_port(), cache_prefix=redis_config.cache_prefix)
    cache = InstrumentCache(down)
    assert cache.get(SPEC) == SPEC
    assert _levels(cache) == (0, 1, 0, 1, 1)
    caches = AgentCaches()
    caches.track("instruments", cache.tiers, cache.l2)
    assert caches.live()["instruments"]["l2"].errors >= 1  # shown as Redis missing, not cold


def test_a_lying_redis_cannot_change_the_spec(redis_config: RedisConfig) -> None:
    key = redis_config.cache_prefix + "instrument:" + instrument_key(SPEC)
    forged = msgspec.structs.replace(SPEC, tick_size="1")
    redis.Redis(port=6379).set(key, b"\x00" + msgspec.msgpack.encode(forged))  # RAW header
    cache = InstrumentCache(redis_config)
    assert cache.get(SPEC) == SPEC
    assert cache.tiers.stats["l2"].errors == 1
    assert InstrumentCache(redis_config).get(SPEC) == SPEC  # the entry was replaced


def test_agent_builder_refuses_a_spec_other_than_the_runs() -> None:
    spec = AgentSpec(id="mom", kind="momentum", symbol=SPEC.symbol)
    build = agent_builder(spec, SPEC)
    assert isinstance(build, AgentBuilder)
    built: Any = build()
    assert built.instrument is SPEC
    copy: Any = build(msgspec.structs.replace(SPEC))
    assert copy.instrument == SPEC and copy.instrument is not SPEC
    with pytest.raises(WiringError, match="differs"):
        build(msgspec.structs.replace(SPEC, lot_size="0.01"))


class _Recorded:
    def __init__(self) -> None:
        self.values: list[tuple[str, float, dict[str, str]]] = []

    def record(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self.values.append((name, value, dict(tags)))


def test_counts_add_earlier_incarnations_and_metrics_count_each_lookup_once(
    redis_config: RedisConfig,
) -> None:
    recorded = _Recorded()
    previous = metrics.set_recorder(recorded)
    try:
        first = InstrumentCache(redis_config)
        first.get(SPEC)
        before = AgentCaches()
        before.track("instruments", first.tiers, first.l2)
        before.publish()
        checkpoint = before.totals()

        second = InstrumentCache(redis_config)
        second.get(SPEC)
        after = AgentCaches()
        after.track("instruments", second.tiers, second.l2)
        after.restore(checkpoint)
        after.publish()
    finally:
        metrics.set_recorder(previous)
    totals = after.totals()["instruments"]
    assert totals["l1"] == LevelCounts(misses=2)
    assert totals["l2"] == LevelCounts(hits=1, misses=1)
    assert totals["l3"] == LevelCounts(hits=1)
    assert after.live()["instruments"]["l3"] == LevelCounts()
    sent: dict[tuple[str, str], float] = {}
    for name, value, tags in recorded.values:
        assert name == metrics.CACHE_REQUESTS
        key = (tags["level"], tags["result"])
        sent[key] = sent.get(key, 0) + value
    # what Prometheus sums: each process's own lookups, the restored ones not again
    assert sent == {
        ("l1", "hit"): 0,
        ("l1", "miss"): 2,
        ("l2", "hit"): 1,
        ("l2", "miss"): 1,
        ("l3", "hit"): 1,
        ("l3", "miss"): 0,
    }
