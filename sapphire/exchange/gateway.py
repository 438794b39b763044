"""The execution gateway contract shared by the paper exchange and live venues.

A synchronous, clock-free protocol: the caller passes ``now_ns`` and pulls reports with
``poll``. The paper exchange advances its simulation from market events; a live gateway
(``sapphire.adapters.ccxt_gateway``) implements :class:`AsyncExecutionGateway` instead, and
the execution actor adapts either to the same message flow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sapphire.model.events import AnyMarketEvent
from sapphire.model.orders import (
    AmendOrder,
    CancelOrder,
    OrderFilled,
    OrderStatus,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
)

log = logging.getLogger(__name__)

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


def venue_error_report(command: SubmitOrder, exc: BaseException, now_ns: int) -> OrderUpdate:
    """A submit the venue failed on becomes a REJECTED report, so the order has a final state
    and the journal stays consistent: a gateway error is never a crash."""
    return OrderUpdate(
        ts_event_ns=now_ns,
        client_order_id=command.client_order_id,
        agent_id=command.agent_id,
        symbol=command.symbol,
        status=OrderStatus.REJECTED,
        reason=RejectReason.EXCHANGE_ERROR,
        message=str(exc)[:200],
    )


def cancel_rejected(
    ts_ns: int,
    cancel: CancelOrder,
    agent_id: str,
    status: OrderStatus,
    filled_lots: int = 0,
    why: str = "",
) -> OrderUpdate:
    """Every venue's answer to a cancel that finds no open order under its id: the order's
    state where the venue knows it (REJECTED where it does not), ``unknown_order``."""
    return OrderUpdate(
        ts_event_ns=ts_ns,
        client_order_id=cancel.client_order_id,
        agent_id=agent_id,
        symbol=cancel.symbol,
        status=status,
        filled_lots=filled_lots,
        reason=RejectReason.UNKNOWN_ORDER,
        message="cancel rejected: no open order with this id" + (f" ({why})" if why else ""),
    )


def apply_command(
    gateway: ExecutionGateway, command: SubmitOrder | CancelOrder | AmendOrder, now_ns: int
) -> OrderUpdate | None:
    """Send one command; returns the reject report when the gateway raised on a submit.
    Callers count errors by the report, or by catching nothing at all."""
    try:
        if isinstance(command, SubmitOrder):
            gateway.submit(command, now_ns)
        elif isinstance(command, CancelOrder):
            gateway.cancel(command, now_ns)
        else:
            gateway.amend(command, now_ns)
    except Exception as exc:  # the venue's failure must not take the caller down
        log.warning("gateway error on %s: %s", command.client_order_id, exc)
        if isinstance(command, SubmitOrder):
            return venue_error_report(command, exc, now_ns)
        # a failed cancel or amend leaves the order as the venue has it; the next
        # reports (or a reconcile) tell its real state
    return None
