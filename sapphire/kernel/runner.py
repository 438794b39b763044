"""The kernel in one process: what ``sapphire backtest`` runs, and what every other runner
must reproduce.

A step, for the window the cutter gives next (``sapphire.kernel.timing`` says why the three
stages need nothing from each other within a window):

1. the coordinator hands out the reports that arrive in the window;
2. the venue runs the commands decided before the window and the window's market events;
   the agents run the window's visible events and their reports (independent of 1.'s venue);
3. the coordinator runs its timeline (reports, marks, outputs through risk) and keeps the
   commands for the venue's next step and the venue's reports for later windows.

The Ray system (``actors/``) calls the same three stages, each in its own actor, in the same
order; only the transport differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sapphire.agents.base import Agent
from sapphire.config.system import SystemConfig
from sapphire.exchange.gateway import ExecutionGateway
from sapphire.kernel import assembly, builders
from sapphire.kernel.agents import AgentStage
from sapphire.kernel.coordinator import CoordinatorStage, CoordinatorStep
from sapphire.kernel.rows import StepRows
from sapphire.kernel.shards import merge_counts, merge_outputs, merge_reports
from sapphire.kernel.timing import Clock, Timing
from sapphire.kernel.venue import Command, VenueStage
from sapphire.kernel.windows import WindowCutter
from sapphire.model.events import AnyMarketEvent
from sapphire.model.instrument import Instrument
from sapphire.model.orders import AgentReport
from sapphire.model.times import utc_text
from sapphire.storage.sink import StorageSink

PRODUCER = "coordinator"
TAKE_ROWS = 50_000


def no_trading_events(warmup_steps: int) -> str:
    """Why a run whose data ended before its trading period began is an error, not a run."""
    return (
        f"the configured data has no market events in the trading period (data.start_ns, "
        f"end_ns, sessions): it ended after {warmup_steps} warm-up window(s)"
    )


class NoEventsError(ValueError):
    """The data produced no market event at all: never a silent, empty success."""


def no_events(
    rejected: Mapping[str, int],
    sessions_missing: Sequence[str],
    after_end_ns: int | None = None,
    end_ns: int | None = None,
) -> str:
    """Why the data gave no event: the rows rejected by reason, the selected sessions no
    file held (an instrument naming another symbol rejects every row as unknown_symbol), and
    a ``data.end_ns`` at or before the first event (``after_end_ns``: the cutter's)."""
    why = ", ".join(f"{reason} {n:,}" for reason, n in sorted(rejected.items()) if n)
    detail = [f"rows rejected: {why}"] if why else []
    if sessions_missing:
        detail.append(f"data.sessions found in no file: {list(sessions_missing)}")
    if after_end_ns is not None and end_ns is not None:
        detail.append(
            f"data.end_ns {utc_text(end_ns)} is at or before the data's first event "
            f"({utc_text(after_end_ns)})"
        )
    if not detail:
        detail.append("no row was rejected: the files hold none")
    return "the configured data produced no market events (" + "; ".join(detail) + ")"


def reports_by_agent(
    due: Sequence[AgentReport], agent_ids: Sequence[str] | Mapping[str, Any]
) -> dict[str, list[AgentReport]]:
    by_agent: dict[str, list[AgentReport]] = {a: [] for a in agent_ids}
    for report in due:
        bucket = by_agent.get(report.agent_id)
        if bucket is not None:
            bucket.append(report)
    return by_agent


class InProcessKernel:
    """All three stages in this process, stepped window by window."""

    def __init__(
        self,
        config: SystemConfig,
        run_id: str,
        *,
        instruments: dict[str, Instrument] | None = None,
        events: Iterator[AnyMarketEvent] | None = None,
        agents: Sequence[Agent] | None = None,
        gateway: ExecutionGateway | None = None,
        kill_switch: Callable[[], str] | None = None,
    ) -> None:
        """``kill_switch``: polled before every step; a non-empty reason trips the run's
        switch (the firm-wide switch of ``sapphire.adapters.kill_switch``)."""
        self.config = config
        self.run_id = run_id
        live = config.exchange.kind == "ccxt" and not config.exchange.factory
        if gateway is None and (live or config.data.source == "ccxt"):
            # said as what it is, not as the paper venue refusing a ccxt field
            raise builders.WiringError(
                "a live config (exchange.kind: ccxt or data.source: ccxt) trades through "
                "`sapphire run`; `sapphire backtest` replays recorded data on the paper venue"
            )
        self.instruments = instruments or assembly.load_instruments(config.data)
        assembly.check_agents(config, self.instruments)
        self.timing: Timing = assembly.timing(config)
        self.window_ns = assembly.window_ns(config)
        self.shards = assembly.shards(config, self.instruments)
        if agents is None:
            agents = [
                builders.agent_builder(
                    spec,
                    self.instruments[spec.symbol],
                    self.shards.legs(spec.id, self.instruments),
                    checked=True,
                )()
                for spec in config.agents
            ]
        asking = [a.agent_id for a in agents if builders.asks_model(a)]
        if asking:
            # its requests go out through the Ray agent actor's bridge to Ray Serve; in one
            # process nothing sends them: it ran on its fallback, stored no decision, exit 0
            raise builders.WiringError(
                f"agents {asking} ask a language model served by Ray Serve, which one process "
                "does not run: `sapphire run` runs this config"
            )
        if gateway is not None and self.shards.count > 1:
            raise builders.WiringError("shards: a given gateway serves one shard only")
        groups = self.shards.groups  # one group of every symbol without shards
        gateways = (
            [gateway]
            if gateway is not None
            else [
                assembly.paper_gateway_builder(
                    config.exchange, {s: self.instruments[s] for s in group}, self.instruments
                )()
                for group in groups
            ]
        )
        self.feed: Any = None
        if events is None:
            self.feed = assembly.replay_opener(config.data, self.instruments)()
            events = iter(self.feed)
        self.cutter = WindowCutter(
            events,
            window_ns=self.window_ns,
            clock=Clock(config.data.clock),
            max_window_events=config.data.batch_events,
            max_events=config.data.max_events,
            start_ns=config.data.start_ns,
            end_ns=config.data.end_ns,
            tail_ns=self.timing.feed_ns,  # the run ends when its last event is visible
        )
        # each shard's venue and agents (one of each without shards: the unsplit kernel)
        self.agent_order = [a.agent_id for a in agents]
        shard_of_agent = self.shards.agent_shard
        self.agent_stages = [
            AgentStage(
                [a for a in agents if shard_of_agent.get(a.agent_id, 0) == k],
                self.timing,
                groups[k],
            )
            for k in range(self.shards.count)
        ]
        self.venues = [VenueStage(g) for g in gateways]
        self.venue = self.venues[0]  # shard 0's (the only one without shards)
        self.agents = self.agent_stages[0]
        self.coordinator = CoordinatorStage(
            assembly.build_core(config, self.instruments),
            self.timing,
            StepRows(run_id, PRODUCER, config.storage.store_ticks, instruments=self.instruments),
            pnl_interval_ns=int(config.storage.pnl_interval_s * 1e9),
            agent_symbols={a.id: a.symbol for a in config.agents},
        )
        self._commands: Sequence[Command] = []
        self._kill_switch = kill_switch
        self.steps = 0

    def step(self) -> CoordinatorStep | None:
        coordinator = self.coordinator
        got = self.cutter.next_window(self.steps, coordinator.pending_ns())
        if got is None:
            if self.steps == 0:
                rejected, missing = self.feed.report(None) if self.feed is not None else ({}, [])
                after, end = self.cutter.after_end_ns, self.config.data.end_ns
                raise NoEventsError(no_events(rejected, missing, after, end))
            return None
        events, window = got
        if self._kill_switch is not None and not coordinator.core.risk.kill_switch_on:
            reason = self._kill_switch()
            if reason:
                coordinator.core.request_kill(reason)
        due = coordinator.take_due(window)
        shards = self.shards
        split = shards.events(events)
        reports = merge_reports(
            [
                venue.step(window, shard_events, commands)
                for venue, shard_events, commands in zip(
                    self.venues, split, shards.commands(self._commands), strict=True
                )
            ]
        )
        by_agent = reports_by_agent(due, self.agent_order)
        outputs = merge_outputs(
            [
                stage.step(window, shard_events, by_agent)
                for stage, shard_events in zip(self.agent_stages, split, strict=True)
            ],
            self.agent_order,
        )
        result = coordinator.step(window, events, due, outputs)
        coordinator.add_venue_reports(reports)
        self._commands = result.commands
        self.steps += 1
        return result

    def run(self, on_step: Callable[[CoordinatorStep], None] | None = None) -> int:
        try:
            while (result := self.step()) is not None:
                if on_step is not None:
                    on_step(result)
                if result.done:
                    break
        finally:
            if self.feed is not None:
                self.feed.close()  # a replay cache keeps what an unfinished stream gave
        if self.steps and self.coordinator.counters.events == 0:
            raise NoEventsError(no_trading_events(self.steps))  # warm-up windows only
        return self.steps

    def run_stored(
        self,
        sink: StorageSink,
        on_step: Callable[[CoordinatorStep], None] | None = None,
    ) -> int:
        """Run to the end, handing every step's rows to ``sink`` (the same exactly-once sink
        the Ray system's storage actor wraps); returns the rows left uncommitted (0 when
        every row is durable)."""
        rows = self.coordinator.rows

        def store(result: CoordinatorStep) -> None:
            if rows.pending() >= TAKE_ROWS:  # frames are built in groups, not per window
                for table, frame in rows.take_new().items():
                    sink.submit_frame(table, frame, now_ns=result.window.end_ns)
                # what the store has committed (its groups of batch_size rows) leaves memory
                # now, not at the run's end: a long backtest holds one group, not every row
                rows.acknowledge(sink.committed_of(PRODUCER))
            if on_step is not None:
                on_step(result)

        self.run(store)
        for table, frame in rows.take_new().items():
            sink.submit_frame(table, frame, now_ns=0)
        sink.flush(0)
        sink.finish()  # raises where committed rows could not be put where readers see them
        rows.acknowledge(sink.committed_of(PRODUCER))
        return rows.unacked_count()

    def summary(self) -> dict[str, Any]:
        out = self.coordinator.summary()
        out["counters"]["clamped"] = self.cutter.state.clamped
        out["window_ns"] = self.window_ns
        out["approximate"] = self.window_ns > self.timing.lookahead_ns
        out["agent_errors"] = {
            a: n for stage in self.agent_stages for a, n in stage.state.errors.items()
        }
        out["invalid_outputs"] = {
            a: why for stage in self.agent_stages for a, why in stage.refused_outputs().items()
        }
        out["unheard"] = {
            a: why for stage in self.agent_stages for a, why in stage.unheard().items()
        }
        out["venue"] = {
            "orders_sent": sum(v.stats.orders_sent for v in self.venues),
            "errors": sum(v.stats.errors for v in self.venues),
        }
        out["venue_books"] = merge_counts(v.book_health() for v in self.venues)
        # what the run consumed of the replay, whatever its loaders read ahead (every runner
        # reports the same counts: ``SourceReport``)
        rejected, missing = (
            self.feed.report(self.cutter.state.consumed) if self.feed is not None else ({}, [])
        )
        out["input_rejected"] = rejected
        out["sessions_missing"] = missing
        out["replay_cache"] = self.feed.cache_stats() if self.feed is not None else {}
        # sessions whose receive-stamped rows were put on the exchange's clock, by their lag
        out["recorder_lags"] = dict(getattr(self.feed, "lags", None) or {})
        out["quarantined"] = {}
        return out
