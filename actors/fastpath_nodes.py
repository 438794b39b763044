"""The three stages of the low-latency path (``actors.fastpath``) as plain classes.

They hold the same pure objects as the lockstep system (an ``Agent``, a ``CoordinatorCore``,
an ``ExecutionGateway``) and speak msgpack bytes (``actors.codec``), so one class serves as
a Ray actor in a compiled graph, as a plain actor, or in-process. Each stage stamps when it
finished with ``time.perf_counter`` (CLOCK_MONOTONIC on Linux: comparable across the
processes of one host), which is how the driver splits a tick's latency by hop.

Input of every stage: a ``Tick`` tuple ``(events, reports, now_ns)``: the market batch, the
venue reports of the previous tick (the venue's report stream), and the batch's time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from actors.codec import decode_events, decode_messages, encode_messages
from sapphire.agents.base import Agent, AgentOutput
from sapphire.coordination.core import CoordinatorCore
from sapphire.exchange.gateway import ExecutionGateway, apply_command
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    OrderUpdate,
    SubmitOrder,
)
from sapphire.risk.limits import RiskLimits

log = logging.getLogger(__name__)

Tick = tuple[bytes, bytes, int]
# (what a stage produced, when it finished): one output per agent of an AgentNode
Stamped = tuple[bytes, float]
AgentsStamped = tuple[tuple[bytes, ...], float]
# (reports, commands received, when risk finished, when the venue finished)
VenueReply = tuple[bytes, int, float, float]


class AgentNode:
    """One or more agents in one process (fewer hops per tick where cores are few); each
    agent's reports are picked out of the shared report stream by agent id."""

    def __init__(self, members: list[tuple[str, Callable[[], Agent]]]) -> None:
        self.agents = [(agent_id, build()) for agent_id, build in members]
        self.errors = 0

    def on_tick(self, tick: Tick) -> AgentsStamped:
        events_data, reports_data, _ = tick
        events = decode_events(events_data)
        reports = decode_messages(reports_data) if reports_data else []
        encoded = []
        for agent_id, agent in self.agents:
            outputs: list[AgentOutput] = []
            for report in reports:
                if report.agent_id == agent_id:
                    outputs.extend(self._guarded(agent_id, agent.on_report, report))
            for event in events:
                outputs.extend(self._guarded(agent_id, agent.on_event, event))
            encoded.append(encode_messages(outputs))
        return tuple(encoded), time.perf_counter()

    def _guarded(self, agent_id: str, handler: Callable[[Any, int], Any], msg: Any) -> list[Any]:
        try:
            return list(handler(msg, msg.ts_event_ns))
        except Exception:  # as in AgentActor: an agent bug skips the event, never the tick
            self.errors += 1
            if self.errors <= 10:
                log.exception("agent %s raised; event skipped", agent_id)
            return []


class RiskNode:
    """Pre-trade risk and routing: ``CoordinatorCore.step`` on the agents' outputs, which
    arrive positionally, one per AgentNode, in ``groups`` order (as the graph binds them)."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        limits: RiskLimits,
        capital_quote: Decimal,
        weights: Mapping[str, float],
        aggregation: str,
        groups: list[list[str]],
    ) -> None:
        self.core = CoordinatorCore(instruments, limits, capital_quote, weights, aggregation)
        self.groups = [list(g) for g in groups]
        self.orders = 0

    def route(self, tick: Tick, *group_outputs: AgentsStamped) -> Stamped:
        events, reports, now_ns = tick
        outputs = {}
        for ids, (encoded, _) in zip(self.groups, group_outputs, strict=True):
            for agent_id, data in zip(ids, encoded, strict=True):
                outputs[agent_id] = decode_messages(data)
        result = self.core.step(
            decode_events(events), decode_messages(reports) if reports else [], outputs, now_ns
        )
        self.orders += sum(1 for c in result.commands if isinstance(c, SubmitOrder))
        return encode_messages(list(result.commands)), time.perf_counter()

    def summary(self) -> dict[str, Any]:
        return {
            "fills": self.core.fill_count,
            "orders": self.orders,
            "orders_by_status": self.core.journal.counts_by_status(),
            "risk_rejections": {r.value: n for r, n in self.core.risk.rejections.items()},
        }


class VenueNode:
    """Owns the gateway: market events first, then this tick's commands, then the reports due
    (the same order as ``ExecutionActor``, so both paths trade alike)."""

    def __init__(self, build_gateway: Callable[[], ExecutionGateway]) -> None:
        self.gateway = build_gateway()
        self.errors = 0

    def execute(self, tick: Tick, routed: Stamped) -> VenueReply:
        events, _, now_ns = tick
        commands = decode_messages(routed[0])
        for event in decode_events(events):
            self.gateway.on_market_event(event)
        reports: list[Any] = []
        for command in commands:
            reject = self._apply(command, now_ns)
            if reject is not None:
                reports.append(reject)
        reports.extend(self.gateway.poll(now_ns))
        return encode_messages(reports), len(commands), routed[1], time.perf_counter()

    def _apply(self, command: Any, now_ns: int) -> OrderUpdate | None:
        reject = apply_command(self.gateway, command, now_ns)
        if reject is not None:
            self.errors += 1
        return reject

    def record(self) -> ExecutionGateway:
        """The venue itself (a paper exchange pickles whole), for its fills and orders."""
        return self.gateway
