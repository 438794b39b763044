"""The coordinator's logic, one step at a time: marks, reports, kill switch, intents -> orders.

A step is deterministic given its inputs, which is what makes actor restarts exact: a
restarted coordinator restores the snapshot of the last completed step and recomputes.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

import msgspec

from sapphire.agents.base import AgentOutput
from sapphire.coordination.crossing import CrossBook
from sapphire.coordination.journal import OrderJournal
from sapphire.kernel.marks import FUNDING_MARK_MAX_AGE_NS, MarkBook
from sapphire.model.events import AnyMarketEvent, FundingRate, Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    AmendOrder,
    CancelIntent,
    CancelOrder,
    OrderDenied,
    OrderFilled,
    OrderIntent,
    OrderUpdate,
    Position,
    Signal,
    SubmitOrder,
)
from sapphire.risk.allocation import SignalAggregator, allocate_capital
from sapphire.risk.engine import NS_PER_DAY, RiskDecision, RiskEngine
from sapphire.risk.limits import RiskLimits
from sapphire.risk.portfolio import Portfolio
from sapphire.risk.regime import RegimeMonitor

Command = SubmitOrder | CancelOrder | AmendOrder


class StepResult(msgspec.Struct, kw_only=True):
    commands: list[Command] = msgspec.field(default_factory=list)
    # every order risk accepted, whole (the venue may get less of it: internal crossing)
    orders: list[SubmitOrder] = msgspec.field(default_factory=list)
    decisions: list[RiskDecision] = msgspec.field(default_factory=list)
    denials: list[OrderDenied] = msgspec.field(default_factory=list)
    signals: list[Signal] = msgspec.field(default_factory=list)
    positions: list[Position] = msgspec.field(default_factory=list)
    kill_switch_tripped: bool = False


# how long an order may stay open after a cancel sent under the kill switch before it is
# canceled again (1 s of event time: a venue answers in its latency, tens of ms)
KILL_RECANCEL_NS = 1_000_000_000


class CoordinatorCore:
    """Journal, pre-trade risk, portfolio and signal aggregation, one item at a time.

    The kernel's coordinator stage (``sapphire.kernel.coordinator``) calls the item methods
    in time order (reports at their arrival, marks as events become visible, intents at
    their decision time); :meth:`step` applies a batch of items at one instant (unit tests).
    """

    # funding settlements skipped for a mark over FUNDING_MARK_MAX_AGE_NS old (a class
    # default too: a core restored from an older checkpoint has no such attribute)
    funding_stale_marks = 0

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        limits: RiskLimits,
        capital_quote: Decimal,
        weights: Mapping[str, float],
        aggregation: str = "weighted",
        *,
        crossing: str = "venue",
        entry_ns: int = 0,
        order_memory_ns: int = 0,
        currency: str = "",
    ) -> None:
        """``crossing``: ``internal`` crosses opposing agents' orders in the firm
        (``sapphire.coordination.crossing``), booked ``entry_ns`` after the decision;
        ``order_memory_ns``: how long the journal keeps a final order (0: for ever);
        ``currency``: the firm's (``config.currency``; "" chooses it by the instruments)."""
        self.instruments = dict(instruments)
        self.portfolio = Portfolio(self.instruments, currency)
        self.journal = OrderJournal(order_memory_ns)
        self.risk = RiskEngine(
            limits, self.instruments, self.portfolio, allocate_capital(capital_quote, dict(weights))
        )
        self.marks = MarkBook()
        self.marks.marks = self.risk.marks  # one mark per symbol, read by risk and PnL alike
        self.aggregator = SignalAggregator(dict(weights), aggregation)
        self.fill_count = 0
        self._kill_requested = ""
        # orders asked to go under the kill switch, by when (``recancel``)
        self._kill_cancel_ns: dict[str, int] = {}
        self.crossing = crossing
        self.crosses = CrossBook(entry_ns)
        # risk modes read from the marks' own events, so they change at the same event in
        # every runner and window (``risk.regime``; None: the configured limits throughout)
        self.regime = RegimeMonitor(limits.regime) if limits.regime.enabled else None

    def new_reports(
        self, reports: Iterable[OrderUpdate | OrderFilled]
    ) -> list[OrderUpdate | OrderFilled]:
        """Reports not seen before (by fill id, or updates of orders not yet final), in
        order, without applying them; duplicates inside the batch are dropped too."""
        fresh: list[OrderUpdate | OrderFilled] = []
        fill_ids: set[str] = set()
        for report in reports:
            if not self.journal.is_new(report):
                continue
            if isinstance(report, OrderFilled):
                if report.fill_id in fill_ids:
                    continue
                fill_ids.add(report.fill_id)
            fresh.append(report)
        return fresh

    def recancel(self, now_ns: int, result: StepResult) -> None:
        """The kill switch is on and orders are still open: cancel again each one whose
        last cancel got no final answer within ``KILL_RECANCEL_NS`` (a live venue that
        refused it after its retries, or lost it), so nothing keeps resting under a tripped
        switch (the kernel's coordinator stage asks at each PnL grid point of event time). A
        paper venue answers a cancel within its latency: nothing is sent again."""
        if not self.risk.kill_switch_on:
            return
        sent = self._kill_cancel_ns
        kept: dict[str, int] = {}
        for e in self.journal.open_orders():
            if e.available_lots <= 0:
                continue
            cid = e.client_order_id
            last = sent.get(cid)
            if last is not None and now_ns - last < KILL_RECANCEL_NS:
                kept[cid] = last
                continue
            kept[cid] = now_ns
            result.commands.append(
                CancelOrder(ts_event_ns=now_ns, client_order_id=cid, symbol=e.symbol)
            )
        self._kill_cancel_ns = kept  # the orders still open only: bounded

    def check_losses(self, now_ns: int, result: StepResult) -> None:
        """Daily PnL against the loss limits as of ``now_ns`` (the day's baseline taken at
        the day's first check); a firm breach trips the kill switch, cancelling what rests.
        Checked at each intent and, by the kernel's coordinator stage, at each PnL grid
        point of event time, so a loss binds within that interval even while no agent
        sends an order."""
        risk = self.risk
        risk.refresh(now_ns)
        if risk.firm_breached_at_day_end:
            risk.firm_breached_at_day_end = False
            if risk.limits.kill_on_daily_loss and not risk.kill_switch_on:
                self._trip("firm daily loss limit breached (by the day's end)", now_ns, result)
        if risk.limits.kill_on_daily_loss and risk.firm_breached:
            self._trip("firm daily loss limit breached", now_ns, result)

    def request_kill(self, reason: str) -> None:
        """Trip the switch at the start of the next step (from an operator or a monitor)."""
        self._kill_requested = reason or "manual"

    def reset_kill(self) -> None:
        # a trip requested but not yet applied (no step since) goes with it: the operator's
        # reset came later, and left pending it tripped the run at the next step with the
        # console showing OFF
        self._kill_requested = ""
        self.risk.reset_kill_switch()

    # -- items, in time order ----------------------------------------------------------------
    def on_mark(self, event: AnyMarketEvent) -> None:
        if type(event) is FundingRate:
            # settles on the positions as the venue's account does, so a loss limit sees it;
            # not at a mark a day old (the prices ended, the funding file did not): counted
            rate = Decimal(event.rate)
            mark = self.marks.fresh(event.symbol, event.ts_event_ns, FUNDING_MARK_MAX_AGE_NS)
            if mark is None and self.marks.get(event.symbol) is not None:
                self.funding_stale_marks += 1
            self.portfolio.apply_funding(event.symbol, rate, mark)
        self.marks.update(event)
        if self.regime is not None:
            scaled = self.regime.on_event(event)
            if scaled is not None:
                self.risk.set_limit_scale(*scaled)

    def on_report(self, report: OrderUpdate | OrderFilled, now_ns: int) -> Position | None:
        """Apply one venue report; a fill returns the agent's new position."""
        if self.journal.apply(report, now_ns) and isinstance(report, OrderFilled):
            if self.crossing == "internal" and not report.liquidation:
                entry = self.journal.entries[report.client_order_id]
                over = entry.filled_lots - entry.qty_lots
                if over > 0:  # what the venue's confirmation of every cross rules out
                    self.crosses.stats.overfill_lots += min(over, report.qty_lots)
            self.portfolio.apply_fill(report)
            self.fill_count += 1
            return self.portfolio.to_message(report.agent_id, report.symbol, now_ns)
        return None

    def start_step(self, now_ns: int, result: StepResult) -> None:
        """An operator's kill request takes effect at the start of the next window."""
        if self._kill_requested:
            reason, self._kill_requested = self._kill_requested, ""
            self._trip(reason, now_ns, result)

    def on_output(self, agent_id: str, output: AgentOutput, result: StepResult) -> None:
        """Route one agent output at its decision time (``output.ts_event_ns``)."""
        now_ns = output.ts_event_ns
        if isinstance(output, Signal):
            self.aggregator.update(output)
            result.signals.append(output)
        elif isinstance(output, OrderIntent):
            if output.agent_id != agent_id:
                output = msgspec.structs.replace(output, agent_id=agent_id)
            self.check_losses(now_ns, result)
            open_lots = self.journal.open_lots(agent_id, output.symbol, output.side)
            consensus = self.aggregator.consensus(output.symbol)
            decision = self.risk.check(output, open_lots, now_ns, consensus)
            self._apply_decision(output, decision, result)
        elif isinstance(output, CancelIntent):
            entry = self.journal.entries.get(output.target_client_order_id)
            if entry is not None and entry.agent_id == agent_id and not entry.status.is_final:
                entry.cancel_sent = True
                result.commands.append(
                    CancelOrder(
                        ts_event_ns=now_ns,
                        client_order_id=entry.client_order_id,
                        symbol=entry.symbol,
                    )
                )

    def on_intents(self, items: Sequence[tuple[str, OrderIntent]], result: StepResult) -> None:
        """``on_output`` for a run of (agent id, intent) with nothing else between them (no
        mark, report or other output), in time order: the same decisions, orders and
        denials, with the risk checks done for the run at once (``RiskEngine.check_batch``).
        A run it does not model exactly goes through ``on_output`` one intent at a time."""
        if not items:
            return
        intents = [
            i if i.agent_id == a else msgspec.structs.replace(i, agent_id=a) for a, i in items
        ]
        first_ns = intents[0].ts_event_ns
        day = first_ns // NS_PER_DAY
        entries = self.journal.entries
        ids = [i.client_order_id for i in intents]
        decisions = None
        # the per-intent path refreshes daily PnL at each intent: one refresh stands for all
        # only within one day; a replayed client order id is not recorded, so it adds no
        # open lots: both go the per-intent way
        if (
            intents[-1].ts_event_ns // NS_PER_DAY == day
            and len(set(ids)) == len(ids)
            and not any(cid in entries for cid in ids)
        ):
            self.risk.refresh(first_ns)
            decisions = self.risk.check_batch(
                intents, self.journal.open_lots_by_key, self.aggregator.consensus, ids
            )
        if decisions is None:
            for agent_id, intent in items:
                self.on_output(agent_id, intent, result)
            return
        for intent, decision in zip(intents, decisions, strict=True):
            self._apply_decision(intent, decision, result)

    def _apply_decision(
        self, intent: OrderIntent, decision: RiskDecision, result: StepResult
    ) -> None:
        result.decisions.append(decision)
        if decision.accepted:
            order = SubmitOrder.from_intent(intent)
            if self.journal.record_submit(order):
                result.orders.append(order)
                self._route(order, result)
        else:
            assert decision.reason is not None
            result.denials.append(
                OrderDenied(
                    ts_event_ns=decision.ts_event_ns,
                    client_order_id=decision.client_order_id,
                    agent_id=intent.agent_id,
                    symbol=intent.symbol,
                    reason=decision.reason,
                    detail=decision.detail,
                )
            )

    def _route(self, order: SubmitOrder, result: StepResult) -> None:
        """Send ``order`` to the venue, or first cross what it can inside the firm."""
        if self.crossing != "internal":
            result.commands.append(order)
            return
        incoming = self.journal.entries[order.client_order_id]
        inst = self.instruments.get(order.symbol)
        # never through the market: a cross no worse for the incoming order than the touch
        # (a buy crossed a sell resting 30 USDT above the best ask, at that sell's price),
        # nor than the price band for a market order
        bound = self.marks.cross_bound(order.symbol, int(order.side))
        band = self.risk.market_bound(order.symbol, order.side)
        if bound is not None and band is not None:
            bound = min(bound, band) if order.side is Side.BUY else max(bound, band)
        result.commands.extend(
            self.crosses.route(order, incoming, self.journal.open_orders(), inst, bound)
        )

    def resolve_cross(
        self, report: OrderUpdate
    ) -> tuple[list[OrderUpdate | OrderFilled], OrderUpdate | None]:
        """A venue report, as it comes back from the venue (before it is delivered): the
        crosses it confirms, and what of it is delivered (None: nothing)."""
        if self.crossing != "internal":
            return [], report
        return self.crosses.resolve(report, self.instruments.get(report.symbol))

    def _trip(self, reason: str, now_ns: int, result: StepResult) -> None:
        was_on = self.risk.kill_switch_on
        self.risk.trip_kill_switch(reason)
        if not was_on:
            result.kill_switch_tripped = True
            result.commands.extend(self._cancel_all(now_ns))

    def step(
        self,
        events: Sequence[AnyMarketEvent],
        reports: Iterable[OrderUpdate | OrderFilled],
        outputs_by_agent: Mapping[str, Sequence[AgentOutput]],
        now_ns: int,
    ) -> StepResult:
        """Everything at one instant: marks, then reports, then outputs (agent id order)."""
        result = StepResult()
        for event in events:
            self.on_mark(event)
        touched: dict[tuple[str, str], None] = {}
        for report in reports:
            if self.on_report(report, now_ns) is not None:
                touched[(report.agent_id, report.symbol)] = None
        for agent_id, symbol in sorted(touched):
            result.positions.append(self.portfolio.to_message(agent_id, symbol, now_ns))
        self.start_step(now_ns, result)
        for agent_id in sorted(outputs_by_agent):
            for output in outputs_by_agent[agent_id]:
                self.on_output(
                    agent_id, msgspec.structs.replace(output, ts_event_ns=now_ns), result
                )
        return result

    def _cancel_all(self, now_ns: int) -> list[CancelOrder]:
        out = []
        sent: dict[str, int] = {}
        for e in self.journal.open_orders():
            # an order crossed whole in the firm is not at the venue (or is being canceled)
            if e.available_lots > 0:
                e.cancel_sent = True
                sent[e.client_order_id] = now_ns
                out.append(
                    CancelOrder(
                        ts_event_ns=now_ns, client_order_id=e.client_order_id, symbol=e.symbol
                    )
                )
        self._kill_cancel_ns = sent  # when each was asked to go (``recancel``)
        return out

    def snapshot(self) -> bytes:
        return pickle.dumps(self.__dict__, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        self.__dict__.update(pickle.loads(data))
