"""Time in the kernel: one clock, four named latencies, and windows no longer than the lookahead.

Every timestamp the kernel handles is on ONE clock, chosen in the config (``data.clock``):
the exchange's (``ts_event_ns``, the default) or the recorder's (``ts_recv_ns``; events are
restamped once when they enter). On that clock:

* the venue applies a market event at its time ``t``;
* agents (and the coordinator's marks) see it at ``t + feed_ns``;
* an agent output made at ``v`` carries its decision time ``d = v + decision_ns``; risk checks
  it at ``d`` and an accepted order leaves at ``d``;
* the order reaches the matching engine at ``d + entry_ns``;
* a venue report made at ``r`` reaches agents and the coordinator at ``r + response_ns``.

A step processes a *window* ``[start, end)`` of that clock in every stage. Orders decided in
a window reach the venue at least ``entry_ns`` later, and venue reports reach the system at
least ``response_ns`` later, so when ``end - start <= min(entry_ns, response_ns)`` (the
*lookahead*) no stage needs another stage's output of the same window: the venue, the agents
and the coordinator exchange what they produced only at window boundaries, and the outcome
is the same for every partition of time into such windows. The window size is then only a
performance knob. A window longer than the lookahead would let a stage miss something it
should have seen; it is refused unless the run is explicitly marked approximate.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Sequence
from typing import Annotated

import msgspec

from sapphire.exchange.config import LatencyConfig, LatencyKind
from sapphire.model.events import AnyMarketEvent

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]


class Clock(enum.StrEnum):
    EXCHANGE = "exchange"  # ts_event_ns: the venue's own time
    RECEIVE = "receive"  # ts_recv_ns: the recorder's local receive time

    def time_of(self, event: AnyMarketEvent) -> int:
        """``event``'s time on this clock, as recorded (an unrecorded receive time, 0, falls
        back to the event time). Before the window cutter clamps it: time never runs back."""
        if self is Clock.RECEIVE and event.ts_recv_ns:
            return event.ts_recv_ns
        return event.ts_event_ns


class WindowError(ValueError):
    """A window (or a latency set) that cannot give an exact run."""


class Timing(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    feed_ns: NonNegInt = 0
    decision_ns: NonNegInt = 0
    entry_ns: NonNegInt = 0
    response_ns: NonNegInt = 0

    @classmethod
    def from_latency(cls, latency: LatencyConfig) -> Timing:
        if latency.kind is not LatencyKind.CONSTANT:
            raise WindowError(
                "exchange.params.latency.kind must be 'constant' for the trading kernel: "
                f"'{latency.kind}' latencies change with the data, so no window is exact"
            )
        return cls(
            feed_ns=latency.feed_ns,
            decision_ns=latency.decision_ns,
            entry_ns=latency.entry_ns,
            response_ns=latency.response_ns,
        )

    @property
    def lookahead_ns(self) -> int:
        """The longest window for which every runner gives the same outcome."""
        return min(self.entry_ns, self.response_ns)

    def window_ns(self, requested_ns: int, *, approximate: bool) -> int:
        """The window a run uses: ``requested_ns`` (0 = the lookahead), checked against it."""
        lookahead = self.lookahead_ns
        window = requested_ns or lookahead
        if window <= 0:
            raise WindowError(
                "exchange.params.latency: entry_ns and response_ns must be > 0 for an exact "
                "run (an order cannot reach the venue in zero time); or set data.window_ns "
                "and data.approximate: true"
            )
        if window > lookahead and not approximate:
            raise WindowError(
                f"data.window_ns={window} is longer than the lookahead "
                f"min(entry_ns, response_ns)={lookahead}: the outcome would depend on the "
                "window; shorten it, or set data.approximate: true to accept that"
            )
        return window


class Window(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Step ``step`` covers ``[start_ns, end_ns)`` of the run's clock; ``last`` marks the
    window that reaches the run's horizon, when its final market event is visible (nothing at
    or after ``end_ns`` is processed; see :mod:`sapphire.kernel.windows`)."""

    step: int
    start_ns: int
    end_ns: int
    last: bool = False
    # events before the data's start: they build the venue's book, nothing else sees them
    warmup: bool = False


def split_visible(
    carried: Sequence[AnyMarketEvent], events: Sequence[AnyMarketEvent], before_ns: int
) -> tuple[Sequence[AnyMarketEvent], list[AnyMarketEvent]]:
    """The events (``carried`` from earlier windows, then this window's) that a stage sees
    before ``before_ns`` (``window end - feed_ns``), and the rest, carried to later windows.
    Events are in time order, so the visible ones are a prefix."""
    pool = [*carried, *events] if carried else events
    cut = bisect_left(pool, before_ns, key=lambda e: e.ts_event_ns)
    return pool[:cut], list(pool[cut:])
