"""The agent contract: pure, clock-free, restartable.

An agent consumes market events and execution reports (time passed in) and returns what it
wants done. Three methods are required (``on_event``, ``snapshot``, ``restore``); the rest are
hooks with defaults. The same object runs in the event-driven backtest, inside an
``AgentActor`` on Ray, and live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sapphire.model.events import AnyMarketEvent
from sapphire.model.orders import CancelIntent, OrderFilled, OrderIntent, OrderUpdate, Signal

AgentOutput = OrderIntent | CancelIntent | Signal


@runtime_checkable
class Agent(Protocol):
    agent_id: str

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        """React to one market event. Must be fast: no I/O, no blocking."""

    def on_report(self, report: OrderUpdate | OrderFilled, now_ns: int) -> Sequence[AgentOutput]:
        """React to an execution report for one of this agent's orders."""

    def snapshot(self) -> bytes:
        """Everything needed to continue exactly where it stopped."""

    def restore(self, data: bytes) -> None: ...
