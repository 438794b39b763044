"""Bar execution path: orders placed on a bar's close fill at the next bar's open.

The same cost model (:class:`BarCosts`) prices the vectorized engine's fills, so the two
engines are comparable fill for fill. Slippage moves the fill price against the taker by
``slippage_bps`` of the open and is rounded to the tick *against* the taker too; the fee is
``fee_bps`` of the notional. A limit order fills at the next bar when the bar trades through
it, at the better of the open and the limit; one that does not is cancelled (day order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from sapphire.exchange.gateway import ExecutionReport, cancel_rejected
from sapphire.model.events import AnyMarketEvent, Bar, Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    AmendOrder,
    CancelOrder,
    OrderFilled,
    OrderStatus,
    OrderType,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
)

_BPS = Decimal(10_000)


class BarCosts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fee_bps: Decimal = Decimal(10)
    slippage_bps: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        # msgspec has no bounds for Decimal, so the one check lives here.
        for name in ("fee_bps", "slippage_bps"):
            value: Decimal = getattr(self, name)
            if not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    def fill_price_ticks(self, open_ticks: int, side: Side) -> int:
        if self.slippage_bps == 0:
            return open_ticks
        moved = Decimal(open_ticks) * (1 + int(side) * self.slippage_bps / _BPS)
        return math.ceil(moved) if side is Side.BUY else math.floor(moved)

    def fee_quote(self, inst: Instrument, price_ticks: int, qty_lots: int) -> Decimal:
        return inst.notional_quote(price_ticks, qty_lots) * self.fee_bps / _BPS


class BarVenueParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``exchange.params`` of a system config whose venue is :func:`bar_venue`. ``latency`` is
    the run's timing (the kernel reads it); the bar venue adds its ``entry_ns`` to an order's
    decision time, as the paper venue does, and fills it at the next bar."""

    fee_bps: Decimal = Decimal(10)
    slippage_bps: Decimal = Decimal(0)
    latency: dict[str, Any] = msgspec.field(default_factory=dict)


def bar_venue(exchange: Any, instruments: Mapping[str, Instrument]) -> BarGateway:
    """A system config's venue for bar strategies (``exchange.factory:
    "sapphire.backtest.bar_gateway:bar_venue"``): the paper exchange matches against a book,
    which OHLCV data does not have, so orders fill at the next bar's open as in
    ``sapphire backtest`` of a bar config, with the same costs."""
    try:
        params = msgspec.convert(dict(exchange.params), BarVenueParams, strict=False)
        costs = BarCosts(fee_bps=params.fee_bps, slippage_bps=params.slippage_bps)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ValueError(f"exchange.params (bar venue): {exc}") from None
    if len(instruments) != 1:
        raise ValueError(f"the bar venue trades one instrument, got {sorted(instruments)}")
    entry_ns = params.latency.get("entry_ns", 0)
    if not isinstance(entry_ns, int) or entry_ns < 0:
        raise ValueError(f"exchange.params.latency.entry_ns: an int >= 0, got {entry_ns!r}")
    return BarGateway(next(iter(instruments.values())), costs, entry_ns=entry_ns)


class BarGateway:
    """An :class:`~sapphire.exchange.gateway.ExecutionGateway` over a bar stream."""

    def __init__(self, instrument: Instrument, costs: BarCosts, *, entry_ns: int = 0) -> None:
        self.instrument = instrument
        self.costs = costs
        self.entry_ns = entry_ns  # an order decided at d reaches this venue at d + entry_ns
        self._queued: list[tuple[SubmitOrder, int]] = []  # with the time each arrived
        # cancels that reached the venue after their order: they bind only where the bar that
        # fills the order opened after them (a gap in the bars)
        self._cancel_at: dict[str, int] = {}
        # each finished order's agent, status and filled lots: a cancel that comes after it
        # is answered with that state, as the paper venue answers (one entry an order)
        self._final: dict[str, tuple[str, OrderStatus, int]] = {}
        self._reports: list[ExecutionReport] = []
        self._fill_no = 0

    def submit(self, order: SubmitOrder, now_ns: int) -> None:
        now_ns += self.entry_ns  # the command carries its decision time
        if order.symbol != self.instrument.symbol:
            self._reject(order, now_ns, RejectReason.UNKNOWN_SYMBOL)
        elif order.qty_lots <= 0:
            self._reject(order, now_ns, RejectReason.INVALID_LOT)
        elif order.order_type is OrderType.LIMIT and (order.limit_ticks or 0) <= 0:
            self._reject(order, now_ns, RejectReason.INVALID_TICK)
        else:
            self._queued.append((order, now_ns))
            self._update(order, now_ns, OrderStatus.ACCEPTED, order.qty_lots)

    def cancel(self, cancel: CancelOrder, now_ns: int) -> None:
        now_ns += self.entry_ns
        for queued in self._queued:
            order, arrived_ns = queued
            if order.client_order_id == cancel.client_order_id:
                if now_ns > arrived_ns:
                    # the order trades at the open of the bar that fills it: too late if that
                    # bar opened before this cancel arrived, decided when the bar comes
                    self._cancel_at.setdefault(order.client_order_id, now_ns)
                    return
                self._queued.remove(queued)
                self._update(order, now_ns, OrderStatus.CANCELED, 0)
                return
        # no order waits under this id: its cancel is answered, never left unanswered
        agent_id, status, filled = self._final.get(
            cancel.client_order_id, ("", OrderStatus.REJECTED, 0)
        )
        self._reports.append(cancel_rejected(now_ns, cancel, agent_id, status, filled))

    def amend(self, amend: AmendOrder, now_ns: int) -> None:
        return None  # orders live one bar; amending is cancel + submit

    def on_market_event(self, event: AnyMarketEvent) -> None:
        if not isinstance(event, Bar) or event.symbol != self.instrument.symbol:
            return
        queued, self._queued = self._queued, []
        for order, arrived_ns in queued:
            if arrived_ns > event.ts_event_ns:
                # it reached the venue after this bar closed: the next bar's open is its
                # price (the bar comes in the window of its close, which may hold the
                # order's arrival too: the outcome must not depend on the windows)
                self._queued.append((order, arrived_ns))
                continue
            canceled_ns = self._cancel_at.pop(order.client_order_id, None)
            if canceled_ns is not None and canceled_ns <= max(event.open_time_ns, arrived_ns):
                self._update(order, canceled_ns, OrderStatus.CANCELED, 0)  # before the bar
                continue
            price = self._execution_price(order, event)
            if price is None:
                self._update(order, event.ts_event_ns, OrderStatus.CANCELED, 0)
                continue
            self._final[order.client_order_id] = (
                order.agent_id,
                OrderStatus.FILLED,
                order.qty_lots,
            )
            self._fill_no += 1
            self._reports.append(
                OrderFilled(
                    # at the bar's open, its price; never before the order arrived (a bar
                    # comes at its close: an order decided on the previous one reaches the
                    # venue at or after this bar's open)
                    ts_event_ns=max(event.open_time_ns, arrived_ns),
                    client_order_id=order.client_order_id,
                    agent_id=order.agent_id,
                    symbol=order.symbol,
                    side=order.side,
                    price_ticks=price,
                    qty_lots=order.qty_lots,
                    fee_quote=self.costs.fee_quote(self.instrument, price, order.qty_lots),
                    is_maker=False,
                    fill_id=f"bar-{self._fill_no}",
                )
            )
            if canceled_ns is not None:  # it arrived after the bar that filled the order opened
                late = CancelOrder(
                    ts_event_ns=canceled_ns,
                    client_order_id=order.client_order_id,
                    symbol=order.symbol,
                )
                self._reports.append(
                    cancel_rejected(
                        canceled_ns, late, order.agent_id, OrderStatus.FILLED, order.qty_lots
                    )
                )

    def poll(self, now_ns: int) -> Sequence[ExecutionReport]:
        reports, self._reports = self._reports, []
        return reports

    def _execution_price(self, order: SubmitOrder, bar: Bar) -> int | None:
        if order.order_type is OrderType.MARKET or order.limit_ticks is None:
            return self.costs.fill_price_ticks(bar.open_ticks, order.side)
        if order.side is Side.BUY and bar.low_ticks <= order.limit_ticks:
            return min(bar.open_ticks, order.limit_ticks)
        if order.side is Side.SELL and bar.high_ticks >= order.limit_ticks:
            return max(bar.open_ticks, order.limit_ticks)
        return None

    def _reject(self, order: SubmitOrder, now_ns: int, reason: RejectReason) -> None:
        self._final[order.client_order_id] = (order.agent_id, OrderStatus.REJECTED, 0)
        self._reports.append(
            OrderUpdate(
                ts_event_ns=now_ns,
                client_order_id=order.client_order_id,
                agent_id=order.agent_id,
                symbol=order.symbol,
                status=OrderStatus.REJECTED,
                reason=reason,
            )
        )

    def _update(self, order: SubmitOrder, now_ns: int, status: OrderStatus, leaves: int) -> None:
        if status is not OrderStatus.ACCEPTED:
            self._final[order.client_order_id] = (order.agent_id, status, 0)
        self._reports.append(
            OrderUpdate(
                ts_event_ns=now_ns,
                client_order_id=order.client_order_id,
                agent_id=order.agent_id,
                symbol=order.symbol,
                status=status,
                leaves_lots=leaves,
            )
        )
