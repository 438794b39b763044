"""The agents' stage of a kernel step: each agent sees, in time order, the market events that
became visible in the window (``t + feed_ns``) and the reports that arrived in it.

At equal times a report comes before a market event (it was in the agent's inbox first).
Every output is stamped with its decision time ``now + decision_ns``. An agent that raises is
contained: the call yields nothing, the error is counted, and the agent trades on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from sapphire.agents.base import Agent, AgentOutput
from sapphire.kernel.timing import Timing, Window, split_visible
from sapphire.model.events import (
    AnyMarketEvent,
    BookDelta,
    BookDeltas,
    MarketEvent,
    Side,
    as_levels,
    rows_in,
)
from sapphire.model.orders import (
    AgentReport,
    CancelIntent,
    OrderDenied,
    OrderIntent,
    OrderType,
    Signal,
    TimeInForce,
)

log = logging.getLogger(__name__)


class AgentStageState(msgspec.Struct, kw_only=True):
    errors: dict[str, int] = msgspec.field(default_factory=dict)
    events_seen: int = 0
    # outputs refused at the boundary, per agent, and the last reason (stored in summaries)
    invalid: dict[str, int] = msgspec.field(default_factory=dict)
    invalid_reason: dict[str, str] = msgspec.field(default_factory=dict)
    # per agent, the seq of its last output let through: seqs only grow (they name orders)
    last_seq: dict[str, int] = msgspec.field(default_factory=dict)
    # per agent, the market events it was given (those of the types it reads)
    read: dict[str, int] = msgspec.field(default_factory=dict)


MAX_UNITS = 1 << 53  # ticks and lots beyond this are no market's and break int64 columns
MAX_ID = 64  # symbols and order ids longer than this are no venue's


def invalid_output(output: object, symbols: frozenset[str]) -> str | None:
    """Why ``output`` cannot leave an agent, or None. Whatever an agent (or a model behind
    it) returns is checked here, so risk, the venue and the store only see sane messages."""
    if not isinstance(output, OrderIntent | CancelIntent | Signal):
        return f"not an agent output: {type(output).__name__}"
    # a struct checks no types when built: an agent may hand over anything in a field
    if type(output.symbol) is not str or not output.symbol or len(output.symbol) > MAX_ID:
        return f"bad symbol {str(output.symbol)[:MAX_ID]!r}"
    if symbols and output.symbol not in symbols:
        return f"unknown symbol {output.symbol!r}"
    if type(output.seq) is not int or not 0 <= output.seq < MAX_UNITS:
        return f"seq {output.seq!r} is not an int in range"
    if isinstance(output, OrderIntent):
        # enums by identity, as risk and the venue test them: a side of 0 or 1, an order
        # type "limit" passed the price band and position checks and then crashed the venue
        for name, kind in (("side", Side), ("order_type", OrderType), ("tif", TimeInForce)):
            if type(getattr(output, name)) is not kind:
                return f"{name} {getattr(output, name)!r} is not a {kind.__name__}"
        if type(output.reduce_only) is not bool:
            return f"reduce_only {output.reduce_only!r} is not a bool"
        if type(output.qty_lots) is not int:
            return f"qty_lots {output.qty_lots!r} is not a whole number of lots"
        if output.limit_ticks is not None and type(output.limit_ticks) is not int:
            return f"limit_ticks {output.limit_ticks!r} is not a whole number of ticks"
        if not 0 < output.qty_lots < MAX_UNITS:
            return f"qty_lots {output.qty_lots} out of range"
        if output.limit_ticks is not None and not 0 < output.limit_ticks < MAX_UNITS:
            return f"limit_ticks {output.limit_ticks} out of range"
    elif isinstance(output, CancelIntent):
        if len(output.target_client_order_id) > MAX_ID:
            return "cancel target id too long"
    elif not math.isfinite(output.strength):
        return "signal strength is not finite"
    return None


class AgentStage:
    """One or more agents (one per Ray actor in the system, all of them in one process)."""

    def __init__(
        self, agents: Sequence[Agent], timing: Timing, symbols: Iterable[str] = ()
    ) -> None:
        self.agents: dict[str, Agent] = {a.agent_id: a for a in agents}
        self.timing = timing
        self.symbols = frozenset(symbols)  # empty: any symbol (checked by risk downstream)
        self.state = AgentStageState(errors={a: 0 for a in self.agents})
        self._kinds: dict[str, frozenset[type[MarketEvent]] | None] = {
            a.agent_id: getattr(a, "market_events", None) for a in agents
        }
        # a depth message's levels come as one BookDeltas; an agent that reads BookDelta (or
        # every type) without naming BookDeltas gets them one by one, as recorded
        self._expands: dict[str, bool] = {
            a: kinds is None or (BookDelta in kinds and BookDeltas not in kinds)
            for a, kinds in self._kinds.items()
        }
        # events seen by the venue but not yet visible to agents (feed latency)
        self._carried: list[AnyMarketEvent] = []

    def step(
        self,
        window: Window,
        events: Sequence[AnyMarketEvent],
        reports: Mapping[str, Sequence[AgentReport]],
    ) -> dict[str, list[AgentOutput]]:
        """Outputs per agent for one window; ``reports`` arrived in the window (per agent)."""
        if window.warmup:
            return {agent_id: [] for agent_id in self.agents}
        visible, self._carried = split_visible(
            self._carried, events, window.end_ns - self.timing.feed_ns
        )
        self.state.events_seen += rows_in(visible)
        # each agent gets the event types it reads (``BaseAgent.market_events``): the others
        # are no-ops for it, and a depth feed is mostly level updates only the venue reads
        read: dict[tuple[frozenset[type[MarketEvent]], bool], list[AnyMarketEvent]] = {}
        levels: Sequence[AnyMarketEvent] | None = None  # visible, messages as their levels
        out: dict[str, list[AgentOutput]] = {}
        for agent_id, agent in self.agents.items():
            kinds = self._kinds[agent_id]
            expand = self._expands[agent_id]
            events_of: Sequence[AnyMarketEvent] = visible
            if expand:
                if levels is None:
                    levels = as_levels(visible)
                events_of = levels
            if kinds is not None:
                got = read.get((kinds, expand))
                if got is None:
                    got = read[(kinds, expand)] = [e for e in events_of if type(e) in kinds]
                events_of = got
            if events_of:
                self.state.read[agent_id] = self.state.read.get(agent_id, 0) + len(events_of)
            out[agent_id] = self._run_agent(agent_id, agent, events_of, reports.get(agent_id, ()))
        return out

    def _run_agent(
        self,
        agent_id: str,
        agent: Agent,
        events: Sequence[AnyMarketEvent],
        reports: Sequence[AgentReport],
    ) -> list[AgentOutput]:
        feed = self.timing.feed_ns
        decision = self.timing.decision_ns
        out: list[AgentOutput] = []
        on_event = agent.on_event
        on_report = agent.on_report
        times = [report_time(rep, self.timing) for rep in reports]
        r = 0
        n_reports = len(reports)
        for event in events:
            now = event.ts_event_ns + feed
            while r < n_reports and times[r] <= now:
                self._call(agent_id, on_report, reports[r], times[r], out)
                r += 1
            self._call(agent_id, on_event, event, now, out)
        while r < n_reports:
            self._call(agent_id, on_report, reports[r], times[r], out)
            r += 1
        return [_stamp(o, decision) for o in out] if decision else out

    def _call(
        self,
        agent_id: str,
        fn: Callable[[Any, int], Sequence[AgentOutput]],
        item: Any,
        now: int,
        out: list[AgentOutput],
    ) -> None:
        try:
            produced = fn(item, now)
            if not produced:
                return
            if type(produced) is not list and type(produced) is not tuple:
                # iterated here, inside the try: a generator that raises is an agent error
                produced = self._listed(agent_id, produced)
        except Exception:  # an agent bug must not take the stage (or the system) down
            errors = self.state.errors.get(agent_id, 0) + 1
            self.state.errors[agent_id] = errors
            if errors <= 10:
                log.exception("agent %s raised; input skipped", agent_id)
            return
        for o in produced:
            why = invalid_output(o, self.symbols) or self._not_its_own(agent_id, o)
            if why is not None:
                self._refuse(agent_id, why)
                continue
            # the decision is made now, whatever time the agent wrote on it
            out.append(o if o.ts_event_ns == now else msgspec.structs.replace(o, ts_event_ns=now))

    def _listed(self, agent_id: str, produced: object) -> list[AgentOutput]:
        """An agent's return that is not a list or tuple: any other iterable of outputs is
        taken whole; one output alone (the commonest slip: ``return intent``), a string or
        a mapping is refused, counted as one refused output. Iterated as it was, a bare
        intent raised outside the agent's guard and ended ``sapphire backtest`` with a
        traceback and nothing stored, while ``sapphire run`` retried and quarantined it."""
        if isinstance(produced, msgspec.Struct | str | bytes | Mapping) or not isinstance(
            produced, Iterable
        ):
            self._refuse(
                agent_id, f"returned a {type(produced).__name__}, not a sequence of outputs"
            )
            return []
        return list(produced)

    def _refuse(self, agent_id: str, why: str) -> None:
        st = self.state
        st.invalid[agent_id] = st.invalid.get(agent_id, 0) + 1
        st.invalid_reason[agent_id] = why
        if st.invalid[agent_id] <= 10:
            log.warning("agent %s: output refused: %s", agent_id, why)

    def _not_its_own(self, agent_id: str, output: AgentOutput) -> str | None:
        """Why a valid output cannot leave as ``agent_id``'s: written in another agent's name
        (its intent was stored as that agent's, its order as this one's), or a seq not past
        its last (a repeated output was stored and accepted twice, sent once)."""
        if output.agent_id != agent_id:
            return f"agent_id {str(output.agent_id)[:MAX_ID]!r} is not {agent_id!r}"
        last = self.state.last_seq.get(agent_id, -1)
        if output.seq <= last:
            return f"seq {output.seq} repeats or goes back (last {last})"
        self.state.last_seq[agent_id] = output.seq
        return None

    def unheard(self) -> dict[str, str]:
        """Agents given none of the run's market events: the data holds none of the types
        they read (an A-S maker on a depth-only feed reads trades, quotes and snapshots), so
        they never acted. Said in the summary: the run looked like a quiet market."""
        st = self.state
        if not st.events_seen:
            return {}
        out = {}
        for agent_id, kinds in self._kinds.items():
            if kinds is not None and not st.read.get(agent_id):
                names = ", ".join(sorted(k.__name__ for k in kinds))
                out[agent_id] = f"none of the run's {st.events_seen:,} events is a {names}"
        return out

    def refused_outputs(self) -> dict[str, str]:
        """Per agent with refused outputs: how many, and the last reason (for summaries)."""
        st = self.state
        return {a: f"{n} refused, last: {st.invalid_reason[a]}" for a, n in st.invalid.items()}

    # -- persistence ----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        import pickle

        agents = {a: agent.snapshot() for a, agent in self.agents.items()}
        return pickle.dumps((agents, self.state, self._carried), protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        import pickle

        agents, self.state, self._carried = pickle.loads(data)
        for agent_id, blob in agents.items():
            self.agents[agent_id].restore(blob)


def report_time(report: AgentReport, timing: Timing) -> int:
    """When a report reaches the system: venue reports after the response latency; a risk
    denial one lookahead after the decision (the earliest time every runner can deliver it
    the same way, since agents and risk run in different processes)."""
    if type(report) is OrderDenied:
        return report.ts_event_ns + timing.lookahead_ns
    return report.ts_event_ns + timing.response_ns


def _stamp(output: AgentOutput, decision_ns: int) -> AgentOutput:
    if not decision_ns:
        return output
    return msgspec.structs.replace(output, ts_event_ns=output.ts_event_ns + decision_ns)
