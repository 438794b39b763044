"""Latency models: when the strategy sees an event, when an order reaches the book, and when
the venue's answer reaches the strategy. All in ns, all pure."""

from __future__ import annotations

from typing import Protocol

from sapphire.exchange.config import LatencyConfig, LatencyKind
from sapphire.model.events import MarketEvent


class LatencyModel(Protocol):
    def observe(self, event: MarketEvent) -> None:
        """Learn from a recorded event (no-op for constant models)."""

    def feed_ns(self, event: MarketEvent) -> int:
        """How long after ``ts_event_ns`` the strategy sees ``event``."""

    def entry_ns(self, now_ns: int) -> int:
        """From submit (local time) to arrival at the matching engine."""

    def response_ns(self, now_ns: int) -> int:
        """From the matching engine's report to the strategy receiving it."""


class ConstantLatency:
    __slots__ = ("_entry", "_feed", "_response")

    def __init__(self, *, feed_ns: int = 0, entry_ns: int = 0, response_ns: int = 0) -> None:
        if min(feed_ns, entry_ns, response_ns) < 0:
            raise ValueError("latencies must be >= 0")
        self._feed = feed_ns
        self._entry = entry_ns
        self._response = response_ns

    def observe(self, event: MarketEvent) -> None:
        return None

    def feed_ns(self, event: MarketEvent) -> int:
        return self._feed

    def entry_ns(self, now_ns: int) -> int:
        return self._entry

    def response_ns(self, now_ns: int) -> int:
        return self._response


class RecordedLatency:
    """Order latencies derived from the recording's own feed lag (``ts_recv_ns - ts_event_ns``
    of the latest event that has both). Recorders' clocks drift: a negative lag (local clock
    behind the venue's) is floored at ``floor_ns`` rather than trusted."""

    __slots__ = ("_entry_scale", "_fallback", "_floor", "_lag", "_response_scale")

    def __init__(
        self,
        *,
        entry_scale: float = 1.0,
        response_scale: float = 1.0,
        floor_ns: int = 0,
        fallback_ns: int = 0,
    ) -> None:
        if entry_scale <= 0 or response_scale <= 0 or floor_ns < 0 or fallback_ns < 0:
            raise ValueError("scales must be > 0 and floor/fallback >= 0")
        self._entry_scale = entry_scale
        self._response_scale = response_scale
        self._floor = floor_ns
        self._fallback = max(fallback_ns, floor_ns)
        self._lag = -1

    def observe(self, event: MarketEvent) -> None:
        if event.ts_recv_ns > 0:
            self._lag = max(self._floor, event.ts_recv_ns - event.ts_event_ns)

    @property
    def lag_ns(self) -> int:
        return self._fallback if self._lag < 0 else self._lag

    def feed_ns(self, event: MarketEvent) -> int:
        if event.ts_recv_ns > 0:
            return max(self._floor, event.ts_recv_ns - event.ts_event_ns)
        return self.lag_ns

    def entry_ns(self, now_ns: int) -> int:
        return int(self.lag_ns * self._entry_scale)

    def response_ns(self, now_ns: int) -> int:
        return int(self.lag_ns * self._response_scale)


def latency_from_config(config: LatencyConfig) -> ConstantLatency | RecordedLatency:
    if config.kind is LatencyKind.CONSTANT:
        return ConstantLatency(
            feed_ns=config.feed_ns, entry_ns=config.entry_ns, response_ns=config.response_ns
        )
    return RecordedLatency(
        entry_scale=config.entry_scale,
        response_scale=config.response_scale,
        floor_ns=config.floor_ns,
        fallback_ns=config.entry_ns,
    )
