"""Low-latency path: tick -> agents -> risk -> venue, one tick at a time, as a Ray Compiled Graph.

The lockstep system (``actors.coordinator``) moves batches of thousands of events per actor
call, because a plain Ray actor call costs ~0.5-1 ms: fine for throughput, too slow per tick.
A compiled graph (``ray.dag`` + ``experimental_compile``) sets the chain up once and then
moves each tick through shared-memory channels, without task submission or the object store:
    input (events, last reports, now_ns)
      -> every AgentNode, in parallel -> RiskNode (CoordinatorCore.step) -> VenueNode -> output
The venue's reports come back to the driver and go into the next tick's input (they are the
venue's report stream; a compiled graph cannot have a cycle).

Cost: Ray 2.60's compiled-graph readers poll, so each actor of a compiled path burns ~0.3
core even with no tick in flight (benchmarks/tick_to_order_latency.py measures it): give the
path dedicated cores. On a small host ``agent_actors=1`` (all agents in one actor) keeps
the tail down: on 2 cores, one actor per agent loses p95 to the agents fighting for CPU.
``mode="actors"`` wires the same nodes with plain actor calls (the naive baseline) and
``mode="local"`` runs them in this process (no Ray): all three trade identically.

Not here: checkpoints and restarts (a dead actor fails the tick; rebuild the path) and agent
quarantine (a hung agent stalls the tick until ``timeout_s``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from typing import Any, Literal

import ray

from actors import wiring
from actors.codec import decode_messages, encode_events
from actors.fastpath_nodes import AgentNode, RiskNode, Tick, VenueNode, VenueReply
from sapphire.config.system import SystemConfig
from sapphire.exchange.gateway import ExecutionGateway
from sapphire.model.events import AnyMarketEvent

Mode = Literal["compiled", "actors", "local"]


@dataclass(frozen=True)
class TickResult:
    reports_data: bytes
    commands: int  # orders, cancels and amends the venue received on this tick
    started: float  # perf_counter when the tick entered the path (before encoding)
    risk_done: float
    venue_done: float  # the venue has applied the commands: the orders are acknowledged
    returned: float  # the driver holds the venue's reports

    @property
    def to_venue_s(self) -> float:
        """Tick -> order acknowledged by the venue."""
        return self.venue_done - self.started

    @property
    def round_trip_s(self) -> float:
        return self.returned - self.started

    def reports(self) -> list[Any]:
        reports: list[Any] = decode_messages(self.reports_data)
        return reports


class FastPath:
    def __init__(
        self,
        config: SystemConfig,
        *,
        mode: Mode = "compiled",
        agent_actors: int | None = None,
        actor_num_cpus: float = 0.0,
        timeout_s: float = 10.0,
    ) -> None:
        """``agent_actors``: how many actors the agents are dealt into (round robin by id);
        default one per agent, all stepped in parallel."""
        if mode not in ("compiled", "actors", "local"):
            raise ValueError(f"mode must be compiled, actors or local, not {mode!r}")
        if not config.agents:
            raise wiring.WiringError("the fast path needs at least one agent")
        self.mode = mode
        self.timeout_s = timeout_s
        self.instruments = wiring.load_instruments(config.data)
        self.agent_ids = sorted(spec.id for spec in config.agents)
        specs = {spec.id: spec for spec in config.agents}
        for spec in config.agents:
            if spec.symbol not in self.instruments:
                raise wiring.WiringError(f"agent {spec.id}: symbol {spec.symbol!r} not in the data")
        if agent_actors is not None and agent_actors < 1:
            raise ValueError(f"agent_actors must be >= 1, not {agent_actors}")
        n_groups = min(agent_actors or len(self.agent_ids), len(self.agent_ids))
        self.groups = [self.agent_ids[i::n_groups] for i in range(n_groups)]
        agent_args = [
            [
                (aid, wiring.agent_builder(specs[aid], self.instruments[specs[aid].symbol]))
                for aid in g
            ]
            for g in self.groups
        ]
        risk_args = (
            self.instruments,
            config.risk,
            Decimal(config.capital_quote),
            {a.id: a.weight for a in config.agents},
            config.aggregation,
            self.groups,
        )
        venue_build = wiring.gateway_builder(config.exchange, self.instruments)
        self._last_ns = 0
        self._reports = b""
        self._dag: Any = None
        self._closed = False
        if mode == "local":
            self.agents: list[Any] = [AgentNode(members) for members in agent_args]
            self.risk: Any = RiskNode(*risk_args)
            self.venue: Any = VenueNode(venue_build)
            return
        opts = {"num_cpus": actor_num_cpus, "max_restarts": 0}
        self.agents = [ray.remote(AgentNode).options(**opts).remote(m) for m in agent_args]
        self.risk = ray.remote(RiskNode).options(**opts).remote(*risk_args)
        self.venue = ray.remote(VenueNode).options(**opts).remote(venue_build)
        try:
            # Worker start-up takes seconds on a busy host: not the first tick's latency.
            ready = [a.__ray_ready__.remote() for a in [*self.agents, self.risk, self.venue]]
            ray.get(ready, timeout=max(120.0, timeout_s))
            if mode == "compiled":
                self._dag = self._compile()
        except BaseException:
            self.shutdown()
            raise

    def _compile(self) -> Any:
        from ray.dag import InputNode

        with InputNode() as tick:
            outputs = [agent.on_tick.bind(tick) for agent in self.agents]
            routed = self.risk.route.bind(tick, *outputs)
            dag = self.venue.execute.bind(tick, routed)
        return dag.experimental_compile()

    # -- ticks ----------------------------------------------------------------------------
    def tick(self, events: Sequence[AnyMarketEvent]) -> TickResult:
        started = time.perf_counter()
        for event in events:
            self._last_ns = max(self._last_ns, event.ts_recv_ns or event.ts_event_ns)
        tick: Tick = (encode_events(list(events)), self._reports, self._last_ns)
        reports, commands, risk_done, venue_done = self._run(tick)
        returned = time.perf_counter()
        self._reports = reports
        return TickResult(reports, commands, started, risk_done, venue_done, returned)

    def _run(self, tick: Tick) -> VenueReply:
        if self.mode == "local":
            outputs = [agent.on_tick(tick) for agent in self.agents]
            reply: VenueReply = self.venue.execute(tick, self.risk.route(tick, *outputs))
            return reply
        if self.mode == "compiled":
            ref = self._dag.execute(tick)
        else:
            refs = [agent.on_tick.remote(tick) for agent in self.agents]
            ref = self.venue.execute.remote(tick, self.risk.route.remote(tick, *refs))
        reply = ray.get(ref, timeout=self.timeout_s)
        return reply

    def run(self, events: Iterable[AnyMarketEvent], batch_events: int = 1) -> Iterator[TickResult]:
        """One tick per ``batch_events`` events, then ticks with no events until the venue has
        nothing more to report at the last event's time."""
        stream = iter(events)
        while batch := list(islice(stream, batch_events)):
            yield self.tick(batch)
        for _ in range(16):
            if not self._reports or not decode_messages(self._reports):
                return
            yield self.tick([])

    # -- results --------------------------------------------------------------------------
    def close(self) -> tuple[ExecutionGateway, dict[str, Any]]:
        """Tear the path down; returns the venue (its fills, orders) and the risk summary."""
        if self.mode == "local":
            return self.venue.record(), self.risk.summary()
        if self._closed:
            raise RuntimeError("this fast path is already closed")
        try:
            self._teardown_dag()  # until then the actors answer nothing but the graph
            refs = [self.venue.record.remote(), self.risk.summary.remote()]
            venue, summary = ray.get(refs, timeout=max(60.0, self.timeout_s))
        finally:
            self.shutdown()
        return venue, summary

    def shutdown(self) -> None:
        """Tear down and kill the actors, without collecting anything (idempotent)."""
        if self.mode == "local" or self._closed:
            return
        self._closed = True
        self._teardown_dag()
        for actor in [*self.agents, self.risk, self.venue]:
            ray.kill(actor, no_restart=True)

    def _teardown_dag(self) -> None:
        if self._dag is not None:
            dag, self._dag = self._dag, None
            dag.teardown()

    def __enter__(self) -> FastPath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def replay_events(config: SystemConfig, limit: int) -> list[AnyMarketEvent]:
    """The first ``limit`` events of the config's data, in replay order."""
    feed = wiring.stream_opener(config.data, wiring.load_instruments(config.data))()
    return list(islice(iter(feed), limit))
