"""CoordinatorActor: routes one batch per step through agents, risk, execution and storage.

It is the system's router and its journal. A step: fetch the market batch; run every agent
on it in parallel (with the previous step's execution reports); risk-check their intents
(``sapphire.coordination.CoordinatorCore``); send the orders to the execution actor; persist
every row; checkpoint. Every callee is idempotent per step (``actors.stepper``), so a restart
of any actor, this one included, neither loses nor duplicates an order or a row.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import ray

from actors import metrics
from actors.checkpoint import make_store
from actors.codec import decode_events, decode_messages, encode_messages
from actors.rows import StepRows
from actors.stepper import AsyncStepper
from sapphire.config.system import SystemConfig
from sapphire.coordination.core import CoordinatorCore
from sapphire.model.instrument import Instrument
from sapphire.model.orders import OrderFilled, OrderStatus, OrderUpdate, SubmitOrder

log = logging.getLogger(__name__)

KILL_KEY = "kill-switch"


@ray.remote(max_restarts=-1, max_task_retries=-1)
class CoordinatorActor:
    def __init__(
        self,
        config: SystemConfig,
        run_id: str,
        instruments: dict[str, Instrument],
        actor_names: dict[str, str],
        agent_names: dict[str, str],
        checkpoint_location: str,
    ) -> None:
        # Peers are looked up by name (not passed as handles), so a restarted coordinator
        # finds them again without depending on constructor arguments kept by the driver.
        ns = config.ray.namespace
        self.config = config
        self.run_id = run_id
        self.market_data = ray.get_actor(actor_names["market-data"], namespace=ns)
        self.execution = ray.get_actor(actor_names["execution"], namespace=ns)
        self.sink = ray.get_actor(actor_names["storage-sink"], namespace=ns)
        self.agents = {a: ray.get_actor(n, namespace=ns) for a, n in agent_names.items()}
        self.core = CoordinatorCore(
            instruments,
            config.risk,
            Decimal(config.capital_quote),
            {a.id: a.weight for a in config.agents},
            config.aggregation,
        )
        self.pending_reports: list[OrderUpdate | OrderFilled] = []
        self.rows = StepRows(run_id, "coordinator", config.storage.store_ticks)
        self.quarantined: dict[str, str] = {}
        self.counters: dict[str, int] = {"events": 0, "orders": 0, "cancels": 0, "steps": 0}
        self.latency_s: list[float] = []
        self.stage_s: dict[str, float] = {}
        self.venue_rejections: dict[str, int] = {}
        self.metrics = metrics.StepMetrics()
        self.metrics.on_limits(config.risk, [a.id for a in config.agents])
        self._sink_incarnation = ""
        self._inflight: Any = None
        self._resend_all = False
        self._agents_ready = False
        self._llm_records: list[Any] = []
        self._store = make_store(checkpoint_location)
        self._stepper: AsyncStepper[dict[str, Any]] = AsyncStepper(
            self._store, "coordinator", self._snapshot, self._restore
        )
        kill = self._store.load(KILL_KEY)
        if kill:
            self.core.request_kill(kill.decode())

    # -- checkpointing --------------------------------------------------------------------
    def _snapshot(self) -> bytes:
        state = (
            self.core.snapshot(),
            self.pending_reports,
            self.rows.snapshot(),
            self.quarantined,
            self.counters,
            self.venue_rejections,
        )
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def _restore(self, data: bytes) -> None:
        state = pickle.loads(data)
        core, self.pending_reports, rows, self.quarantined, self.counters = state[:5]
        self.venue_rejections = state[5]
        self.core.restore(core)
        self.rows.restore(rows)
        self._resend_all = True  # the sink may have lost what the last incarnation sent

    # -- control --------------------------------------------------------------------------
    async def trip_kill_switch(self, reason: str = "manual") -> None:
        """Halts all order flow from the next routing decision on, and cancels resting
        orders. Persisted first, so a restart cannot forget it."""
        self._store.save(KILL_KEY, reason.encode())
        self.core.request_kill(reason)

    async def reset_kill_switch(self) -> None:
        self._store.save(KILL_KEY, b"")
        self.core.reset_kill()

    # -- the step -------------------------------------------------------------------------
    async def run_step(self, step: int) -> dict[str, Any]:
        return await self._stepper.run_async(step, lambda: self._step(step))

    async def _step(self, step: int) -> dict[str, Any]:
        clock = StageClock()
        events_data, now_ns, n_events, done = await self.market_data.get_batch.remote(step)
        events = decode_events(events_data)
        events_ref = ray.put(events_data)
        clock.lap("feed")
        outputs = await self._run_agents(step, events_ref)
        clock.lap("signal")
        result = self.core.step(events, self.pending_reports, outputs, now_ns)
        commands = encode_messages(list(result.commands))
        clock.lap("risk")
        reports_data = await self.execution.step.remote(step, events_ref, commands, now_ns)
        reports = self.core.new_reports(decode_messages(reports_data))
        for report in reports:
            if isinstance(report, OrderUpdate) and report.status is OrderStatus.REJECTED:
                reason = str(report.reason) if report.reason else "unknown"
                self.venue_rejections[reason] = self.venue_rejections.get(reason, 0) + 1
        clock.lap("exchange_ack")
        self.rows.add_step(events, self.pending_reports, outputs, result, self.core, now_ns)
        self.rows.add_llm(self._llm_records)
        self._llm_records = []
        self.pending_reports = reports
        await self._persist(now_ns)
        clock.lap("storage")
        submits = sum(1 for c in result.commands if isinstance(c, SubmitOrder))
        self.counters["events"] += n_events
        self.counters["orders"] += submits
        self.counters["cancels"] += len(result.commands) - submits
        self.counters["steps"] += 1
        for stage, seconds in clock.laps.items():
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds
        if len(self.latency_s) < 100_000:
            self.latency_s.append(clock.total())
        progress = {
            "step": step,
            "events": n_events,
            "done": done and not reports,
            "now_ns": now_ns,
            "fills": self.core.fill_count,
            "kill_switch": self.core.risk.kill_switch_on,
            "orders": submits,
            "stage_s": clock.laps,
        }
        self.metrics.on_step(progress, outputs, result.commands, reports)
        if progress["done"] or self.metrics.summary_due():
            self.metrics.on_summary(await self.summary())
        return progress

    async def _wait_for_agents(self) -> None:
        """An agent's first call includes starting its worker process, which can take far
        longer than a step on a busy machine: wait for that once, before timing steps."""
        if self._agents_ready:
            return
        pending = [a for a in sorted(self.agents) if a not in self.quarantined]
        for agent_id in pending:
            try:
                await asyncio.wait_for(_await(self.agents[agent_id].stats.remote()), 300)
            except (TimeoutError, ray.exceptions.RayError) as exc:
                self.quarantined[agent_id] = f"did not start: {type(exc).__name__}"
        self._agents_ready = True

    async def _run_agents(self, step: int, events_ref: Any) -> dict[str, Sequence[Any]]:
        await self._wait_for_agents()
        by_agent: dict[str, list[Any]] = {a: [] for a in self.agents}
        for report in self.pending_reports:
            if report.agent_id in by_agent:
                by_agent[report.agent_id].append(report)
        live = [a for a in sorted(self.agents) if a not in self.quarantined]
        calls = [self._call_agent(a, step, events_ref, encode_messages(by_agent[a])) for a in live]
        results = await asyncio.gather(*calls)
        return {a: out for a, out in zip(live, results, strict=True)}

    async def _call_agent(self, agent_id: str, step: int, events_ref: Any, reports: bytes) -> Any:
        ref = self.agents[agent_id].step.remote(step, events_ref, reports)
        try:
            data, llm_records = await asyncio.wait_for(_await(ref), self.config.ray.agent_timeout_s)
        except TimeoutError:
            # A hung agent would stall everyone: it is quarantined, the others trade on.
            self.quarantined[agent_id] = f"timed out at step {step}"
            log.error(
                "agent %s quarantined: no answer in %ss", agent_id, self.config.ray.agent_timeout_s
            )
            ray.cancel(ref, force=False)
            return []
        except ray.exceptions.RayError as exc:
            self.quarantined[agent_id] = f"failed at step {step}: {type(exc).__name__}"
            log.error("agent %s quarantined: %s", agent_id, exc)
            return []
        self._llm_records.extend(llm_records)
        return decode_messages(data)

    async def _persist(self, now_ns: int) -> None:
        """Send this step's rows without waiting for the store: the write of step k is
        awaited during step k+1, so flushing overlaps the next batch. Rows stay in
        ``unacked`` (and in the checkpoint) until the sink reports them committed. A sink
        that turns out to be a new incarnation refuses the write, and a restored coordinator
        cannot know what the sink has: both re-send everything uncommitted (the sink drops
        what it already has)."""
        fresh = self.rows.take_new()
        await self._settle_inflight(now_ns)
        if self._resend_all:
            self._resend_all = False
            await self._resend(now_ns)
        else:
            self._inflight = self.sink.write.remote(
                "coordinator", fresh, now_ns, self._sink_incarnation
            )

    async def _resend(self, now_ns: int) -> None:
        unacked = self.rows.unacked()
        incarnation, marks, _ = await self.sink.write.remote("coordinator", unacked, now_ns, "")
        self._sink_incarnation = incarnation
        self.rows.acknowledge(marks)

    async def _settle_inflight(self, now_ns: int) -> None:
        if self._inflight is None:
            return
        incarnation, marks, accepted = await self._inflight
        self._inflight = None
        if not accepted:
            self.counters["sink_restarts_seen"] = self.counters.get("sink_restarts_seen", 0) + 1
            log.warning("storage sink restarted; re-sending %d rows", self.rows.unacked_count())
            await self._resend(now_ns)
            return
        self._sink_incarnation = incarnation
        self.rows.acknowledge(marks)

    async def finish(self) -> dict[str, Any]:
        """Flush the sink until every row of this run is committed."""
        await self._settle_inflight(0)
        if self._resend_all:
            self._resend_all = False
            await self._resend(0)
        _, marks = await self.sink.flush.remote("coordinator", self.rows.unacked())
        self.rows.acknowledge(marks)
        return {"unacked_rows": self.rows.unacked_count()}

    async def summary(self) -> dict[str, Any]:
        core = self.core
        agents = {}
        for (agent_id, symbol), state in sorted(core.portfolio.positions.items()):
            mark = core.risk.marks.get(symbol)
            unreal = core.portfolio.unrealized_quote(agent_id, symbol, mark)
            agents[f"{agent_id}/{symbol}"] = {
                "position_lots": state.qty_lots,
                "traded_lots": state.traded_lots,
                "realized_quote": str(state.realized_pnl_quote),
                "fees_quote": str(state.fees_quote),
                "pnl_quote": str(state.realized_pnl_quote - state.fees_quote + unreal),
            }
        return {
            "counters": dict(self.counters),
            "fills": core.fill_count,
            "orders_by_status": core.journal.counts_by_status(),
            "risk_rejections": {r.value: n for r, n in core.risk.rejections.items()},
            "venue_rejections": dict(self.venue_rejections),
            "kill_switch": core.risk.kill_switch_on,
            "restored": self._stepper.restored,
            "quarantined": dict(self.quarantined),
            "agents": agents,
            "rows": self.rows.counts(),
            "step_latency_s": list(self.latency_s),
            "stage_s": {**self.stage_s, "checkpoint": self._stepper.checkpoint_s},
            "checkpoint_bytes": self._stepper.checkpoint_bytes,
        }


class StageClock:
    """Seconds spent per stage of one step (feed, signal, risk, exchange_ack, storage)."""

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = now - self._last
        self._last = now

    def total(self) -> float:
        return self._last - self._start


async def _await(ref: Any) -> Any:
    return await ref
