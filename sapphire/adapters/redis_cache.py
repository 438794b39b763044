"""L2: Redis, shared by every process on the node. It is an accelerator, never a dependency.

Every call has a short socket timeout and redis-py's own retries are off: a Redis that is
down or slow costs one timeout, after which the cache is marked *down* and skipped (a miss,
a dropped write) until an exponentially growing back-off has passed; then one call probes it
again. Nothing here raises: failures are logged once per outage and counted.

Recommended server settings for a cache instance: ``maxmemory 512mb`` and
``maxmemory-policy allkeys-lru`` (Redis then evicts the least recently used keys instead of
refusing writes); :meth:`RedisCache.configure_memory` applies them with CONFIG SET.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sapphire.storage.compression import DEFAULT_THRESHOLD, Codec, CompressionError, pack, unpack

log = logging.getLogger(__name__)

DEFAULT_L2_TTL_S = 300
# lease keys sit beside the values they guard: ``<prefix>lock:<key>``
_LOCK = "lock:"


@dataclass(slots=True)
class RedisStats:
    errors: int = 0  # failed calls (timeouts, refused connections, corrupt payloads)
    skipped: int = 0  # calls not attempted because Redis was marked down
    outages: int = 0
    reconnects: int = 0
    warnings: int = 0


class RedisCache:
    """Bytes in, bytes out, under ``prefix``; values above ``threshold`` are compressed."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        prefix: str = "sapphire:",
        ttl_s: int = DEFAULT_L2_TTL_S,
        socket_timeout_s: float = 0.05,
        codec: Codec = "lz4",
        threshold: int = DEFAULT_THRESHOLD,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """``client_kwargs`` (``RedisConfig.client_kwargs()``: AUTH, TLS) replace ``host``,
        ``port`` and ``db``; the socket timeout and the retry policy stay this class's."""
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.codec: Codec = codec
        self.threshold = threshold
        self._monotonic = monotonic
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._backoff = backoff_initial_s
        self._down_until: float | None = None
        self.stats = RedisStats()
        kwargs = dict(client_kwargs or {"host": host, "port": port, "db": db})
        kwargs.update(
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = redis.Redis(**kwargs)

    @property
    def available(self) -> bool:
        """False while an outage's back-off runs."""
        return self._down_until is None

    # ------------------------------------------------------------------ health
    def _may_call(self) -> bool:
        if self._down_until is None:
            return True
        if self._monotonic() >= self._down_until:
            return True  # probe: this call decides whether Redis is back
        self.stats.skipped += 1
        return False

    def _ok(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            self._backoff = self._backoff_initial
            self.stats.reconnects += 1
            log.warning("cache: Redis is back, L2 re-enabled")

    def _failed(self, op: str, exc: Exception) -> None:
        self.stats.errors += 1
        if self._down_until is None:
            self.stats.outages += 1
            self.stats.warnings += 1
            log.warning("cache: Redis %s failed (%s); degrading to L1 + loader", op, exc)
        else:
            self._backoff = min(self._backoff * 2, self._backoff_max)
        self._down_until = self._monotonic() + self._backoff

    # ------------------------------------------------------------------ operations
    def get(self, key: str) -> bytes | None:
        if not self._may_call():
            return None
        try:
            raw = self._client.get(self.prefix + key)
        except (redis.RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        self._ok()
        if raw is None:
            return None
        try:
            return unpack(bytes(raw))  # type: ignore[arg-type]
        except CompressionError as exc:
            self.stats.errors += 1
            log.warning("cache: dropping corrupt L2 value for %r: %s", key, exc)
            return None

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> bool:
        if not self._may_call():
            return False
        payload = pack(value, self.codec, self.threshold)
        try:
            self._client.set(self.prefix + key, payload, ex=self.ttl_s if ttl_s is None else ttl_s)
        except (redis.RedisError, OSError) as exc:
            self._failed("set", exc)
            return False
        self._ok()
        return True

    def delete(self, key: str) -> bool:
        if not self._may_call():
            return False
        try:
            self._client.delete(self.prefix + key)
        except (redis.RedisError, OSError) as exc:
            self._failed("delete", exc)
            return False
        self._ok()
        return True

    def claim(self, key: str, ttl_ms: int) -> bool:
        """Take the lease to load ``key`` (``SET NX PX`` on a lock key beside it), so that of
        the processes missing the same key at once only one loads it. True: this caller
        loads. Redis down or failing also answers True: without a shared level every
        process loads for itself, as before."""
        if not self._may_call():
            return True
        try:
            taken = self._client.set(self.prefix + _LOCK + key, b"1", nx=True, px=ttl_ms)
        except (redis.RedisError, OSError) as exc:
            self._failed("claim", exc)
            return True
        self._ok()
        return bool(taken)

    def claimed(self, key: str) -> bool:
        """Whether another process still holds the lease of ``key`` (False if Redis is down:
        nobody can then be waited for)."""
        if not self._may_call():
            return False
        try:
            held = self._client.exists(self.prefix + _LOCK + key)
        except (redis.RedisError, OSError) as exc:
            self._failed("exists", exc)
            return False
        self._ok()
        return bool(held)

    def release(self, key: str) -> None:
        """Give the lease of ``key`` back (its value was stored, or loading failed)."""
        self.delete(_LOCK + key)

    def clear_prefix(self) -> int:
        """Delete every key under this cache's prefix (tests and resets); 0 if Redis is down."""
        if not self._may_call():
            return 0
        try:
            keys = list(self._client.scan_iter(match=self.prefix + "*", count=1000))
            removed = int(self._client.delete(*keys)) if keys else 0
        except (redis.RedisError, OSError) as exc:
            self._failed("clear", exc)
            return 0
        self._ok()
        return removed

    def configure_memory(
        self, maxmemory: str = "512mb", policy: str = "allkeys-lru"
    ) -> dict[str, str] | None:
        """CONFIG SET the cache's memory bound; returns the previous values (to restore)."""
        try:
            before = {
                "maxmemory": str(self._client.config_get("maxmemory")["maxmemory"]),
                "maxmemory-policy": str(
                    self._client.config_get("maxmemory-policy")["maxmemory-policy"]
                ),
            }
            self._client.config_set("maxmemory", maxmemory)
            self._client.config_set("maxmemory-policy", policy)
        except (redis.RedisError, OSError) as exc:
            self._failed("config", exc)
            return None
        return before

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            self._client.close()
