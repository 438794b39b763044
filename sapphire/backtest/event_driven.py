"""Event-driven backtest: any Agent, a stream of events, an ExecutionGateway.

One process, the clock set by the events (deterministic). For each event, in order:

1. the gateway sees the event (a bar gateway fills orders queued on the previous bar at
   this bar's open; a book gateway matches resting orders);
2. reports are polled and given to the ledger and to the agent;
3. the ledger marks equity (bar close, or the mid; at most every ``mark_interval_ns``);
4. the agent sees the event; its order and cancel intents go to the gateway, and the
   gateway is polled again so immediate acks and fills reach the agent before the next
   event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

from sapphire.agents.base import Agent, AgentOutput
from sapphire.agents.features import reference_price
from sapphire.backtest.ledger import BacktestResult, Ledger
from sapphire.exchange.gateway import ExecutionGateway, ExecutionReport
from sapphire.model.events import AnyMarketEvent, Bar, Trade
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    CancelIntent,
    CancelOrder,
    OrderFilled,
    OrderIntent,
    OrderStatus,
    OrderUpdate,
    SubmitOrder,
)

NS_PER_YEAR = 365.25 * 24 * 3600 * 1e9


class _Counters:
    def __init__(self) -> None:
        self.submitted = 0
        self.filled = 0
        self.rejected = 0
        self.cancels = 0
        self.signals = 0


def run_event_driven(
    agent: Agent,
    events: Iterable[AnyMarketEvent],
    gateway: ExecutionGateway,
    instrument: Instrument,
    initial_cash: Decimal,
    *,
    mark_interval_ns: int = 0,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    ledger = Ledger(instrument, initial_cash)
    counters = _Counters()
    mid = 0.0
    last_mark: int | float = 0
    last_mark_ns = -(1 << 62)
    count = 0
    bar_interval = 0
    # The loop runs once per event, so bound methods are looked up once and the common
    # case (no reports, no intents) costs two polls and no further calls.
    on_market_event = gateway.on_market_event
    poll = gateway.poll
    on_event = agent.on_event
    mark = ledger.mark
    for event in events:
        now = event.ts_event_ns
        count += 1
        kind = type(event)
        if kind is Bar:
            mid = float(event.open_ticks)  # type: ignore[union-attr]  # bar fills at this open
        on_market_event(event)
        reports = poll(now)
        if reports:
            _drain(agent, gateway, ledger, counters, now, mid, reports)
        if kind is Bar:
            bar_interval = event.interval_ns  # type: ignore[union-attr]
            close = event.close_ticks  # type: ignore[union-attr]
            mark(now, close)
            mid = float(close)
            last_mark = close
        else:
            if kind is Trade:
                ticks = event.price_ticks  # type: ignore[union-attr]
                price = float(ticks) if ticks > 0 else None
            else:
                price = reference_price(event, use_microprice=False)
            if price is not None:
                mid = last_mark = price
                if now - last_mark_ns >= mark_interval_ns:
                    mark(now, mid)
                    last_mark_ns = now
        outputs = on_event(event, now)
        if outputs:
            _dispatch(outputs, gateway, counters, now)
        reports = poll(now)
        if reports:
            _drain(agent, gateway, ledger, counters, now, mid, reports)
        if progress is not None and count % 4096 == 0:
            progress(count)
    periods = 0.0
    if bar_interval:
        periods = NS_PER_YEAR / bar_interval
    elif len(ledger.equity_ts) > 1:
        span = (ledger.equity_ts[-1] - ledger.equity_ts[0]) / (len(ledger.equity_ts) - 1)
        periods = NS_PER_YEAR / span if span > 0 else 0.0
    return ledger.result(
        last_mark,
        orders_submitted=counters.submitted,
        orders_filled=counters.filled,
        orders_rejected=counters.rejected,
        cancels=counters.cancels,
        signals=counters.signals,
        events=count,
        periods_per_year=periods,
    )


def _dispatch(
    outputs: Sequence[AgentOutput], gateway: ExecutionGateway, counters: _Counters, now: int
) -> None:
    for out in outputs:
        if isinstance(out, OrderIntent):
            counters.submitted += 1
            gateway.submit(SubmitOrder.from_intent(out), now)
        elif isinstance(out, CancelIntent):
            counters.cancels += 1
            gateway.cancel(
                CancelOrder(
                    ts_event_ns=now,
                    client_order_id=out.target_client_order_id,
                    symbol=out.symbol,
                ),
                now,
            )
        else:
            counters.signals += 1


def _drain(
    agent: Agent,
    gateway: ExecutionGateway,
    ledger: Ledger,
    counters: _Counters,
    now: int,
    mid: float,
    reports: Sequence[ExecutionReport],
) -> None:
    """Book ``reports`` (already polled), then keep polling while they prompt new intents."""
    # Reports can trigger new intents (a fill may prompt a requote); bounded to stay finite.
    for round_ in range(16):
        for report in reports:
            if isinstance(report, OrderFilled):
                ledger.apply(
                    report.ts_event_ns,
                    report.side,
                    report.price_ticks,
                    report.qty_lots,
                    report.fee_quote,
                    is_maker=report.is_maker,
                    ref_ticks=mid,
                )
                if report.leaves_lots <= 0:
                    counters.filled += 1
            elif isinstance(report, OrderUpdate) and report.status is OrderStatus.REJECTED:
                counters.rejected += 1
            _dispatch(agent.on_report(report, now), gateway, counters, now)
        if round_ == 15:
            return  # what is left stays queued in the gateway, as before
        reports = gateway.poll(now)
        if not reports:
            return
