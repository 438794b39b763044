"""L1: an in-process cache bounded in entries (LRU) and in age (TTL), with per-level stats.

Time is injected (``clock`` returns integer ns), so tests move it by hand and nothing here
reads the wall clock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

Clock = Callable[[], int]
"""Returns monotonic integer nanoseconds."""


class _Miss:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


MISS: Final = _Miss()
"""Returned by ``get`` on a miss (``None`` is a cacheable value)."""

DEFAULT_L1_TTL_NS = 60 * 1_000_000_000


@dataclass(slots=True)
class LevelStats:
    """Hits, misses, errors and a bounded window of latencies (ns) of one cache level."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    latencies_ns: deque[int] = field(default_factory=lambda: deque(maxlen=4096))

    def record(self, hit: bool, latency_ns: int) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        self.latencies_ns.append(latency_ns)

    def percentile_ns(self, q: float) -> int:
        if not self.latencies_ns:
            return 0
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "errors": self.errors,
            "hit_ratio": self.hit_ratio,
            "p50_ns": self.percentile_ns(0.5),
            "p99_ns": self.percentile_ns(0.99),
        }


LEVELS: Final = ("l1", "l2", "l3")


class LevelCounts(msgspec.Struct, frozen=True, kw_only=True):
    """The cumulative counts of one level, without latencies: what a run summary adds up
    across processes and across an actor's restarts (latency windows do not add up).

    ``TieredCache`` counts every lookup at L1, an L2 lookup only after an L1 miss, a load
    from the source as an L3 *hit* and a failed load as an L3 error.
    """

    hits: int = 0
    misses: int = 0
    errors: int = 0

    def __add__(self, other: LevelCounts) -> LevelCounts:
        return LevelCounts(
            hits=self.hits + other.hits,
            misses=self.misses + other.misses,
            errors=self.errors + other.errors,
        )


def counts_of(stats: Mapping[str, LevelStats]) -> dict[str, LevelCounts]:
    return {
        level: LevelCounts(hits=s.hits, misses=s.misses, errors=s.errors)
        for level, s in stats.items()
    }


def add_counts(*parts: Mapping[str, LevelCounts]) -> dict[str, LevelCounts]:
    out = {level: LevelCounts() for level in LEVELS}
    for part in parts:
        for level, counts in part.items():
            out[level] = out.get(level, LevelCounts()) + counts
    return out


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def hit_report(counts: Mapping[str, LevelCounts]) -> dict[str, Any]:
    """Hits, misses and hit ratio per level, and the combined hit ratio: the share of lookups
    answered without the source (from L1, from L2, or from a concurrent lookup's load).
    A failed load is a lookup the cache did not answer, so it counts against the ratio."""
    c = add_counts(counts)
    l1, l2, l3 = c["l1"], c["l2"], c["l3"]
    lookups = l1.hits + l1.misses
    return {
        "lookups": lookups,
        "l1": {**msgspec.structs.asdict(l1), "hit_ratio": _ratio(l1.hits, l1.hits + l1.misses)},
        "l2": {**msgspec.structs.asdict(l2), "hit_ratio": _ratio(l2.hits, l2.hits + l2.misses)},
        "l3": {"loads": l3.hits, "errors": l3.errors},
        "combined_hit_ratio": _ratio(lookups - l3.hits - l3.errors, lookups),
    }


def cache_summary(parts: Iterable[Mapping[str, Mapping[str, LevelCounts]]]) -> dict[str, Any]:
    """The run summary's ``cache`` entry: one :func:`hit_report` per named cache (e.g.
    ``instruments``, ``llm_decisions``), summed over every part (one per process), plus
    ``all``, the sum over the caches. Caches nobody looked up are left out."""
    by_name: dict[str, list[Mapping[str, LevelCounts]]] = {}
    for part in parts:
        for name, counts in part.items():
            by_name.setdefault(name, []).append(counts)
    totals = {name: add_counts(*counts) for name, counts in sorted(by_name.items())}
    out = {name: hit_report(t) for name, t in totals.items() if t["l1"].hits + t["l1"].misses}
    if out:
        out["all"] = hit_report(add_counts(*(totals[name] for name in out)))
    return out


class L1Cache:
    """Thread-safe TTL + LRU map. An expired entry counts as a miss and is dropped on read."""

    def __init__(
        self,
        *,
        clock: Clock,
        max_entries: int = 10_000,
        ttl_ns: int = DEFAULT_L1_TTL_NS,
    ) -> None:
        if max_entries < 1 or ttl_ns <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_ns > 0")
        self._clock = clock
        self._max = max_entries
        self._ttl_ns = ttl_ns
        self._data: OrderedDict[Hashable, tuple[int, object]] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> object:
        # Lock-free read (the hot path): each OrderedDict call is atomic under the GIL, and a
        # concurrent delete between them only turns this read into a miss.
        entry = self._data.get(key)
        if entry is None:
            return MISS
        if entry[0] <= self._clock():
            if self._data.pop(key, None) is not None:
                self.expirations += 1
            return MISS
        try:  # noqa: SIM105 -- contextlib.suppress would double this hot path's cost
            self._data.move_to_end(key)
        except KeyError:
            pass  # evicted meanwhile; the value read is still valid for this call
        return entry[1]

    def set(self, key: Hashable, value: object, ttl_ns: int | None = None) -> None:
        expires = self._clock() + (self._ttl_ns if ttl_ns is None else ttl_ns)
        with self._lock:
            self._data[key] = (expires, value)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)
                self.evictions += 1

    def delete(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
