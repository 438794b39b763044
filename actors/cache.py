"""The agent actors' cache hierarchy (``sapphire.storage.tiered``): L1 in the actor's process
-> L2 Redis (the run's ``redis`` settings; shared by every actor on every node, and kept
across an actor's restarts) -> L3 the source.

What goes through it, and why:

- Instrument specs, under a content-addressed key (venue, symbol and a digest of the spec).
  The source (L3) is the spec the driver loaded from the run's instrument files, which every
  incarnation of the actor gets in its builder. A key names its content, so a cached spec can
  never be stale, whichever run wrote it; and what a level returns is compared with the source
  before an agent is built on it, so the cache cannot change what an agent decides. A
  restarted actor starts in a new process (empty L1) and is served from Redis.
- LLM decisions, by prompt (``actors.llm_bridge``, ``actors.serve.llm_client``).

Per-window marks and features (``sapphire.agents.features``) deliberately do not go through
it: computing a window's microprices costs less than one Redis round trip (measured by
``benchmarks/cache_hit_rate.py``, see benchmarks/RESULTS.md).

Redis is an accelerator, never a dependency: an unreachable Redis, or settings whose secret is
missing on this worker, leave L1 + the source (counted as L2 errors, never raised).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import msgspec

from actors import metrics
from sapphire.adapters.redis_cache import DEFAULT_L2_TTL_S, RedisCache
from sapphire.config.redis import RedisConfig
from sapphire.config.secrets import SecretError
from sapphire.model.instrument import Instrument
from sapphire.storage.cache import L1Cache, LevelCounts, add_counts, counts_of
from sapphire.storage.tiered import TieredCache

log = logging.getLogger(__name__)

# A content-addressed value never goes stale, so it may outlive any run; Redis's own
# eviction policy (allkeys-lru, see sapphire.adapters.redis_cache) bounds the memory.
INSTRUMENT_TTL_S = 7 * 86_400

CacheCounts = dict[str, dict[str, LevelCounts]]
"""Counts per cache name (``instruments``, ``llm_decisions``), per level."""


def redis_level(
    config: RedisConfig | None,
    namespace: str,
    ttl_s: int = DEFAULT_L2_TTL_S,
    min_socket_timeout_s: float = 0.0,
) -> RedisCache | None:
    """The L2 of one cache (keys under ``config.cache_prefix + namespace``), or None.
    ``min_socket_timeout_s``: a floor under the configured timeout, for a cache whose
    loads take seconds (waiting a little longer for Redis still saves a load)."""
    if config is None:
        return None
    try:
        kwargs = config.client_kwargs()
    except SecretError as exc:  # a worker without the secret still trades, on L1 + source
        log.warning("cache: Redis password unavailable here (%s); running without L2", exc)
        return None
    return RedisCache(
        prefix=config.cache_prefix + namespace,
        ttl_s=ttl_s,
        socket_timeout_s=max(config.socket_timeout_s, min_socket_timeout_s),
        client_kwargs=kwargs,
    )


def instrument_key(instrument: Instrument) -> str:
    """``VENUE:SYMBOL:digest``: the digest of the encoded spec makes the key name the
    content, so two runs (or two versions of an instrument file) never share a wrong value."""
    digest = hashlib.blake2b(msgspec.msgpack.encode(instrument), digest_size=8).hexdigest()
    return f"{instrument.venue}:{instrument.symbol}:{digest}"


def _decode_instrument(data: bytes) -> Instrument:
    # validated on the way in (a value written by another schema is a miss, not a crash)
    return msgspec.msgpack.decode(data, type=Instrument)


class InstrumentCache:
    """Instrument specs through L1 -> Redis -> the driver's copy."""

    def __init__(self, redis: RedisConfig | None, *, clock: Any = time.monotonic_ns) -> None:
        self.l2 = redis_level(redis, "instrument:", INSTRUMENT_TTL_S)
        l1 = L1Cache(clock=clock, max_entries=1024, ttl_ns=INSTRUMENT_TTL_S * 1_000_000_000)
        self.tiers = TieredCache(
            l1, self.l2, encode=msgspec.msgpack.encode, decode=_decode_instrument
        )

    def get(self, source: Instrument) -> Instrument:
        """``source``'s spec, from the first level that has it; ``source`` is the L3."""
        key = instrument_key(source)
        found: Instrument = self.tiers.get(key, lambda _: source)
        if found != source:
            # only a foreign writer or a corrupt entry gets here (the key is a digest of the
            # content): count it, replace it with the source, and build on the source
            self.tiers.stats["l2"].errors += 1
            log.warning("cache: instrument %s: cached spec differs from the source; replaced", key)
            self.tiers.set(key, source)
            return source
        return found


class AgentCaches:
    """The caches of one agent actor, and their counts for the whole run: those of earlier
    incarnations (restored from the actor's checkpoint) plus this process's own. Metrics get
    this process's own counts only (they are counters that Prometheus sums over processes, so
    restored counts would be counted twice)."""

    def __init__(self) -> None:
        self._live: dict[str, tuple[TieredCache, RedisCache | None]] = {}
        self._base: CacheCounts = {}
        self._metrics: dict[str, metrics.CacheMetrics] = {}

    def track(self, name: str, tiers: TieredCache, l2: RedisCache | None = None) -> None:
        self._live[name] = (tiers, l2)

    def tracks(self, name: str) -> bool:
        return name in self._live

    def live(self) -> CacheCounts:
        """This process's counts."""
        out: CacheCounts = {}
        for name, (tiers, l2) in self._live.items():
            counts = counts_of(tiers.stats)
            if l2 is not None and l2.stats.errors:
                # Redis calls that failed (down, timed out, corrupt): misses to the hierarchy,
                # errors here, so a summary shows that L2 was missing rather than cold
                counts["l2"] = counts["l2"] + LevelCounts(errors=l2.stats.errors)
            out[name] = counts
        return out

    def totals(self) -> CacheCounts:
        """Counts of every incarnation of the actor (up to its last checkpoint) and this one."""
        live = self.live()
        names = sorted(self._base.keys() | live.keys())
        return {n: add_counts(self._base.get(n, {}), live.get(n, {})) for n in names}

    @property
    def base(self) -> CacheCounts:
        """The earlier incarnations' counts (as restored)."""
        return self._base

    def restore(self, base: CacheCounts) -> None:
        self._base = base

    def publish(self) -> None:
        """This process's counts as ``hft_cache_requests_total`` increments."""
        for name, (tiers, _) in self._live.items():
            self._metrics.setdefault(name, metrics.CacheMetrics()).on_stats(tiers.stats)


def counts_to_builtins(counts: CacheCounts) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(counts)
    return out


def counts_from_builtins(raw: Any) -> CacheCounts:
    return msgspec.convert(raw, CacheCounts)
