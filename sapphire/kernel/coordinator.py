"""The coordinator's stage of a kernel step: one timeline per window.

In time order (ties: reports, then market events, then agent outputs): venue reports at
their arrival update the journal and the portfolio; market events, as they become visible,
move the marks; agent outputs, at their decision time, go through pre-trade risk and become
commands for the venue's next step. Outputs decided after the window, and events not yet
visible, wait for their window. Storage rows are produced in that same order, and PnL is
snapshotted on a fixed grid of market time, so the rows do not depend on the window either.

Internal crossing (``coordinator.crossing: internal``, ``sapphire.coordination.crossing``):
risk's accepted order may cross other agents' resting orders; the venue's answers to the
cancels and amends that take the crossed lots off the venue are read as they come back (in
the venue's order, before any window delivers them) and become the cross's fills, delivered
at the same time as those answers.
"""

from __future__ import annotations

import heapq
import pickle
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from sapphire.agents.base import AgentOutput
from sapphire.coordination.core import Command, CoordinatorCore, StepResult
from sapphire.coordination.crossing import CrossedMoney
from sapphire.kernel.agents import report_time
from sapphire.kernel.rows import StepRows
from sapphire.kernel.timing import Timing, Window, split_visible
from sapphire.model.events import AnyMarketEvent, rows_in
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    AgentReport,
    OrderDenied,
    OrderFilled,
    OrderIntent,
    OrderStatus,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
)
from sapphire.risk.portfolio import FirmPnl, PositionState
from sapphire.storage.money import round_money
from sapphire.storage.records import PnlSnapshot

_NEVER = 1 << 62


_CENT = Decimal("0.01")


def money(value: Decimal, asset: str = "") -> str:
    """Cash for people, no exponent, no 28-digit tails: rounded as the stored tables round
    it (``round_money``: half-even at the scale of ``asset``, 8 decimals for USDT and BTC, 9
    for ETH; 8 where no asset is named), as the tables and the report show it. ETH rounded to
    8 here and printed to 9 read -0.003470670 where its stored row says -0.003470666."""
    return f"{round_money(value, asset):f}"


class CoordinatorStep(msgspec.Struct, kw_only=True):
    """What one window did: the commands the venue gets next, and the step's counts."""

    window: Window
    commands: list[Command]
    events: int
    reports: int
    submits: int
    cancels: int
    fills_total: int
    kill_switch: bool
    kill_switch_tripped: bool
    done: bool


class StepProgress(msgspec.Struct, kw_only=True):
    """What a runner reports after each step (progress bars, metrics, drivers)."""

    step: int
    events: int
    done: bool
    now_ns: int
    fills: int
    kill_switch: bool = False
    orders: int = 0
    stage_s: dict[str, float] = msgspec.field(default_factory=dict)


class Counters(msgspec.Struct, kw_only=True):
    events: int = 0
    orders: int = 0
    cancels: int = 0
    steps: int = 0
    denied: int = 0
    clamped: int = 0


class CoordinatorStage:
    def __init__(
        self,
        core: CoordinatorCore,
        timing: Timing,
        rows: StepRows,
        *,
        pnl_interval_ns: int = 1_000_000_000,
        agent_symbols: Mapping[str, str] | None = None,
    ) -> None:
        self.core = core
        # every configured (agent, symbol): the summary lists idle agents too
        self.agent_symbols = dict(agent_symbols or {})
        self.timing = timing
        self.rows = rows
        self.pnl_interval_ns = pnl_interval_ns
        self.counters = Counters()
        self.venue_rejections: dict[str, int] = {}
        self._seq = 0
        # (arrival, seq, report): venue reports and risk denials not yet delivered
        self._inbox: list[tuple[int, int, AgentReport]] = []
        # (decision time, seq, agent, output): outputs decided after their window's end
        self._outputs: list[tuple[int, int, str, AgentOutput]] = []
        self._carried: list[AnyMarketEvent] = []  # not yet visible (feed latency)
        self._inflight: list[int] = []  # when sent commands reach the venue
        self._seen_fills: set[str] = set()
        self._last_update: dict[str, tuple[OrderStatus, int]] = {}
        self.stale_reports = 0  # venue order states older than one already known (dropped)
        self._next_pnl_ns = -_NEVER
        self._last_pnl_ns = -_NEVER

    # -- between steps --------------------------------------------------------------------
    def pending_ns(self) -> int | None:
        """The earliest time something is due in any stage (None: nothing in flight)."""
        heads = [
            self._inbox[0][0] if self._inbox else _NEVER,
            self._outputs[0][0] if self._outputs else _NEVER,
            self._carried[0].ts_event_ns + self.timing.feed_ns if self._carried else _NEVER,
            self._inflight[0] if self._inflight else _NEVER,
        ]
        head = min(heads)
        return None if head == _NEVER else head

    def take_due(self, window: Window) -> list[AgentReport]:
        """Reports and denials that arrive in ``window``, in arrival order (before agents run:
        they get theirs from this list too)."""
        due: list[AgentReport] = []
        inbox = self._inbox
        while inbox and inbox[0][0] < window.end_ns:
            due.append(heapq.heappop(inbox)[2])
        return due

    def add_venue_reports(
        self, reports: Sequence[OrderUpdate | OrderFilled], arrived_ns: int | None = None
    ) -> list[AgentReport]:
        """The venue's reports of a step, delivered ``response_ns`` after it made them (a
        simulated venue), or at ``arrived_ns`` (a live venue: they arrived when its step
        returned, whatever its clock says). A fill reported twice (a live venue after a
        reconnect) is delivered once. Returns the internal crosses' fills these reports
        booked (the venue never reports those: metrics count them from here)."""
        crossed: list[AgentReport] = []
        entries = self.core.journal.entries
        for report in reports:
            if type(report) is OrderFilled:
                if report.fill_id in self._seen_fills:
                    continue
                if report.client_order_id not in entries and not report.liquidation:
                    # an order the journal does not hold (forgotten, final for longer than
                    # it keeps orders): whether this fill was told before cannot be known,
                    # and the firm does not count it, so its agent must not either
                    self.stale_reports += 1
                    continue
                self._seen_fills.add(report.fill_id)
            elif type(report) is OrderUpdate:
                # the venue's answer to an internal cross's cancel or amend books the cross
                # (here, in the venue's order: the same for every window and runner)
                made, delivered = self.core.resolve_cross(report)
                for internal in made:
                    self._push(internal, arrived_ns)
                crossed.extend(made)
                if delivered is not None:
                    self._push(delivered, arrived_ns)
                continue
            self._push(report, arrived_ns)
        return crossed

    def _push(self, report: AgentReport, at_ns: int | None = None) -> None:
        self._seq += 1
        at = report_time(report, self.timing) if at_ns is None else at_ns
        heapq.heappush(self._inbox, (at, self._seq, report))

    # -- the step -------------------------------------------------------------------------
    def step(
        self,
        window: Window,
        events: Sequence[AnyMarketEvent],
        due: Sequence[AgentReport],
        outputs: Mapping[str, Sequence[AgentOutput]],
    ) -> CoordinatorStep:
        if window.warmup:
            return self._warmup_step(window, events)
        core = self.core
        end = window.end_ns
        result = StepResult()
        # orders final for longer than the journal keeps them: their last states and fill
        # ids go too (a run's memory and checkpoints stay bounded however long it trades)
        for cid, fill_ids in core.journal.forget(window.start_ns):
            self._last_update.pop(cid, None)
            self._seen_fills.difference_update(fill_ids)
            core.crosses.forget(cid)
        self.rows.add_ticks(events)
        core.start_step(window.start_ns, result)
        for agent_id in sorted(outputs):
            for out in outputs[agent_id]:
                self._seq += 1
                heapq.heappush(self._outputs, (out.ts_event_ns, self._seq, agent_id, out))
        # (time, priority, item): reports 0 and outputs 2; market events (1) are merged in
        # below without sorting them, since they are already in time order
        others: list[tuple[int, int, int, Any]] = []
        for i, report in enumerate(due):
            others.append((report_time(report, self.timing), 0, i, report))
        while self._outputs and self._outputs[0][0] < end:
            d, seq, agent_id, out = heapq.heappop(self._outputs)
            others.append((d, 2, seq, (agent_id, out)))
        others.sort(key=lambda item: (item[0], item[1], item[2]))

        feed = self.timing.feed_ns
        visible, self._carried = split_visible(self._carried, events, end - feed)
        j = 0
        n_others = len(others)
        grid = self._next_pnl_ns
        on_mark = core.on_mark
        for event in visible:
            now = event.ts_event_ns + feed
            if j < n_others and others[j][0] <= now:
                while j < n_others and (
                    others[j][0] < now or (others[j][0] == now and others[j][1] == 0)
                ):
                    j = self._process_next(others, j, now, result)
                grid = self._next_pnl_ns
            if now >= grid:
                self._grid(now, result)
                grid = self._next_pnl_ns
            on_mark(event)
        while j < n_others:
            j = self._process_next(others, j, _NEVER, result)
        if core.regime is not None:  # the risk desk's model decisions, stored as agents' are
            self.rows.add_llm(core.regime.take_records())
        if window.last:
            self._pnl(end - 1, final=True)

        # what the venue ran in this window is done; what was decided now arrives later
        self._inflight = [t for t in self._inflight if t >= end]
        for command in result.commands:
            self._inflight.append(command.ts_event_ns + self.timing.entry_ns)
        heapq.heapify(self._inflight)
        submits = sum(1 for c in result.commands if type(c) is SubmitOrder)
        rows = rows_in(events)
        c = self.counters
        c.events += rows
        c.orders += submits
        c.cancels += len(result.commands) - submits
        c.steps += 1
        return CoordinatorStep(
            window=window,
            commands=result.commands,
            events=rows,
            reports=len(due),
            submits=submits,
            cancels=len(result.commands) - submits,
            fills_total=core.fill_count,
            kill_switch=core.risk.kill_switch_on,
            kill_switch_tripped=result.kill_switch_tripped,
            done=window.last,
        )

    def _warmup_step(self, window: Window, events: Sequence[AnyMarketEvent]) -> CoordinatorStep:
        self.counters.steps += 1
        return CoordinatorStep(
            window=window,
            commands=[],
            events=rows_in(events),
            reports=0,
            submits=0,
            cancels=0,
            fills_total=self.core.fill_count,
            kill_switch=self.core.risk.kill_switch_on,
            kill_switch_tripped=False,
            done=window.last,
        )

    def _process_next(
        self, others: list[tuple[int, int, int, Any]], j: int, before: int, result: StepResult
    ) -> int:
        """Process ``others[j]``, or the run of order intents it starts (decided before
        ``before`` and before the next PnL grid point, with nothing else between them) at
        once through the batch risk check; the index of the next item to process."""
        t, kind, _, payload = others[j]
        if kind != 2 or type(payload[1]) is not OrderIntent:
            self._process(others[j], result)
            return j + 1
        if t >= self._next_pnl_ns:
            self._pnl(t)
        limit = min(before, self._next_pnl_ns)
        k = j + 1
        n = len(others)
        while k < n and others[k][1] == 2 and others[k][0] < limit:
            if type(others[k][3][1]) is not OrderIntent:
                break
            k += 1
        if k == j + 1:
            self._process(others[j], result)
            return k
        items = [others[i][3] for i in range(j, k)]
        n_orders = len(result.orders)
        n_decisions = len(result.decisions)
        n_denials = len(result.denials)
        rows = self.rows
        for _, out in items:
            rows.add_output(out)
        self.core.on_intents(items, result)
        for decision in result.decisions[n_decisions:]:
            rows.add_decision(decision)
        for order in result.orders[n_orders:]:
            rows.add_submit(order)
        for denial in result.denials[n_denials:]:
            self.counters.denied += 1
            self._push(denial)
        return k

    def _process(self, item: tuple[int, int, int, Any], result: StepResult) -> None:
        t, kind, _, payload = item
        if t >= self._next_pnl_ns:
            self._grid(t, result)
        if kind == 0:
            report: AgentReport = payload
            if type(report) is OrderDenied:
                return  # for its agent only: the decision is stored already
            assert isinstance(report, OrderUpdate | OrderFilled)
            liquidation = type(report) is OrderFilled and report.liquidation
            if report.client_order_id not in self.core.journal.entries and not liquidation:
                return  # an answer about an order that is not ours (but the venue's close)
            if isinstance(report, OrderFilled):
                if not self.core.journal.is_new(report):
                    return  # a fill seen before
            else:
                # every state change is stored (the final FILLED after its fills, too), once
                state = (report.status, report.filled_lots)
                last = self._last_update.get(report.client_order_id)
                if last == state:
                    return
                if last is not None and (last[0].is_final or report.filled_lots < last[1]):
                    # a stale answer arriving late (a live venue after a gateway restart can
                    # re-tell an older state): an order never goes back from final, nor from
                    # what it has filled
                    self.stale_reports += 1
                    return
                self._last_update[report.client_order_id] = state
                # a refusal, and a self-trade expiry (the venue's prevention ends one side
                # of a match between two of the account's orders: no longer refused up
                # front, but it is still the venue declining a trade)
                if report.status is OrderStatus.REJECTED or (
                    report.status is OrderStatus.EXPIRED
                    and report.reason is RejectReason.SELF_TRADE
                ):
                    reason = str(report.reason) if report.reason else "unknown"
                    self.venue_rejections[reason] = self.venue_rejections.get(reason, 0) + 1
            self.rows.add_report(report)
            position = self.core.on_report(report, t)
            if position is not None:
                self.rows.add_position(position)
            return
        agent_id, out = payload
        n_orders = len(result.orders)
        n_decisions = len(result.decisions)
        n_denials = len(result.denials)
        self.rows.add_output(out)
        self.core.on_output(agent_id, out, result)
        for decision in result.decisions[n_decisions:]:
            self.rows.add_decision(decision)
        for order in result.orders[n_orders:]:
            self.rows.add_submit(order)  # the whole order, whatever part the venue gets
        for denial in result.denials[n_denials:]:
            self.counters.denied += 1
            self._push(denial)

    def _grid(self, now_ns: int, result: StepResult) -> None:
        """A PnL grid point of event time passed: the loss limits are checked (a firm
        breach trips the kill switch between intents too), orders still open under a
        tripped switch are canceled again, then every position's PnL is stored."""
        self.core.check_losses(now_ns, result)
        self.core.recancel(now_ns, result)  # a tripped switch leaves nothing resting
        self._pnl(now_ns)

    def _pnl(self, now_ns: int, *, final: bool = False) -> None:
        """Snapshot every position's PnL at the grid point at or before ``now_ns``."""
        interval = self.pnl_interval_ns
        at = now_ns if final else now_ns - now_ns % interval
        self._next_pnl_ns = now_ns - now_ns % interval + interval
        if at <= self._last_pnl_ns:
            return
        self._last_pnl_ns = at
        for (agent_id, symbol), state, unreal, pnl in self._positions():
            self.rows.add_pnl(
                PnlSnapshot(
                    ts_event_ns=at,
                    agent_id=agent_id,
                    symbol=symbol,
                    position_lots=state.qty_lots,
                    realized_pnl_quote=state.realized_pnl_quote,
                    unrealized_pnl_quote=unreal,
                    fees_quote=state.fees_quote,
                    equity_quote=pnl,
                    funding_quote=state.funding_quote,
                )
            )

    def _positions(self) -> list[tuple[tuple[str, str], PositionState, Decimal, Decimal]]:
        """Every (agent, symbol) position with its unrealized PnL at the mark and its total
        PnL (realized - fees + unrealized), for the PnL rows and the summary alike."""
        core = self.core
        out = []
        for key, state in sorted(core.portfolio.positions.items()):
            unreal = core.portfolio.unrealized_quote(*key, core.marks.get(key[1]))
            out.append((key, state, unreal, state.booked_quote + unreal))
        return out

    # -- reading ----------------------------------------------------------------------------
    def agent_rows(self) -> dict[str, dict[str, Any]]:
        """Per agent and symbol; money is in ``unit``, the instrument's settlement asset (the
        coin of an inverse contract, whose rows also carry the PnL's quote value at the mark)."""
        traded = {key for key, *_ in self._positions()}
        rows = {
            f"{agent_id}/{symbol}": self._row(symbol, 0, 0, PositionState(), Decimal(0))
            for agent_id, symbol in sorted(self.agent_symbols.items())
            if (agent_id, symbol) not in traded
        }
        return rows | {
            f"{agent_id}/{symbol}": self._row(
                symbol, state.qty_lots, state.traded_lots, state, unreal, pnl
            )
            for (agent_id, symbol), state, unreal, pnl in self._positions()
        }

    def _row(
        self,
        symbol: str,
        position_lots: int,
        traded_lots: int,
        state: PositionState,
        unreal: Decimal,
        pnl: Decimal = Decimal(0),
    ) -> dict[str, Any]:
        """One agent row, its money at the stored scale of the symbol's settlement asset
        (an idle agent's zeros too)."""
        inst = self.core.instruments.get(symbol)
        asset = inst.settle_asset if inst is not None else ""
        return {
            "position_lots": position_lots,
            "traded_lots": traded_lots,
            # for people: the quantities in the venue's unit (integer lots may be a finer
            # size grid than the order step: "1,000,000 lots" was 0.01 BTC)
            **self._quantities(inst, position_lots, traded_lots),
            "realized_quote": money(state.realized_pnl_quote, asset),
            "fees_quote": money(state.fees_quote, asset),
            "funding_quote": money(state.funding_quote, asset),
            "unrealized_quote": money(unreal, asset),
            "pnl_quote": money(pnl, asset),
            **self._units(symbol, pnl),
        }

    @staticmethod
    def _quantities(inst: Instrument | None, position: int, traded: int) -> dict[str, str]:
        if inst is None:
            return {}
        # a contract's quantity counts contracts (inverse: contract_size quote each; linear
        # with a contract size: that much base each), else base units
        unit = "contracts" if inst.inverse or inst.contract_size != "1" else inst.base
        return {
            "position": f"{inst.lots_to_qty(position).normalize():f}",
            "traded": f"{inst.lots_to_qty(traded).normalize():f}",
            "qty_unit": unit,
        }

    def _units(self, symbol: str, pnl: Decimal) -> dict[str, str]:
        inst = self.core.instruments.get(symbol)
        if inst is None:
            return {}
        out = {"unit": inst.settle_asset}
        mark = self.core.marks.get(symbol)
        if inst.inverse and mark is not None:
            # for people: the coin PnL's worth in the quote (USD) at the mark, to the cent
            value = inst.quote_value(pnl, Decimal(repr(mark))).quantize(_CENT)
            out["pnl_at_mark"] = f"{value:f} {inst.quote}"
        return out

    def summary(self) -> dict[str, Any]:
        """The trading state every runner reports the same way (the runner adds its own
        timings and fault counts)."""
        core = self.core
        firm = self.firm_summary()
        return {
            "counters": msgspec.structs.asdict(self.counters),
            "fills": core.fill_count,
            "orders_by_status": core.journal.counts_by_status(),
            "risk_rejections": {r.value: n for r, n in sorted(core.risk.rejections.items())},
            "venue_rejections": dict(sorted(self.venue_rejections.items())),
            "stale_venue_reports": self.stale_reports,
            "funding_stale_marks": core.funding_stale_marks,
            "in_flight": self.in_flight(),
            "crossing": self.crossing_summary(),
            "kill_switch": core.risk.kill_switch_on,
            "kill_reason": core.risk.kill_reason if core.risk.kill_switch_on else "",
            "agents": self.agent_rows(),
            "firm_pnl_quote": firm["total"],
            "firm_pnl": firm,
            "daily_pnl": self.daily_pnl(),
            "consensus": {s: core.aggregator.consensus(s) for s in core.aggregator.symbols()},
            "rows": self.rows.committed_counts(),
            "rows_produced": self.rows.counts(),
            "timing": msgspec.structs.asdict(self.timing),
        } | ({"regime": core.regime.summary()} if core.regime is not None else {})

    def in_flight(self) -> dict[str, int]:
        """Reports made but not yet delivered (the venue's fills and order states, risk's
        denials), by kind: at a run's end, what the venue did in its last response latency
        that the firm's positions and PnL do not hold yet."""
        kinds: dict[str, int] = {}
        for _, _, report in self._inbox:
            kind = "fills" if type(report) is OrderFilled else "order updates"
            kinds[kind] = kinds.get(kind, 0) + 1
        return dict(sorted(kinds.items()))

    def crossing_summary(self) -> dict[str, str | int]:
        """Opposing agents of the account: how many orders were crossed in the firm, what
        that saved, and what the venue's self-trade rejections that remain mean."""
        core = self.core
        st = core.crosses.stats
        out: dict[str, str | int] = {"policy": core.crossing}
        if core.crossing == "internal":
            out |= {"crosses": st.crosses, "crossed_lots": st.crossed_lots}
            # money per settlement asset, never summed across them; one asset (the usual
            # case) keeps the plain names, several name theirs ("... BTC"); none crossed:
            # the plain names at zero (rows absent read as "not measured")
            for asset, m in sorted(st.money.items()) or [("", CrossedMoney())]:
                unit = "" if len(st.money) <= 1 else f" {asset}"
                out |= {
                    f"crossed_notional_quote{unit}": money(m.notional, asset),
                    f"fees_saved_quote{unit}": money(
                        m.taker_fees_avoided + m.maker_fees_avoided, asset
                    ),
                    f"taker_fees_saved_quote{unit}": money(m.taker_fees_avoided, asset),
                    f"maker_fees_saved_quote{unit}": money(m.maker_fees_avoided, asset),
                }
            out |= {
                "resting_canceled": st.resting_canceled,
                "resting_amended": st.resting_amended,
                "failed_lots": st.failed_lots,
                "overfill_lots": st.overfill_lots,
            }
        if self.venue_rejections.get("self_trade"):
            out["self_trade_rejections"] = (
                "the venue's self-trade prevention expired orders that met a resting order of "
                "the same account: "
                + (
                    "an agent's own, or one the coordinator could not cross (a cancel or "
                    "fill under way, a remainder the venue would refuse)"
                    if core.crossing == "internal"
                    else "set coordinator.crossing: internal to cross other agents' in the firm"
                )
            )
        return out

    def firm_pnl(self) -> FirmPnl:
        """The firm's PnL per settlement asset and as one figure in its reporting currency,
        each asset converted at its current mark (``FirmPnl``)."""
        return self.core.portfolio.firm_pnl(self.core.marks.marks)

    def firm_pnl_quote(self) -> Decimal:
        """The firm's one PnL figure, in its reporting currency (partial while a settlement
        asset has no conversion mark: see :meth:`firm_summary`)."""
        return self.firm_pnl().total

    def daily_pnl(self) -> dict[str, Any]:
        """The PnL the daily loss limits read: each agent's per settlement asset and the
        firm's in its currency, since the risk engine's UTC day started (the run's PnL is
        since the run started: a loss alert on it kept firing the day after)."""
        risk = self.core.risk
        agents = sorted({key.partition("/")[0] for key in self.agent_rows()})
        return {
            "agents": {
                a: {
                    asset: money(v, asset)
                    for asset, v in sorted(risk.daily_pnl_by_asset(a).items())
                }
                for a in agents
            },
            "firm": money(risk.firm_daily_pnl().total, self.core.portfolio.reporting_asset),
        }

    def firm_summary(self) -> dict[str, Any]:
        firm = self.firm_pnl()
        out: dict[str, Any] = {
            "asset": firm.asset,
            "total": money(firm.total, firm.asset),
            "by_asset": {a: money(v, a) for a, v in sorted(firm.by_asset.items())},
            "rates": {a: f"{v:f}" for a, v in sorted(firm.rates.items())},
            "partial": firm.partial,
        }
        if firm.partial:
            out["missing"] = list(firm.missing)
        return out

    # -- persistence ----------------------------------------------------------------------
    # Everything the timeline carries between windows (the core and the rows snapshot
    # themselves): one list, so a new field cannot be saved and forgotten on restore.
    _STATE = (
        "counters",
        "venue_rejections",
        "_seq",
        "_inbox",
        "_outputs",
        "_carried",
        "_inflight",
        "_seen_fills",
        "_last_update",
        "stale_reports",
        "_next_pnl_ns",
        "_last_pnl_ns",
    )

    def snapshot(self) -> bytes:
        state = {name: getattr(self, name) for name in self._STATE}
        parts = (self.core.snapshot(), self.rows.snapshot(), state)
        return pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        core, rows, state = pickle.loads(data)
        for name in self._STATE:
            setattr(self, name, state.get(name, getattr(self, name)))
        # the firm's currency is the config's (``assembly.build_core``), as the run records
        # it for its report: a checkpoint written before the field has none to restore
        currency = self.core.portfolio.currency
        self.core.restore(core)
        self.core.portfolio.currency = currency
        self.rows.restore(rows)
