"""The cache hierarchy: L1 (in-process) -> L2 (Redis) -> L3 (the loader, e.g. the store).

Reads go down the levels and fill the upper ones on the way back. Stampede protection: for
one key only one loader runs at a time -- concurrent threads wait on the leader's result
(:meth:`TieredCache.get`), concurrent coroutines await the leader's future
(:meth:`TieredCache.aget`). A thread and a coroutine asking for the same key at the same
instant may each load once; each side alone never loads twice. Across processes, ``aget``
with a ``lease_s`` and an L2 that grants leases (:class:`L2Leases`, Redis ``SET NX PX``) lets
one process load a key while the others missing it wait for its value in L2: several agent
actors asking a model the same question at the same instant make one call, not one each.

L2 is any :class:`L2Cache`; in production :class:`~sapphire.adapters.redis_cache.RedisCache`,
which turns Redis failures into misses, so they never surface here and the hierarchy carries on
with L1 + L3. This module does not import the adapter (the pure core never does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol, cast

import msgspec

from sapphire.storage.cache import MISS, L1Cache, LevelStats

log = logging.getLogger(__name__)

_L1_SAMPLE_MASK = 63
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def _default_encode(value: Any) -> bytes:
    return _encoder.encode(value)


def _default_decode(data: bytes) -> Any:
    return _decoder.decode(data)


class L2Cache(Protocol):
    """The shared level: bytes by key, failures reported as misses and dropped writes."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes) -> object: ...

    def delete(self, key: str) -> object: ...


class L2Leases(Protocol):
    """An L2 that can lease the loading of a key to one process at a time."""

    def claim(self, key: str, ttl_ms: int) -> bool: ...

    def claimed(self, key: str) -> bool: ...

    def release(self, key: str) -> None: ...


# a waiter polls L2 for the leaseholder's value at this pace: GETs are ~0.1 ms, the loads
# worth leasing (a model call) take a second or more
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05


class _Flight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


def _is_leasing(l2: object) -> bool:
    return all(callable(getattr(l2, name, None)) for name in ("claim", "claimed", "release"))


class TieredCache:
    """Read-through cache over L1, an optional L2 and the caller's loader.

    ``timer`` only measures latencies for the stats; it does not affect what is returned.
    """

    def __init__(
        self,
        l1: L1Cache,
        l2: L2Cache | None = None,
        *,
        encode: Callable[[Any], bytes] = _default_encode,
        decode: Callable[[bytes], Any] = _default_decode,
        timer: Callable[[], int] = time.perf_counter_ns,
        lease_s: float | None = None,
    ) -> None:
        """``lease_s``: in :meth:`aget`, how long one process may hold the loading of a key
        while the others wait for it (None: every process loads its own misses)."""
        self.l1 = l1
        self.l2 = l2
        self.lease_s = lease_s
        self._leases: L2Leases | None = (
            cast(L2Leases, l2) if lease_s is not None and _is_leasing(l2) else None
        )
        self.shared_waits = 0  # aget misses answered by another process's load
        self._encode = encode
        self._decode = decode
        self._timer = timer
        self.stats = {"l1": LevelStats(), "l2": LevelStats(), "l3": LevelStats()}
        self._l1_stats = self.stats["l1"]
        self._l1_calls = 0
        self.loads = 0
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._aflights: dict[tuple[int, str], asyncio.Future[Any]] = {}

    # ------------------------------------------------------------------ levels
    def _from_l1(self, key: str) -> Any:
        self._l1_calls += 1
        if self._l1_calls & _L1_SAMPLE_MASK:
            # L1 is sub-microsecond: timing every call would double its cost, so only one
            # call in 64 is timed; hits and misses are always counted.
            value = self.l1.get(key)
            if value is MISS:
                self._l1_stats.misses += 1
            else:
                self._l1_stats.hits += 1
            return value
        t0 = self._timer()
        value = self.l1.get(key)
        self._l1_stats.record(value is not MISS, self._timer() - t0)
        return value

    def _from_l2(self, key: str) -> Any:
        if self.l2 is None:
            return MISS
        t0 = self._timer()
        value = self._read_l2(key)
        self.stats["l2"].record(value is not MISS, self._timer() - t0)
        if value is not MISS:
            self.l1.set(key, value)
        return value

    def _store(self, key: str, value: Any) -> None:
        self.l1.set(key, value)
        if self.l2 is not None:
            self.l2.set(key, self._encode(value))

    def _load_sync(self, key: str, loader: Callable[[str], Any]) -> Any:
        value = self._from_l2(key)
        if value is not MISS:
            return value
        with self._counted_load():
            value = loader(key)
        self._store(key, value)
        return value

    @contextlib.contextmanager
    def _counted_load(self) -> Iterator[None]:
        """One L3 load around the caller's loader call: counted, timed, failures counted."""
        t0 = self._timer()
        self.loads += 1
        try:
            yield
        except BaseException:
            self.stats["l3"].errors += 1
            raise
        self.stats["l3"].record(True, self._timer() - t0)

    # ------------------------------------------------------------------ public
    def get(self, key: str, loader: Callable[[str], Any]) -> Any:
        """The value of ``key``; on a miss at every level, ``loader(key)`` runs once."""
        value = self._from_l1(key)
        if value is not MISS:
            return value
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = self._load_sync(key, loader)
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    async def aget(self, key: str, loader: Callable[[str], Awaitable[Any]]) -> Any:
        """Async :meth:`get`: concurrent coroutines share one ``await loader(key)``.

        A waiter gets the leader's very value, or its very exception, not a copy: a caller
        that derives something per call from it (the LLM client's metered answer) copies
        before it changes anything, or every waiter's result changes with it."""
        value = self._from_l1(key)
        if value is not MISS:
            return value
        loop = asyncio.get_running_loop()
        fkey = (id(loop), key)
        pending = self._aflights.get(fkey)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Any] = loop.create_future()
        self._aflights[fkey] = fut
        try:
            value = self._from_l2(key)
            if value is MISS:
                value = await self._aload_leased(key, loader)
            fut.set_result(value)
            return value
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters may not exist
            raise
        finally:
            del self._aflights[fkey]

    async def _aload(self, key: str, loader: Callable[[str], Awaitable[Any]]) -> Any:
        with self._counted_load():
            value = await loader(key)
        self._store(key, value)
        return value

    async def _aload_leased(self, key: str, loader: Callable[[str], Awaitable[Any]]) -> Any:
        """Load ``key`` after an L2 miss: as the leaseholder, or by waiting for the
        leaseholder's value. A holder that fails releases the lease and the waiters take
        it in turn; one that dies lets it lapse after ``lease_s``; a waiter that has waited
        ``lease_s`` in all loads for itself."""
        leases = self._leases
        if leases is None or self.lease_s is None:
            return await self._aload(key, loader)
        ttl_ms = max(1, int(self.lease_s * 1000))
        deadline = time.monotonic() + self.lease_s
        waited = False
        while True:
            if leases.claim(key, ttl_ms):
                try:
                    return await self._aload(key, loader)
                finally:
                    leases.release(key)  # after the store: a waiter sees the value or the lease
            if not waited:
                waited = True
                self.shared_waits += 1
            pause = _POLL_FIRST_S
            while True:
                # the lease before the value: a holder stores, then releases, so a lease found
                # gone means its value (if it stored one) is already there to read
                held = leases.claimed(key)
                value = self._read_l2(key)
                if value is not MISS:
                    # the lookup's L2 miss became a hit: another process loaded it for us
                    level = self.stats["l2"]
                    level.misses -= 1
                    level.hits += 1
                    self.l1.set(key, value)
                    return value
                if not held:
                    break  # the holder failed: take the lease in turn
                if time.monotonic() >= deadline:
                    return await self._aload(key, loader)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _POLL_MAX_S)

    def _read_l2(self, key: str) -> Any:
        """L2's value of ``key``, decoded; MISS when absent or undecodable (counted as an L2
        error and dropped). Counts no lookup: a lookup's caller does, a waiter's polls not."""
        assert self.l2 is not None
        raw = self.l2.get(key)
        if raw is None:
            return MISS
        try:
            return self._decode(raw)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            self.stats["l2"].errors += 1
            log.warning("cache: undecodable L2 value for %r dropped: %s", key, exc)
            return MISS

    def set(self, key: str, value: Any) -> None:
        self._store(key, value)

    def invalidate(self, key: str) -> None:
        self.l1.delete(key)
        if self.l2 is not None:
            self.l2.delete(key)

    def summary(self) -> dict[str, dict[str, float]]:
        return {level: s.summary() for level, s in self.stats.items()}
