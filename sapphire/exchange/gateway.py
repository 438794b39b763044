"""The execution gateway contract shared by the paper exchange and live venues.

A synchronous, clock-free protocol: the caller passes ``now_ns`` and pulls reports with
``poll``. The paper exchange advances its simulation from market events; a live gateway
(``sapphire.exchange.ccxt_gateway``) implements :class:`AsyncExecutionGateway` instead, and
the execution actor adapts either to the same message flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sapphire.model.events import AnyMarketEvent
from sapphire.model.orders import AmendOrder, CancelOrder, OrderFilled, OrderUpdate, SubmitOrder

ExecutionReport = OrderUpdate | OrderFilled


@runtime_checkable
class ExecutionGateway(Protocol):
    """Synchronous gateway: the paper exchange and anything simulated."""

    def submit(self, order: SubmitOrder, now_ns: int) -> None:
        """Queue an order; it reaches the matching engine after the entry latency."""

    def cancel(self, cancel: CancelOrder, now_ns: int) -> None: ...

    def amend(self, amend: AmendOrder, now_ns: int) -> None: ...

    def on_market_event(self, event: AnyMarketEvent) -> None:
        """Advance the simulated venue with one recorded event (no-op for live venues)."""

    def poll(self, now_ns: int) -> Sequence[ExecutionReport]:
        """Reports (acks, rejects, cancels, fills) whose response latency has elapsed."""


@runtime_checkable
class AsyncExecutionGateway(Protocol):
    """Asynchronous gateway for live venues (ccxt)."""

    async def submit(self, order: SubmitOrder) -> Sequence[ExecutionReport]: ...

    async def cancel(self, cancel: CancelOrder) -> Sequence[ExecutionReport]: ...

    async def reconcile(self) -> Sequence[ExecutionReport]:
        """After a reconnect: open orders and fills by client order id."""

    async def close(self) -> None: ...
