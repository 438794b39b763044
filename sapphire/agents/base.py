"""The agent contract: pure, clock-free, restartable.

An agent consumes market events and execution reports (time passed in) and returns what it
wants done. Three methods are required (``on_event``, ``snapshot``, ``restore``); the rest are
hooks with defaults. The same object runs in the event-driven backtest, inside an
``AgentActor`` on Ray, and live.

:class:`BaseAgent` is the shared implementation most agents build on: a deterministic intent
sequence (so client order ids survive restarts), position, cash and open-order tracking from
execution reports, and ``snapshot``/``restore`` as msgpack of two structs (the core book-keeping
and the agent's own mutable model state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import msgspec

from sapphire.model.events import AnyMarketEvent, MarketEvent, Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    AgentReport,
    CancelIntent,
    OrderDenied,
    OrderFilled,
    OrderIntent,
    OrderStatus,
    OrderType,
    Signal,
    TimeInForce,
)

AgentOutput = OrderIntent | CancelIntent | Signal


@runtime_checkable
class Agent(Protocol):
    agent_id: str

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        """React to one market event. Must be fast: no I/O, no blocking."""

    def on_report(self, report: AgentReport, now_ns: int) -> Sequence[AgentOutput]:
        """React to a report on one of this agent's orders: the venue's (``OrderUpdate``,
        ``OrderFilled``) or pre-trade risk's refusal (``OrderDenied``)."""

    def snapshot(self) -> bytes:
        """Everything needed to continue exactly where it stopped."""

    def restore(self, data: bytes) -> None: ...


class AgentConfigError(ValueError):
    """An agent configuration that breaks its rules (raised once, at construction)."""


class AgentStateError(ValueError):
    """A snapshot that does not decode into this agent's state."""


class OpenOrder(msgspec.Struct, kw_only=True):
    client_order_id: str
    side: Side
    qty_lots: int
    leaves_lots: int
    limit_ticks: int | None
    ts_event_ns: int
    cancel_sent: bool = False


class CoreState(msgspec.Struct, kw_only=True):
    """Book-keeping every agent shares; cash is the running quote-asset flow from fills."""

    seq: int = 0
    position_lots: int = 0
    cash_quote: Decimal = Decimal(0)
    fees_quote: Decimal = Decimal(0)
    open_orders: dict[str, OpenOrder] = msgspec.field(default_factory=dict)
    fills: int = 0
    # Refused orders in a row (risk's denial, the venue's reject) and the event time before
    # which ``trade_towards`` sends nothing (see ``BaseAgent.backing_off``).
    refusals: int = 0
    retry_at_ns: int = 0


RETRY_FIRST_NS = 1_000_000_000
"""An agent's wait after its first refused order; each refusal in a row doubles it."""
RETRY_MAX_NS = 60_000_000_000


S = TypeVar("S", bound=msgspec.Struct)


def decode_config(config_type: type[Any], params: dict[str, object] | msgspec.Struct) -> Any:
    """Validate ``params`` into a frozen config struct; errors name the field."""
    if isinstance(params, config_type):
        return params
    try:
        config = msgspec.convert(params, config_type, strict=False)
    except msgspec.ValidationError as exc:
        raise AgentConfigError(f"{config_type.__name__}: {exc}") from exc
    # msgspec's bounds let infinity through (``gt=0`` holds for inf) and ``.nan`` / ``.inf``
    # are valid YAML: an agent would take them to its first quote (int(nan) raises there).
    for name in config_type.__struct_fields__:
        value = getattr(config, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise AgentConfigError(f"{config_type.__name__}: {name} must be finite, got {value}")
    return config


class BaseAgent(Generic[S]):
    """Book-keeping shared by the built-in agents; subclasses implement ``on_event``.

    ``self.state`` is the subclass's mutable msgspec struct: everything it learns from the
    market lives there, so ``snapshot`` captures it and a restored agent continues exactly.
    """

    market_events: ClassVar[frozenset[type[MarketEvent]] | None] = None
    """The market event types ``on_event`` reads; None: every type. An agent that declares
    them promises that any other event is a no-op for it (no output, no state change:
    ``tests/agents/test_market_events.py`` checks it on real data), so the kernel's agent
    stage does not call it for those (on a depth feed, most events are level updates that
    only the venue's book reads)."""

    def __init__(self, agent_id: str, instrument: Instrument, state: S) -> None:
        if not agent_id:
            raise AgentConfigError("agent_id must be a non-empty string")
        self.agent_id = agent_id
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.core = CoreState()
        self.state = state
        self.rejections = 0

    # -- intents --------------------------------------------------------------------------
    def next_seq(self) -> int:
        self.core.seq += 1
        return self.core.seq

    def signal(self, ts_ns: int, strength: float, reason: str = "") -> Signal:
        return Signal(
            ts_event_ns=ts_ns,
            agent_id=self.agent_id,
            symbol=self.symbol,
            strength=max(-1.0, min(1.0, strength)),
            seq=self.next_seq(),
            reason=reason,
        )

    def order(
        self,
        ts_ns: int,
        side: Side,
        qty_lots: int,
        *,
        limit_ticks: int | None = None,
        tif: TimeInForce = TimeInForce.GTC,
        reduce_only: bool = False,
    ) -> OrderIntent:
        """An intent, registered as open so later decisions see it as pending."""
        intent = OrderIntent(
            ts_event_ns=ts_ns,
            agent_id=self.agent_id,
            seq=self.next_seq(),
            symbol=self.symbol,
            side=side,
            qty_lots=qty_lots,
            limit_ticks=limit_ticks,
            order_type=OrderType.MARKET if limit_ticks is None else OrderType.LIMIT,
            tif=TimeInForce.IOC if limit_ticks is None else tif,
            reduce_only=reduce_only,
        )
        self.core.open_orders[intent.client_order_id] = OpenOrder(
            client_order_id=intent.client_order_id,
            side=side,
            qty_lots=qty_lots,
            leaves_lots=qty_lots,
            limit_ticks=limit_ticks,
            ts_event_ns=ts_ns,
        )
        return intent

    def cancel(self, ts_ns: int, client_order_id: str) -> CancelIntent:
        open_order = self.core.open_orders.get(client_order_id)
        if open_order is not None:
            open_order.cancel_sent = True
        return CancelIntent(
            ts_event_ns=ts_ns,
            agent_id=self.agent_id,
            seq=self.next_seq(),
            symbol=self.symbol,
            target_client_order_id=client_order_id,
        )

    def pending_lots(self) -> int:
        """Signed quantity still working in open orders (+ buys)."""
        return sum(int(o.side) * o.leaves_lots for o in self.core.open_orders.values())

    def backing_off(self, ts_ns: int) -> bool:
        """True while an agent waits after a refused order. Why: an agent that re-sends at
        every event what risk just denied (a tripped kill switch, a full position) or the
        venue rejected (below its minimum notional) floods the coordinator with one refused
        intent per event for as long as the cause lasts; it now retries after 1 s, 2 s, 4 s
        ... at most a minute apart, and at once again after a fill or an accepted order."""
        return ts_ns < self.core.retry_at_ns

    def _refused(self, ts_ns: int) -> None:
        core = self.core
        core.refusals += 1
        core.retry_at_ns = ts_ns + min(RETRY_FIRST_NS << min(core.refusals - 1, 6), RETRY_MAX_NS)

    def trade_towards(self, ts_ns: int, target_lots: int) -> list[AgentOutput]:
        """Market order for the gap between ``target_lots`` and position plus pending
        (nothing while :meth:`backing_off`)."""
        if self.backing_off(ts_ns):
            return []
        gap = target_lots - self.core.position_lots - self.pending_lots()
        # orders are whole order steps (the book's size grid may be finer): trade the steps
        # of the gap, towards zero
        step = self.instrument.lots_per_step
        gap = (abs(gap) // step * step) * (1 if gap > 0 else -1)
        if gap == 0:
            return []
        side = Side.BUY if gap > 0 else Side.SELL
        return [self.order(ts_ns, side, abs(gap))]

    # -- reports --------------------------------------------------------------------------
    def on_report(self, report: AgentReport, now_ns: int) -> Sequence[AgentOutput]:
        if report.agent_id != self.agent_id or report.symbol != self.symbol:
            self.rejections += 1
            return []
        open_order = self.core.open_orders.get(report.client_order_id)
        if isinstance(report, OrderFilled):
            signed = int(report.side) * report.qty_lots
            self.core.position_lots += signed
            # the settlement-asset cash a buy costs (negative for inverse contracts: see
            # Instrument.pnl_value), so cash + position value is PnL for every kind
            notional = self.instrument.pnl_value(report.price_ticks, report.qty_lots)
            self.core.cash_quote -= notional if report.side is Side.BUY else -notional
            self.core.cash_quote -= report.fee_quote
            if report.fee_lots:
                # lots of the coin the venue kept for its fees (Binance spot buys; fees finer
                # than a lot carried until they make one): they leave as a sale at the fill
                # price, as the portfolio books them, so their value is paid once (fee_quote)
                self.core.position_lots -= report.fee_lots
                self.core.cash_quote += self.instrument.pnl_value(
                    report.price_ticks, report.fee_lots
                )
            self.core.fees_quote += report.fee_quote
            self.core.fills += 1
            self.core.refusals = self.core.retry_at_ns = 0
            if open_order is not None:
                open_order.leaves_lots = report.leaves_lots
                if report.leaves_lots <= 0:
                    del self.core.open_orders[report.client_order_id]
            return self.on_fill(report, now_ns)
        if isinstance(report, OrderDenied):
            if open_order is not None:  # never sent: it is not working any more
                del self.core.open_orders[report.client_order_id]
                self._refused(report.ts_event_ns)
            return []
        if open_order is None:
            return []
        if report.status is OrderStatus.REJECTED and not open_order.cancel_sent:
            self._refused(report.ts_event_ns)  # the venue refused the order itself
        elif report.status is OrderStatus.ACCEPTED and report.reason is None:
            self.core.refusals = self.core.retry_at_ns = 0
        if report.status.is_final:
            del self.core.open_orders[report.client_order_id]
            return []
        if report.leaves_lots > 0:
            open_order.leaves_lots = report.leaves_lots
        if report.reason is not None and open_order.cancel_sent:
            # The venue refused or never confirmed our cancel and the order still works
            # (ccxt's cancel_refused / cancel_unconfirmed): it is not on its way out, so the
            # agent's next requote must cancel it again rather than skip it for good.
            open_order.cancel_sent = False
        return []

    def on_fill(self, fill: OrderFilled, now_ns: int) -> Sequence[AgentOutput]:
        """Hook: react to one of this agent's fills after the book-keeping is updated."""
        return []

    def equity_quote(self, initial_cash_quote: Decimal, mark_ticks: int) -> Decimal:
        """Cash plus the position marked at ``mark_ticks``."""
        position_value = self.instrument.pnl_value(mark_ticks, self.core.position_lots)
        return initial_cash_quote + self.core.cash_quote + position_value

    # -- persistence ----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode((self.core, self.state))

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's; on a bad snapshot nothing changes."""
        try:
            core, state = msgspec.msgpack.decode(data, type=_snapshot_type(type(self.state)))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise AgentStateError(
                f"{self.agent_id}: cannot restore {type(self).__name__} snapshot: {exc}"
            ) from exc
        self.core = core
        self.state = state


def _snapshot_type(state_type: type[Any]) -> Any:
    return tuple.__class_getitem__((CoreState, state_type))
