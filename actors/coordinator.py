"""CoordinatorActor: drives the kernel's steps across actors and runs its coordinator stage.

A step is one window of market time (``sapphire.kernel``): fetch the window; hand out the
reports that arrive in it; run the venue (on the commands decided before the window) and
every agent (on the window) in parallel; run the coordinator stage (risk, journal, portfolio,
rows) once the agents have answered, while the venue may still run (its reports are taken
after the stage: they reach the system from the next window on); keep its commands for the
venue's next step; persist the rows; checkpoint. The stages are the ones ``sapphire
backtest`` runs in one process, on the same inputs, so the outcome is the same. Every callee
is idempotent per step (``actors.stepper``), so a restart of any actor, this one included,
neither loses nor duplicates an order or a row.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import pickle
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import ray

from actors import metrics
from actors.checkpoint import make_store
from actors.codec import decode_events, decode_messages, encode_events, encode_messages
from actors.fanout import CompiledFanout, VenueAnswers, bytes_only_channels
from actors.sockets import OtherNode, SocketFanout
from actors.stepper import AsyncStepper, StepBehind
from actors.storage_sink import pack_tables
from sapphire.adapters.kill_switch import run_kill_switch, system_kill_switch
from sapphire.config.system import SystemConfig
from sapphire.console.snapshot import (
    ConsoleSnapshot,
    EquityCurve,
    KillSwitchView,
    build_snapshot,
    run_mode,
)
from sapphire.data import replay
from sapphire.kernel import assembly as wiring
from sapphire.kernel import builders
from sapphire.kernel.coordinator import CoordinatorStage, StepProgress
from sapphire.kernel.rows import StepRows
from sapphire.kernel.runner import (
    PRODUCER,
    NoEventsError,
    no_events,
    no_trading_events,
    reports_by_agent,
)
from sapphire.kernel.shards import merge_counts, merge_reports
from sapphire.kernel.timing import Clock, Window
from sapphire.kernel.windows import CutterState, WindowCutter
from sapphire.model.events import rows_of
from sapphire.model.instrument import Instrument
from sapphire.model.orders import RejectReason, VenueAlert
from sapphire.risk.engine import RiskDecision

log = logging.getLogger(__name__)
# compiled-graph failures after which a run keeps to plain calls
MAX_GRAPH_FALLBACKS = 5
# events per market-data call of a paced replay (``_replay_window``): ~0.2 s of the sample
PACED_CHUNK = 256

KILL_KEY = "kill-switch"
_GONE = object()  # an iterator's end, where ``next`` must not raise StopIteration


class _Unpublished(NamedTuple):
    """A step's figures for the metrics and the console's equity curve, not yet published
    (``CoordinatorActor._publish``)."""

    progress: StepProgress
    outputs: Mapping[str, Sequence[Any]]
    commands: Sequence[Any]
    reports: list[Any]
    equity_ns: int | None  # the window's end; None: a warm-up window (no point)


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
        source_shard: list[int] | None = None,
    ) -> None:
        # Peers are looked up by name (not passed as handles), so a restarted coordinator
        # finds them again without depending on constructor arguments kept by the driver.
        # The handles are Any: their methods are resolved at run time, and Ray 2.60 types
        # ActorHandle.__getattr__ as Never, which would make mypy treat every statement after
        # a remote call as unreachable (and so unchecked).
        bytes_only_channels()  # the driver of the compiled graph
        ns = config.ray.namespace
        self.config = config
        self.run_id = run_id
        self.market_data: Any = ray.get_actor(actor_names["market-data"], namespace=ns)
        # one venue actor per shard (``SystemConfig.shards``); ``execution`` is shard 0's,
        # the only one without shards (and the only one a live venue may have)
        self.shards = wiring.shards(config, instruments)
        # a replay read shard by shard: each recorded source's shard (``source_shards``, by
        # the driver), and each shard's market-data actor (``market_data`` is shard 0's);
        # None: one reads the merged replay
        self._source_shard = source_shard
        self.readers: list[Any] = [self.market_data]
        if self._source_shard is not None:
            self.readers = [
                ray.get_actor(actor_names[wiring.market_data_kind(k)], namespace=ns)
                for k in range(self.shards.count)
            ]
        self.venues: list[Any] = [
            ray.get_actor(actor_names[wiring.venue_kind(k)], namespace=ns)
            for k in range(self.shards.count)
        ]
        self.execution: Any = self.venues[0]
        self.sink: Any = ray.get_actor(actor_names["storage-sink"], namespace=ns)
        # an agent actor may host several agents (``AgentSpec.host``): stepped, rewound,
        # timed and quarantined as one leaf; ``agents`` maps each agent to its actor
        self.leaves = builders.agent_leaves(config)
        self.leaf_of = {a: leaf for leaf, ids in self.leaves.items() for a in ids}
        handles = {n: ray.get_actor(n, namespace=ns) for n in set(agent_names.values())}
        self.agents: dict[str, Any] = {a: handles[n] for a, n in agent_names.items()}
        self.leaf_handles: dict[str, Any] = {
            leaf: self.agents[ids[0]] for leaf, ids in self.leaves.items()
        }
        self.leaf_shard = {
            leaf: self.shards.agent_shard[ids[0]] for leaf, ids in self.leaves.items()
        }
        self.agent_order = [a.id for a in config.agents]
        self.timing = wiring.timing(config)
        self.stage = CoordinatorStage(
            wiring.build_core(config, instruments),
            self.timing,
            StepRows(run_id, PRODUCER, config.storage.store_ticks, instruments=instruments),
            pnl_interval_ns=int(config.storage.pnl_interval_s * 1e9),
            agent_symbols={a.id: a.symbol for a in config.agents},
        )
        self.core = self.stage.core
        self.rows = self.stage.rows
        self._commands: list[Any] = []
        self._live = config.exchange.kind == "ccxt" and not config.exchange.factory
        self._last_end = 0
        self.quarantined: dict[str, str] = {}
        self.faults: dict[str, int] = {}
        # a live venue's start-up reconciliation, and a failure that ends the run (a refused
        # API key): stored in the checkpoint, shown in the summary, non-zero exit
        self.reconciliation: dict[str, int] = {}
        self.venue_alerts: list[str] = []
        self._alert_keys: set[str] = set()
        self.failure = ""
        # the last start-up try the venue refused for now (a 429, a 5xx, unreachable), until
        # a start-up reconciliation says it was reached: a live run that ended with it set
        # never reached its venue, every order refused, and failed (it had printed a normal
        # summary and exited 0)
        self._unreached = ""
        self._start_retries: set[str] = set()  # the start-up retry alert shown (the latest)
        self._llm_ended = False  # the LLM agents' end-of-run rows were added (finish)
        # the last 100k steps' latencies: a long live run's p50 follows the run (the first
        # 100k were kept, start-up included, and the figure stopped moving)
        self.latency_s: collections.deque[float] = collections.deque(maxlen=100_000)
        self.stage_s: dict[str, float] = {}
        self.venue_rejections: dict[str, int] = {}
        self.metrics = metrics.StepMetrics()
        self.metrics.on_limits(config.risk, [a.id for a in config.agents])
        self._sink_incarnation = ""
        self._inflight: Any = None
        self._resend_all = False
        self._agents_ready = False
        self._venue_ready = not self._live  # a live venue reconciles before the first step
        self._llm_records: list[Any] = []
        # ``ray.transport: sockets`` or ``compiled``: the window's round to the venues and the
        # agents over Unix sockets or as a compiled graph (replays; a live venue keeps plain
        # calls). Not checkpointed: a restarted coordinator builds a new one.
        self._graph: CompiledFanout | SocketFanout | None = None
        self._incarnations: dict[str, str] = {}  # each agent's process when it was compiled
        # events and wall time after this process's first step, for the steady pace
        self._steady_from: float | None = None
        self._steady_events = 0
        self._steady_s = 0.0
        self._use_graph = config.ray.transport != "calls" and config.exchange.kind != "ccxt"
        self._sockets = config.ray.transport == "sockets"
        self._store = make_store(checkpoint_location)
        self.window_ns = wiring.window_ns(config)
        # A replay is cut into windows here, where ``pending_ns`` is known, from events the
        # market-data actor serves a chunk ahead: no round trip per window for the feed. A
        # live feed is cut by the market-data actor (what arrived since the last window).
        self._replay = config.data.source != "ccxt"
        self._feed_checked = 0.0  # when (monotonic) the live feed's health was last asked
        self._feed_tripped = False
        self._cut = CutterState()
        self._feed: ChunkFeed | SourcesFeed | None = None
        self._cutter: WindowCutter | None = None
        self._stepper: AsyncStepper[StepProgress] = AsyncStepper(
            self._store, "coordinator", self._snapshot, self._restore
        )
        # restored (a restart, --resume): the peers may be past this actor's barrier
        self._needs_sync = self._stepper.restored
        if self._stepper.restored:
            # The venue and the agents may still serve the graph of the process this one
            # replaces (a dead driver's graph cannot be torn down from here, and an actor
            # joins one graph at a time): plain calls from here on.
            self._use_graph = False
        self._barrier_at = time.perf_counter()
        kill = self._store.load(KILL_KEY)
        if kill:
            self.core.request_kill(kill.decode())
        # the firm-wide switch in the store root: read at every start and before every step
        self._firm = system_kill_switch(config)
        self._run_switch = run_kill_switch(config, run_id)  # `sapphire stop RUN_ID`
        # for the live console (actors.console): a kill asked for but not yet in force, the
        # last step's progress, and a thinned firm-PnL curve (display only, not checkpointed:
        # a restarted coordinator draws on from its restart; the pnl table is the record)
        self._kill_request = kill.decode() if kill else ""
        self._progress: StepProgress | None = None
        self.equity = EquityCurve()
        self._unpublished: _Unpublished | None = None  # the last step's figures

    # -- checkpointing --------------------------------------------------------------------
    def _snapshot(self) -> bytes:
        state = (
            self.stage.snapshot(),
            self._commands,
            self.quarantined,
            self.faults,
            self._last_end,
            (
                self.reconciliation,
                self.venue_alerts,
                self._alert_keys,
                self.failure,
                self._unreached,
                self._start_retries,
            ),
            self._cut,
        )
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def _restore(self, data: bytes) -> None:
        stage, self._commands, self.quarantined, self.faults, self._last_end, venue, cut = (
            pickle.loads(data)
        )
        self.reconciliation, self.venue_alerts, self._alert_keys, self.failure, *rest = venue
        # checkpoints written before these were kept
        self._unreached = rest[0] if rest else ""
        self._start_retries = rest[1] if len(rest) > 1 else set()
        self._cut = cut
        # A rewind to the last barrier (a peer failed): the feed gives again the events it
        # gave since then, from memory. Else (a new process, or too far back) it is reopened
        # at the restored position by the next step.
        if self._feed is None or not self._feed.rewind_to(cut.consumed):
            self._feed = None
        self._cutter = None
        # decisions gathered by a step that did not finish: its replay gathers them again
        self._llm_records = []
        self.stage.restore(stage)
        self.core = self.stage.core
        self.rows = self.stage.rows
        self._resend_all = True  # the sink may have lost what the last incarnation sent

    # -- control --------------------------------------------------------------------------
    async def trip_kill_switch(self, reason: str = "manual") -> None:
        """Halts all order flow from the next routing decision on, and cancels resting
        orders. Persisted first, so a restart cannot forget it."""
        self._store.save(KILL_KEY, reason.encode())
        self.core.request_kill(reason)
        self._kill_request = reason or "manual"

    async def reset_kill_switch(self) -> None:
        self._store.save(KILL_KEY, b"")
        self.core.reset_kill()
        self._kill_request = ""
        # a feed still dead trips it again at its next check (the watch stopped for good
        # after its first trip: a reset then traded on the frozen book)
        self._feed_tripped = False
        if self._live:
            await self.execution.clear_halt.remote()

    # -- the step -------------------------------------------------------------------------
    async def next_step(self) -> int:
        """The step to run next (after a restart or ``--resume``: the one after the last
        checkpointed step)."""
        return self._stepper.last_step + 1

    async def run_step(self, step: int) -> StepProgress:
        """One step (drivers and tests that step one window at a time)."""
        return (await self.run_steps(step, 1, 0.0))[-1]

    async def run_steps(self, first: int, count: int, budget_s: float) -> list[StepProgress]:
        """Steps ``first`` .. ``first + count - 1``, fewer once ``budget_s`` of wall time is
        spent or the data ends. A coordinator restored at an older barrier than ``first``
        (Ray restarted it and retried this call) first rewinds the other actors to that
        barrier and replays the steps in between; progress comes back for the steps run for
        this call, never for a step twice."""
        started = time.perf_counter()
        if self._needs_sync:
            await self._sync_peers()
        last = self._stepper.last_step
        cached: StepProgress | None = self._stepper.last_output
        if cached is not None and last >= first and (cached.done or last >= first + count - 1):
            return [cached]  # a retry of steps this actor already did
        out: list[StepProgress] = []
        rewinds = 0
        step = last + 1
        while True:
            try:
                progress = await self._one(step)
            except Exception as exc:
                if not _is_behind(exc) or rewinds >= 3:
                    raise
                # a peer restarted at an older barrier: everyone back to the committed one
                rewinds += 1
                await self._rewind_all()
                step = self._stepper.last_step + 1
                continue
            if step >= first and (not out or step > out[-1].step):
                out.append(progress)  # a step replayed after a rewind is not told twice
            step += 1
            if progress.done or (
                out and (step >= first + count or time.perf_counter() - started >= budget_s)
            ):
                # the batch's last step's figures too: the driver may not ask for more soon
                self._publish()
                return out

    async def _one(self, step: int) -> StepProgress:
        barrier = self._barrier_due(step)
        progress: StepProgress = await self._stepper.run_async(
            step, lambda: self._step(step, barrier), barrier=barrier
        )
        # after the first step (the actors' start, the graph's compile): the run's pace
        now = time.perf_counter()
        if self._steady_from is None:
            self._steady_from = now
        else:
            self._steady_events += progress.events
            self._steady_s = now - self._steady_from
        if barrier:
            self._barrier_at = time.perf_counter()
        elif progress.done:
            # the end is checkpointed too: a restart or --resume after it finds the run done.
            # Its rows join the unacked ones first: a checkpoint holds those, not new ones.
            self.rows.take_new()
            self._stepper.commit()
        if (barrier or progress.done) and self._feed is not None:
            self._feed.forget_before(self._cut.consumed)  # a rewind goes back no further
        return progress

    def _barrier_due(self, step: int) -> bool:
        """Checkpoint this step? Always live (a venue order cannot be replayed) and at the
        first step; otherwise once ``ray.checkpoint_interval_s`` has passed."""
        interval = self.config.ray.checkpoint_interval_s
        if self._live or interval <= 0 or step == 0:
            return True
        return time.perf_counter() - self._barrier_at >= interval

    def _peers(self) -> list[tuple[str, Any]]:
        """The actors stepped with this one (a replay's market data only serves chunks); an
        agent actor by its first agent."""
        agents = [
            (f"agent {self.leaves[leaf][0]}", h) for leaf, h in sorted(self.leaf_handles.items())
        ]
        feed = [] if self._replay else [("market data", self.market_data)]
        venues = [(wiring.venue_kind(k), v) for k, v in enumerate(self.venues)]
        return [*feed, *venues, *agents]

    async def _rewind_peers(self, barrier: int) -> None:
        """Every peer back to ``barrier``. An agent that cannot (hung, gone) is quarantined
        as it would be on its step; market data and the venue must, or the run stops."""
        names = self._peers()
        refs = [handle.rewind.remote(barrier) for _, handle in names]
        timeout = max(self.config.ray.agent_timeout_s, 1.0)
        for (name, _), ref in zip(names, refs, strict=True):
            if not name.startswith("agent "):
                await ref
                continue
            agent_id = name.removeprefix("agent ")
            try:
                await asyncio.wait_for(_await(ref), timeout)
            except (TimeoutError, ray.exceptions.RayError) as exc:
                if agent_id not in self.quarantined:
                    self._quarantine(agent_id, f"could not rewind: {type(exc).__name__}")
        self.faults["rewinds"] = self.faults.get("rewinds", 0) + 1
        log.warning("replaying from barrier step %d", barrier)

    async def _rewind_all(self) -> None:
        """This actor and every peer back to this actor's last committed barrier."""
        self._publish()  # the figures of the last step done, before its state goes back
        barrier = self._stepper.last_barrier
        faults = dict(self.faults)
        self._stepper.rewind(barrier)
        self.faults = {**self.faults, **faults}  # counts of what happened are not rewound
        self._reapply_kill()
        await self._rewind_peers(barrier)

    async def _sync_peers(self) -> None:
        """After a restart or ``--resume``: peers may be past this actor's barrier. A replay
        rewinds them to it; live peers are at most one step ahead (every live step is a
        barrier) and give that step's stored answer again."""
        self._needs_sync = False
        done = self._stepper.last_output
        if not self._live and not (done is not None and done.done):
            await self._rewind_peers(self._stepper.last_step)

    def _reapply_kill(self) -> None:
        kill = self._store.load(KILL_KEY)
        if kill:
            self.core.request_kill(kill.decode())

    def _open_feed(self) -> ChunkFeed | SourcesFeed:
        """The replay's feed from the events the run consumed (the restored cutter's count):
        one reader's merged replay, or every shard's sources merged here."""
        data = self.config.data
        # paced: small chunks, each returned as soon as the recording's clock releases it
        paced = data.speed > 0
        chunk = min(data.batch_events, PACED_CHUNK) if paced else max(data.batch_events, 8192)
        if self._source_shard is not None:  # never paced (``source_shards``)
            return SourcesFeed(
                self.readers,
                self._source_shard,
                wiring.merge_groups(data),
                wiring.replay_key(data.clock),
                chunk,
                skip=self._cut.consumed,
                gaps=wiring.session_gaps(data),
                fixed=wiring.merge_fixed(data),
            )
        return ChunkFeed(self.market_data, self._cut.consumed, chunk, Clock(data.clock))

    async def _replay_window(self, step: int) -> tuple[list[Any], Window] | None:
        data = self.config.data
        paced = data.speed > 0
        if self._feed is None:
            self._feed = self._open_feed()
        if self._cutter is None:  # a new feed, or the feed rewound to a barrier
            self._cutter = WindowCutter(
                self._feed,
                window_ns=self.window_ns,
                clock=Clock(data.clock),
                max_window_events=data.batch_events,
                max_events=data.max_events,
                start_ns=data.start_ns,
                end_ns=data.end_ns,
                tail_ns=self.timing.feed_ns,  # the run ends when its last event is visible
                state=self._cut,
            )
        assert self._cutter is not None
        if paced:
            assert isinstance(self._feed, ChunkFeed)
            # A paced replay gets events as the recording's clock releases them: buffering a
            # count of them (below) lags the recorded pace by that many and then steps through
            # them at once. With ``batch_events`` (20,000 events, 15 s of the bundled sample)
            # event time ran in 15 s leaps, and an LLM answer 2 s away in wall time came late
            # in event time (RESULTS.md). Paced, the buffer only has to reach past the window's
            # end: the cutter then cuts the whole window and peeks the event after it.
            feed = self._feed
            await feed.ensure(1)
            first = feed.first_time()
            if first is not None and (data.start_ns is None or first >= data.start_ns):
                # the window starts by the first event (or the last one's end) at the latest
                start = max(first, self._cut.last_t_ns, self._cut.last_end_ns)
                await feed.ensure_past(start + self.window_ns, data.batch_events + 2)
            else:  # the book's warm-up before the data's start: up to a window's count
                await feed.ensure(data.batch_events + 2)
        else:
            # a window takes at most ``batch_events`` events, and the cutter peeks one more
            await self._feed.ensure(data.batch_events + 2)
        return self._cutter.next_window(step, self.stage.pending_ns())

    async def _step(self, step: int, barrier: bool = True) -> StepProgress:
        clock = StageClock()
        events: list[Any] | None = None
        if self._replay:
            got = await self._replay_window(step)
            if got is None:
                batch = None
            else:
                events, window_ = got
                batch = (encode_events(events), window_, len(events))
        else:
            batch = await self.market_data.get_window.remote(step, self.stage.pending_ns(), barrier)
            await self._watch_feed()
        if batch is None:
            if step == 0:
                try:
                    feed = await self._feed_stats()
                except (TimeoutError, ray.exceptions.RayError, builders.WiringError):
                    feed = {"rejected": {"unknown (market data actor unavailable)": 1}}
                rejected, missing = feed["rejected"], feed.get("sessions_missing", [])
                after = self._cutter.after_end_ns if self._cutter is not None else None
                raise NoEventsError(no_events(rejected, missing, after, self.config.data.end_ns))
            self._check_traded(step)
            if not self._live:
                return StepProgress(step=step, events=0, done=True, now_ns=0, fills=0)
            # A live venue keeps answering after the data ends: drain windows let its last
            # reports (and a reconcile) reach the journal, never lose a fill.
            pending = self.stage.pending_ns() or self._last_end
            end = max(self._last_end, pending, time.time_ns()) + 1
            batch = (
                encode_events([]),
                Window(step=step, start_ns=self._last_end, end_ns=end, last=True),
                0,
            )
        events_data, window, _ = batch  # the coordinator stage counts the window's rows
        if self.shards.count > 1:
            # each shard's venue and agents get that shard's events; the coordinator stage
            # below runs every event (a live feed's window comes encoded: read here once)
            if events is None:
                events = decode_events(events_data)
            shard_events = [encode_events(e) for e in self.shards.events(events)]
        else:
            shard_events = [events_data]
        self._last_end = window.end_ns
        if not self.core.risk.kill_switch_on:  # tripped already: nothing to read (as in process)
            halt = self._firm.halt_reason() or self._run_switch.halt_reason()
            if halt:
                self.core.request_kill(halt)
        if not self._venue_ready:
            # reconciled before any agent decides: a halt or a refused key binds from here
            found = self._take_alerts(decode_messages(await self.execution.prepare.remote()))
            self.stage.add_venue_reports(found, window.start_ns)
            self._venue_ready = True
        if events is None:
            events = decode_events(events_data)
        clock.lap("feed")
        due = self.stage.take_due(window)
        venue_refs: list[Any] = []
        commands = [encode_messages(c) for c in self.shards.commands(self._commands)]
        compiled = await self._compiled_round(step, window, shard_events, commands, due, barrier)
        venue_answers: VenueAnswers | None = None
        if compiled is not None:
            venue_answers, outputs = compiled
        else:
            # the venues run what was decided before this window while the agents run it
            venue_refs = [
                # a window's events go by value: a few kB, below Ray's inline limit (larger
                # ones Ray puts in the object store itself); a put would cost a round trip
                venue.step.remote(step, window, shard_events[k], commands[k], barrier)
                for k, venue in enumerate(self.venues)
            ]
            self._publish_held()  # while the round is out
            outputs = await self._run_agents(step, window, shard_events, due, barrier)
        # every runner hands the coordinator stage the outputs in config order
        outputs = {a: outputs[a] for a in self.agent_order if a in outputs}
        clock.lap("signal")
        self._publish_held()  # before this stage moves the firm's PnL on (a round that did not)
        result = self.stage.step(window, events, due, outputs)
        clock.lap("risk")
        if venue_refs:
            venue_data = list(await asyncio.gather(*venue_refs))
        elif venue_answers is not None:
            # read only now: the venues ran beside the agents and this stage, which needs
            # none of their reports (they are delivered from the next window on)
            venue_data = await self._venue_answers(
                step, window, shard_events, commands, barrier, venue_answers
            )
        reports = self._take_alerts(merge_reports([decode_messages(d) for d in venue_data]))
        # a live venue's reports arrived now: the next window delivers them
        crossed = self.stage.add_venue_reports(reports, window.end_ns if self._live else None)
        self._commands = result.commands
        clock.lap("exchange_ack")
        self.rows.add_llm(self._llm_records)
        self._llm_records = []
        if barrier:  # rows between barriers are replayed, not lost, if a step fails
            await self._persist(window.end_ns)
        clock.lap("storage")
        for stage, seconds in clock.laps.items():
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds
        self.latency_s.append(clock.total())
        done = result.done or bool(self.failure)
        if result.done:
            self._check_traded(step + 1)
        if self._live and done and not self.failure:
            # live: done once the venue has nothing left to tell
            done = self.stage.pending_ns() is None and not self._commands
        progress = StepProgress(
            step=step,
            events=result.events,
            done=done,
            now_ns=window.end_ns,
            fills=result.fills_total,
            kill_switch=result.kill_switch,
            orders=result.submits,
            stage_s=clock.laps,
        )
        # the internal crosses' fills too: the venue never reports them (a fill-rate panel
        # showed mm_as at 34 fills of 133 on the demo)
        self._unpublished = _Unpublished(
            progress,
            outputs,
            result.commands,
            [*reports, *crossed],
            None if window.warmup else window.end_ns,
        )
        self._progress = progress
        if progress.done or self.metrics.summary_due():
            self.metrics.on_summary(await self.summary())  # which publishes them first
            # gauges set once can age out of the exporter on a long run: re-set them
            self.metrics.on_limits(self.config.risk, [a.id for a in self.config.agents])
        return progress

    def _publish_held(self) -> None:
        """``_publish`` inside a step: what a round does while it is out."""
        self._publish(flush=False)

    def _publish(self, flush: bool = True) -> None:
        """The last step's metrics and equity-curve point. Published while the next step's
        round is out (``_compiled_round``), where the coordinator waits for the leaves: at
        the end of its step they cost it about twice its own stage (its thread's CPU time on
        2 cores: ~120 against ~60 us a step), and nothing in a step needs them. The firm's
        PnL is still the step's own then: only the next stage moves it, and this runs before
        that stage, a summary, a console view, a rewind and the end of a ``run_steps``.
        Inside a step (``flush=False``) the counters and gauges stay held until the next
        run summary (``StepMetrics``); everywhere else they go out now."""
        held, self._unpublished = self._unpublished, None
        if held is not None:
            self.metrics.on_step(held.progress, held.outputs, held.commands, held.reports)
            if held.equity_ns is not None:
                self.equity.add(held.equity_ns, self.stage.firm_pnl_quote)
        if flush:
            self.metrics.flush()

    def _check_traded(self, steps: int) -> None:
        """A replay that ends after ``steps`` windows, all of them warm-up (its data ends
        before its trading period): an error, as the in-process runner says."""
        if not self._live and self.stage.counters.events == 0:
            raise NoEventsError(no_trading_events(steps))

    def _take_alerts(self, reports: list[Any]) -> list[Any]:
        """Act on the venue adapter's alerts; the order reports go on to the journal."""
        out = []
        for report in reports:
            if not isinstance(report, VenueAlert):
                out.append(report)
                continue
            if report.kind == "start" and not report.fatal and not report.halt:
                # a start-up retry's alert (one a minute at most, for as long as the venue
                # cannot be reached): the latest stands for them all. Each was kept, with a
                # key, and pickled into every checkpoint: 2,880 after two days' outage
                retry = f"start: {report.message}"[:500]
                self.venue_alerts[:] = [
                    a for a in self.venue_alerts if a not in self._start_retries
                ] + [retry]
                self._start_retries = {retry}
                self._unreached = report.message
                continue
            key = f"{report.kind}@{report.ts_event_ns}"
            if key in self._alert_keys:  # the same reconciliation, delivered again
                continue
            self._alert_keys.add(key)
            self.venue_alerts.append(f"{report.kind}: {report.message}"[:500])
            if report.kind == "reconciled":
                self._unreached = ""
            for key, n in report.counts.items():
                self.reconciliation[key] = self.reconciliation.get(key, 0) + n
            if report.halt or report.fatal:
                log.error("venue alert (%s): %s", report.kind, report.message)
                self.core.request_kill(f"venue: {report.message}"[:200])
            if report.fatal and not self.failure:
                self.failure = report.message
        return out

    async def _watch_feed(self) -> None:
        """Live: once a second, ask the market data actor whether its feed can be traded on;
        a stopped feed or a silent symbol trips the kill switch (every order cancelled), as a
        venue's halt does: the agents would go on deciding on the last book."""
        now = time.monotonic()
        if self._feed_tripped or now < self._feed_checked + 1.0:
            return
        self._feed_checked = now
        try:
            why = await asyncio.wait_for(_await(self.market_data.feed_health.remote()), 10)
        except (TimeoutError, ray.exceptions.RayError):
            return  # the actor's own failure is handled where its windows are read
        if why:
            self._feed_tripped = True
            log.error("%s: tripping the kill switch", why)
            self.venue_alerts.append(f"feed: {why}"[:500])
            self.core.request_kill(why[:200])

    async def _agent_boundary(self) -> tuple[dict[str, str], dict[str, int], dict[str, str]]:
        """Outputs each agent stage refused at the boundary (and the last reason), the
        inputs each agent raised on (skipped), and the agents given no event they read, as
        the in-process summary has them."""
        out: dict[str, str] = {}
        errors: dict[str, int] = {}
        unheard: dict[str, str] = {}
        for agent_id in sorted(self.agents):
            if agent_id in self.quarantined:
                continue
            try:
                stats = await asyncio.wait_for(
                    _await(self.agents[agent_id].stats.remote(agent_id)), 10
                )
            except (TimeoutError, ray.exceptions.RayError):
                continue
            if stats["refused_outputs"]:
                out[agent_id] = stats["refused_outputs"]
            if stats["errors"]:
                errors[agent_id] = stats["errors"]
            if stats.get("unheard"):
                unheard[agent_id] = stats["unheard"]
        return out, errors, unheard

    def _quarantine(self, agent_id: str, why: str) -> None:
        """Stop calling an agent that hangs or fails, with every agent sharing its actor
        (one process: a hung agent holds them all); the others trade on. The reason is
        stored (a refused risk decision of each) and shown in the summary."""
        for hosted in self.leaves[self.leaf_of[agent_id]]:
            if hosted in self.quarantined:
                continue
            self.quarantined[hosted] = why
            spec = next(a for a in self.config.agents if a.id == hosted)
            self.rows.add_decision(
                RiskDecision(
                    ts_event_ns=self._last_end,
                    agent_id=hosted,
                    symbol=spec.symbol,
                    client_order_id="",
                    accepted=False,
                    requested_lots=0,
                    reason=RejectReason.RISK_AGENT_QUARANTINED,
                    detail=why,
                )
            )

    def _live_leaves(self) -> list[str]:
        """The agent actors still stepped (a quarantine takes a whole actor)."""
        return [leaf for leaf, ids in sorted(self.leaves.items()) if ids[0] not in self.quarantined]

    def _leaf_reports(self, leaf: str, by_agent: dict[str, list[Any]]) -> list[bytes]:
        return [encode_messages(by_agent[a]) for a in self.leaves[leaf]]

    def _leaf_outputs(self, leaf: str, data: Sequence[bytes]) -> dict[str, Sequence[Any]]:
        return {a: decode_messages(d) for a, d in zip(self.leaves[leaf], data, strict=True)}

    async def _wait_for_agents(self) -> None:
        """An agent's first call includes starting its worker process, which can take far
        longer than a step on a busy machine: wait for that once, before timing steps."""
        if self._agents_ready:
            return
        for leaf in self._live_leaves():
            try:
                await asyncio.wait_for(_await(self.leaf_handles[leaf].stats.remote()), 300)
            except (TimeoutError, ray.exceptions.RayError) as exc:
                self._quarantine(self.leaves[leaf][0], f"did not start: {type(exc).__name__}")
        self._agents_ready = True

    async def _compiled_round(
        self,
        step: int,
        window: Window,
        shard_events: list[bytes],
        commands: list[bytes],
        due: list[Any],
        barrier: bool,
    ) -> tuple[VenueAnswers, dict[str, Sequence[Any]]] | None:
        """The window's round through the sockets or the compiled graph (``_build_fanout``):
        each agent's outputs, and the venues' reports to await (``_venue_answers``); the last
        step's figures are published while it is out. None when the plain calls must run it
        (the calls transport, or the graph failed: it is dropped, and this step runs again as
        calls, which restart, rewind and quarantine as usual; a peer that finished the step
        answers it from its store)."""
        if not self._use_graph:
            return None
        await self._wait_for_agents()
        live = self._live_leaves()
        if self._graph is not None and self._graph.leaves != live:
            await self._drop_graph()
        try:
            if self._graph is None:
                self._incarnations = await self._incarnations_of(live)
                self._graph = await self._build_fanout(live)
            by_agent = reports_by_agent(due, self.agents)
            venue_answers, answers = await self._graph.start(
                step,
                window,
                shard_events,
                commands,
                barrier,
                [self._leaf_reports(leaf, by_agent) for leaf in live],
                self.config.ray.agent_timeout_s,
                lambda: self._restarted_leaf(live),
                busy=self._publish_held,
            )
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                # A graph answers all at once, so who hung is asked: an agent that has not
                # finished the step is quarantined now, as calls would do, and never asked
                # again (a second call could run its step beside the hung one).
                await self._quarantine_unfinished(step, live)
            await self._round_failed(step, exc)
            return None
        outputs: dict[str, Sequence[Any]] = {}
        for leaf, (data, llm_records) in zip(live, answers, strict=True):
            self._llm_records.extend(llm_records)
            outputs.update(self._leaf_outputs(leaf, data))
        return venue_answers, outputs

    async def _venue_answers(
        self,
        step: int,
        window: Window,
        shard_events: list[bytes],
        commands: list[bytes],
        barrier: bool,
        answers: VenueAnswers,
    ) -> list[bytes]:
        """The venues' reports of the round. Where the round fails them, it is dropped and
        the venues are asked with plain calls, as after any failed round (a venue that
        finished the step answers it again from its store; the agents have answered)."""
        try:
            return await answers()
        except Exception as exc:
            await self._round_failed(step, exc)
        calls = [
            venue.step.remote(step, window, shard_events[k], commands[k], barrier)
            for k, venue in enumerate(self.venues)
        ]
        return list(await asyncio.gather(*calls))

    async def _round_failed(self, step: int, exc: Exception) -> None:
        """A round that failed: counted and dropped (the step goes on as plain calls); after
        MAX_GRAPH_FALLBACKS of them, calls for the rest of the run."""
        self.faults["graph_fallbacks"] = self.faults.get("graph_fallbacks", 0) + 1
        log.warning("compiled round failed at step %d (%r): plain calls", step, exc)
        await self._drop_graph()
        if self.faults["graph_fallbacks"] >= MAX_GRAPH_FALLBACKS:
            self._use_graph = False  # something keeps failing: calls for the rest

    async def _build_fanout(self, live: list[str]) -> CompiledFanout | SocketFanout:
        """The round's transport: sockets where asked and every leaf shares this node,
        else the compiled graph."""
        if self._sockets:
            node = ray.get_runtime_context().get_node_id()
            try:
                return await SocketFanout.build(
                    self.venues,
                    self.leaf_handles,
                    live,
                    self.leaf_shard,
                    node,
                    pin=self.config.ray.pin_leaves,
                )
            except OtherNode as exc:
                log.warning("sockets transport: %s; the compiled graph instead", exc)
                self._sockets = False
        return CompiledFanout.build(self.venues, self.leaf_handles, live, self.leaf_shard)

    async def _restarted_leaf(self, leaves: list[str]) -> str:
        """Which peer of the graph Ray restarted since it was compiled ("" for none)."""
        try:
            now = await asyncio.wait_for(self._incarnations_of(leaves), 1.0)
        except (TimeoutError, ray.exceptions.RayError):
            return ""  # busy or being restarted: asked again in a second
        changed = [k for k, v in now.items() if v != self._incarnations.get(k)]
        return changed[0] if changed else ""

    async def _incarnations_of(self, leaves: list[str]) -> dict[str, str]:
        """Each peer's process (agent actors by name, the venues as ``execution[-k]``)."""
        handles = {
            **{wiring.venue_kind(k): v for k, v in enumerate(self.venues)},
            **{leaf: self.leaf_handles[leaf] for leaf in leaves},
        }
        stats = await asyncio.gather(*(_await(h.stats.remote()) for h in handles.values()))
        return {k: s["incarnation"] for k, s in zip(handles, stats, strict=True)}

    async def _quarantine_unfinished(self, step: int, leaves: list[str]) -> None:
        """Quarantine the agents that do not finish ``step`` after the graph's round timed
        out. The round has one deadline for every leaf, counted from its start; on a busy
        machine a healthy leaf may have had the CPU for only part of it (a CI run at load 8
        quarantined all three agents of a round where one hung). So each unfinished agent
        gets ``agent_timeout_s`` more of its own to finish before it counts as hung."""
        loop = asyncio.get_running_loop()
        grace_end = loop.time() + self.config.ray.agent_timeout_s
        unfinished = list(leaves)
        while True:
            unfinished = [leaf for leaf in unfinished if not await self._finished(leaf, step)]
            if not unfinished or loop.time() >= grace_end:
                break
            await asyncio.sleep(0.1)
        for leaf in unfinished:
            self._quarantine(self.leaves[leaf][0], f"timed out at step {step}")
            log.error("agent actor %s quarantined: no answer in the compiled round", leaf)

    async def _finished(self, leaf: str, step: int) -> bool:
        """Whether the agent actor is done with ``step``, or was restarted (then not hung:
        the calls rewind it, as after any restart); no answer in 5 s counts as not done."""
        try:
            stats = await asyncio.wait_for(_await(self.leaf_handles[leaf].stats.remote()), 5.0)
        except (TimeoutError, ray.exceptions.RayError):
            return False
        return bool(
            stats["last_step"] >= step or stats["incarnation"] != self._incarnations.get(leaf)
        )

    async def _drop_graph(self) -> None:
        graph, self._graph = self._graph, None
        if graph is not None and not await graph.close(max(self.config.ray.agent_timeout_s, 1.0)):
            self._use_graph = False  # an actor may still serve it: calls for the rest

    async def _run_agents(
        self, step: int, window: Window, shard_events: list[bytes], due: list[Any], barrier: bool
    ) -> dict[str, Sequence[Any]]:
        await self._wait_for_agents()
        by_agent = reports_by_agent(due, self.agents)
        live = self._live_leaves()
        calls = [
            self._call_leaf(
                leaf,
                step,
                window,
                shard_events[self.leaf_shard[leaf]],
                self._leaf_reports(leaf, by_agent),
                barrier,
            )
            for leaf in live
        ]
        outputs: dict[str, Sequence[Any]] = {}
        for part in await asyncio.gather(*calls):
            outputs.update(part)
        return outputs

    async def _call_leaf(
        self,
        leaf: str,
        step: int,
        window: Window,
        events_data: bytes,
        reports: list[bytes],
        barrier: bool,
    ) -> dict[str, Sequence[Any]]:
        ref = self.leaf_handles[leaf].step.remote(step, window, events_data, reports, barrier)
        first = self.leaves[leaf][0]
        try:
            data, llm_records = await asyncio.wait_for(_await(ref), self.config.ray.agent_timeout_s)
        except TimeoutError:
            # A hung agent would stall everyone: it is quarantined, the others trade on.
            self._quarantine(first, f"timed out at step {step}")
            log.error(
                "agent actor %s quarantined: no answer in %ss",
                leaf,
                self.config.ray.agent_timeout_s,
            )
            ray.cancel(ref, force=False)
            return {}
        except ray.exceptions.RayError as exc:
            if _is_behind(exc):  # restarted at an older barrier: a rewind, not a fault
                raise
            self._quarantine(first, f"failed at step {step}: {type(exc).__name__}: {exc}"[:300])
            log.error("agent actor %s quarantined: %s", leaf, exc)
            return {}
        self._llm_records.extend(llm_records)
        return self._leaf_outputs(leaf, data)

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
                "coordinator", pack_tables(fresh), now_ns, self._sink_incarnation
            )

    async def _resend(self, now_ns: int) -> None:
        unacked = self.rows.unacked()
        incarnation, marks, _ = await self.sink.write.remote(
            "coordinator", pack_tables(unacked), now_ns, ""
        )
        self._sink_incarnation = incarnation
        self.rows.acknowledge(marks)

    async def _settle_inflight(self, now_ns: int) -> None:
        if self._inflight is None:
            return
        incarnation, marks, accepted = await self._inflight
        self._inflight = None
        if not accepted:
            self.faults["sink_restarts_seen"] = self.faults.get("sink_restarts_seen", 0) + 1
            log.warning("storage sink restarted; re-sending %d rows", self.rows.unacked_count())
            await self._resend(now_ns)
            return
        self._sink_incarnation = incarnation
        self.rows.acknowledge(marks)

    async def finish(self) -> dict[str, Any]:
        """Flush the sink until every row of this run is committed."""
        await self._drop_graph()  # the agents and the venue answer plain calls from here
        if not self._llm_ended:  # once per process: a retried finish adds no second copy
            self._llm_ended = True
            self.rows.add_llm(await self._end_llm())
        self.rows.take_new()  # rows of the steps after the last barrier join the unacked
        await self._settle_inflight(0)
        if self._resend_all:
            self._resend_all = False
            await self._resend(0)
        incarnation, marks = await self.sink.flush.remote(
            "coordinator", pack_tables(self.rows.unacked())
        )
        if self._sink_incarnation and incarnation != self._sink_incarnation:
            # a sink restarted since the last barrier's write: the flush re-sent every
            # unacked row (it drops what it has), and the restart is counted like any other
            self.faults["sink_restarts_seen"] = self.faults.get("sink_restarts_seen", 0) + 1
        self.rows.acknowledge(marks)
        return {"unacked_rows": self.rows.unacked_count()}

    async def _end_llm(self) -> list[Any]:
        """Each LLM agent's decisions unresolved at the run's end (an answer never acted
        on, a request unanswered), stored as the run's last rows: they were in no table."""
        records: list[Any] = []
        for leaf, ids in sorted(self.leaves.items()):
            if any(a in self.quarantined for a in ids):
                continue
            try:
                records += await asyncio.wait_for(
                    _await(self.leaf_handles[leaf].end_llm.remote()), 10
                )
            except (TimeoutError, ray.exceptions.RayError) as exc:
                log.warning("agent %s: its last LLM rows are not stored: %s", leaf, exc)
        return records

    async def feed_stats(self) -> dict[str, int]:
        """A replay's buffer ahead of the window cutter (tests, inspection): the most events
        it held, the chunks waited for inside a window, and the rewinds it served from
        memory (this process's feed)."""
        feed = self._feed
        return {
            "max_buffered": feed.max_buffered if feed is not None else 0,
            "refills": feed.refills if feed is not None else 0,
            "rewinds": feed.rewinds if feed is not None else 0,
        }

    async def _consumed_by_reader(self) -> list[int | dict[int, int] | None]:
        """What the run consumed of the replay, as each reader counts it (``stats``): events
        of the merged replay, or of each of a shard's sources; None for live (everything
        read so far). A restored coordinator whose feed is not open (Ray restarted it after
        its last step) knows the count from its checkpoint; shard by shard it merges the
        sources again up to it, as its next step would have."""
        if not self._replay:
            return [None] * len(self.readers)
        if self._source_shard is None:
            return [self._cut.consumed]
        if self._feed is None:
            self._feed = self._open_feed()
            await self._feed.ensure(0)
        assert isinstance(self._feed, SourcesFeed)
        consumed = self._cut.consumed
        if consumed < self._feed.log.floor:
            # trailing the merge by more than its log keeps (it keeps more than a rewind in
            # memory can go back, so only a rewind that reopened could): merged again
            again = self._open_feed()
            assert isinstance(again, SourcesFeed)
            await again.ensure(0)
            taken = again.log.taken(consumed)
        else:
            taken = self._feed.log.taken(consumed)
        return [
            {i: n for i, n in enumerate(taken) if self._source_shard[i] == k}
            for k in range(len(self.readers))
        ]

    async def _feed_stats(self) -> dict[str, Any]:
        """The market data readers' counts of what the run consumed, merged."""
        asks = zip(self.readers, await self._consumed_by_reader(), strict=True)
        return merge_feed_stats(
            await asyncio.wait_for(
                asyncio.gather(*(_await(r.stats.remote(a)) for r, a in asks)), 10
            )
        )

    async def summary(self) -> dict[str, Any]:
        self._publish()  # the metrics' and the console's figures of the last step first
        out = self.stage.summary()
        out["counters"].update(self.faults)
        out["invalid_outputs"], out["agent_errors"], out["unheard"] = await self._agent_boundary()
        try:  # the data's own rejects (malformed, NaN, out-of-order rows), counted by reason
            feed = await self._feed_stats()
            out["input_rejected"] = dict(feed["rejected"])
            out["sessions_missing"] = list(feed.get("sessions_missing", []))
            out["replay_cache"] = dict(feed.get("replay_cache", {}))
            clamped = self._cut.clamped if self._replay else feed["clamped"]
            out["counters"]["clamped"] = int(clamped)
            lags = dict(feed.get("recorder_lags", {}))
            if isinstance(self._feed, SourcesFeed):  # a sharded replay is merged here
                lags.update(self._feed.lags)
            out["recorder_lags"] = lags
        except (TimeoutError, ray.exceptions.RayError):
            out["input_rejected"] = {"unknown (market data actor unavailable)": 1}
        except builders.WiringError as exc:  # the replay no longer matches the checkpoint
            out["input_rejected"] = {f"unknown ({exc})"[:200]: 1}
        try:  # the venues' books: diffs found missing, stale snapshots (simulated venues)
            venues = await asyncio.wait_for(
                asyncio.gather(*(_await(v.stats.remote()) for v in self.venues)), 10
            )
            out["venue_books"] = merge_counts(s.get("books", {}) for s in venues)
        except (TimeoutError, ray.exceptions.RayError):
            out["venue_books"] = {}
        out.update(
            {
                "window_ns": self.window_ns,
                "approximate": self.window_ns > self.timing.lookahead_ns,
                "restored": self._stepper.restored,
                "quarantined": dict(self.quarantined),
                "failure": self.failure
                or (f"the venue was never reached: {self._unreached}" if self._unreached else ""),
                "reconciliation": dict(self.reconciliation),
                "venue_alerts": list(self.venue_alerts),
                "step_latency_s": list(self.latency_s),
                "stage_s": {**self.stage_s, "checkpoint": self._stepper.checkpoint_s},
                "checkpoint_bytes": self._stepper.checkpoint_bytes,
                "steady": {"events": self._steady_events, "s": self._steady_s},
                # what carried the rounds (at the end: a failure falls back to calls)
                "transport": (
                    ("sockets" if self._sockets else "compiled") if self._use_graph else "calls"
                ),
            }
        )
        return out

    # -- the live console (actors.console) ---------------------------------------------------
    async def console_snapshot(self) -> ConsoleSnapshot:
        """The console's figures, read from this actor's own state. Nothing in here awaits,
        so it is one consistent moment between two stages of a step."""
        self._publish()
        progress = self._progress
        exchange, data = self.config.exchange, self.config.data
        return build_snapshot(
            self.stage,
            run_id=self.run_id,
            mode=run_mode(exchange.kind, data.source, bool(exchange.factory)),
            step=progress.step if progress else -1,
            market_ns=progress.now_ns if progress else 0,
            done=progress.done if progress else False,
            capital_quote=self.config.capital_quote,
            equity=self.equity,
            kill_switch=self._kill_view(),
            quarantined=self.quarantined,
            failure=self.failure,
        )

    async def console_kill_switch(self, action: str, reason: str, by: str) -> KillSwitchView:
        """The console's button, on the same switches as ``sapphire kill-switch``: the firm's
        (stored with who and why, binding every run on this store root until reset) and this
        run's own, so this run halts from its next step even if the firm's store fails."""
        if action == "trip":
            await self.trip_kill_switch(f"console: {reason or 'manual'}")
            self._firm.trip(reason or "manual", by)
        elif action == "reset":
            # the firm's first: a run reset under a still-tripped firm switch re-trips
            self._firm.reset(reason, by)
            # a `sapphire stop` of this run stands until its own reset: resetting the run
            # now would report it trading while its next step halts it again
            if not self._run_switch.state().tripped:
                await self.reset_kill_switch()
        else:
            raise ValueError(f"kill switch action {action!r}: use trip or reset")
        return self._kill_view()

    def _kill_view(self) -> KillSwitchView:
        risk = self.core.risk
        firm = self._firm.state()
        stop = self._run_switch.state()
        return KillSwitchView(
            run_tripped=risk.kill_switch_on,
            run_reason=risk.kill_reason,
            requested="" if risk.kill_switch_on else self._kill_request,
            firm_tripped=firm.tripped,
            firm_reason=firm.reason,
            firm_by=firm.by,
            firm_ts_ns=firm.ts_ns,
            stop_reason=(stop.reason or "stopped") if stop.tripped else "",
        )


class RewindableFeed:
    """What a replay feed keeps to be rewound in memory: the events it gave since the last
    barrier (``forget_before``). A coordinator rewound to that barrier (a peer failed) gets
    them again from here, instead of reopening the feed and reading the replay again up to
    there (all of it, for a merge of shard readers). Subclasses give new events in
    ``_next_new``."""

    # rows kept at most (a depth message counts its levels: ~100 bytes each); a rewind
    # further back reopens the feed
    MAX_ROWS = 1 << 20

    def __init__(self, given: int) -> None:
        self._kept: collections.deque[Any] = collections.deque()
        self._kept_rows = 0
        self._kept_from = given  # the index (events given) of ``_kept[0]``
        self._again: collections.deque[Any] = collections.deque()
        self.rewinds = 0  # rewinds served from memory

    def _next_new(self) -> Any:
        raise NotImplementedError

    def __iter__(self) -> RewindableFeed:
        return self

    def __next__(self) -> Any:
        event = self._again.popleft() if self._again else self._next_new()
        self._kept.append(event)
        self._kept_rows += rows_of(event)
        while self._kept_rows > self.MAX_ROWS:
            self._drop_oldest()
        return event

    def _drop_oldest(self) -> None:
        old = self._kept.popleft()
        self._kept_rows -= rows_of(old)
        self._kept_from += 1

    def forget_before(self, index: int) -> None:
        """A barrier holds the first ``index`` events: no rewind goes back before them."""
        while self._kept and self._kept_from < index:
            self._drop_oldest()

    def rewind_to(self, index: int) -> bool:
        """Give the events from ``index`` on again; False where they are no longer kept."""
        given = self._kept_from + len(self._kept)
        if not self._kept_from <= index <= given:
            return False
        for _ in range(given - index):
            event = self._kept.pop()
            self._kept_rows -= rows_of(event)
            self._again.appendleft(event)
        self.rewinds += 1
        return True


class ChunkFeed(RewindableFeed):
    """A replay's events, fetched from the market-data actor a chunk ahead of the cutter.

    ``ensure`` (awaited before each window) keeps enough events buffered that the cutter,
    which iterates synchronously, never runs dry before the stream's real end; the next chunk
    is already on its way while this one is cut. Chunks are asked for by offset, so a restored
    coordinator (or a restarted market-data actor) reads on from exactly where it was.
    """

    def __init__(
        self, market_data: Any, offset: int, chunk: int, clock: Clock = Clock.EXCHANGE
    ) -> None:
        super().__init__(offset)
        self._actor = market_data
        self._offset = offset
        self._chunk = chunk
        self._buffer: collections.deque[Any] = collections.deque()
        self._next: Any = None
        self._ended = False
        self._clock = clock
        self._newest = -(1 << 62)  # the latest time buffered on the run's clock
        self.max_buffered = 0  # the most events held ahead of the cutter (inspection)
        self.refills = 0  # chunks waited for inside a window (``__next__``)

    async def ensure(self, n: int) -> None:
        while len(self._buffer) + len(self._again) < n and not self._ended:
            await self._fetch()

    async def ensure_past(self, t_ns: int, most: int) -> None:
        """Buffer until an event at or after ``t_ns`` (the run's clock) is in, or ``most``
        events are: a window ending by ``t_ns`` is then whole, with the event after it."""
        while self._newest < t_ns and len(self._buffer) < most and not self._ended:
            await self._fetch()

    def first_time(self) -> int | None:
        """The first buffered event's time on the run's clock (None: nothing buffered)."""
        first = self._again or self._buffer
        return self._clock.time_of(first[0]) if first else None

    def _request(self) -> Any:
        if self._next is None:
            self._next = self._actor.get_events.remote(self._offset, self._chunk)
        ref, self._next = self._next, None
        return ref

    async def _fetch(self) -> None:
        self._receive(*await self._request())

    def _receive(self, data: bytes, count: int) -> None:
        self._offset += count
        events = decode_events(data)
        self._buffer.extend(events)
        self.max_buffered = max(self.max_buffered, len(self._buffer))
        for event in events:
            self._newest = max(self._newest, self._clock.time_of(event))
        if count < self._chunk:
            self._ended = True
        else:
            self._next = self._actor.get_events.remote(self._offset, self._chunk)

    def _next_new(self) -> Any:
        while not self._buffer:
            if self._ended:
                raise StopIteration
            # A window ran past what ``ensure`` buffered: past its event cap, the cutter
            # keeps the events that share the last one's time (never cuts inside a
            # timestamp). The next chunk now, waited for here: never the data's end.
            self.refills += 1
            self._receive(*ray.get(self._request()))
        return self._buffer.popleft()


class SourcesFeed(RewindableFeed):
    """A replay read shard by shard: each shard's market-data actor serves its own recorded
    sources, each by its own offset (``get_source_events``), and they are merged here by the
    replay's own merge (:func:`sapphire.data.replay.merge`, what one reader runs), so the
    events come in exactly the order of one reader of every source.

    ``ensure(n)`` (awaited before each window) keeps every source that is not over at least
    ``n`` events ahead: the merge may take a whole window from one source. A window can run
    past that (events sharing the time of the one at its cap): a source that runs dry before
    its end is then refilled at once, waited for, and never taken for over. A restored
    coordinator merges again from the start and drops what it had consumed (``skip``): the
    merge's order depends on what came before, so it cannot start in the middle.
    """

    def __init__(
        self,
        readers: Sequence[Any],
        source_shard: Sequence[int],
        groups: Sequence[int],
        key: str,
        chunk: int,
        skip: int,
        gaps: replay.SessionGaps = replay.ANY_GAP,
        fixed: Sequence[int] = (),
    ) -> None:
        """``fixed``: the sources whose receive times are the venue's own (the in-process
        replay's rule, ``assembly.venue_receive_times``)."""
        super().__init__(0)
        self._readers = readers
        self._shard = list(source_shard)
        self._chunk = chunk
        n = len(self._shard)
        self._buffers: list[collections.deque[tuple[str, Any]]] = [
            collections.deque() for _ in range(n)
        ]
        self._offsets = [0] * n
        self._ended = [False] * n
        self._next: list[Any] = [None] * n
        self._skip = skip
        drains = [self._drain(i) for i in range(n)]
        # the sessions put on the exchange's clock and their recorders' lags (the summary's)
        self.lags: dict[str, int] = {}
        merged = replay.merge(drains, key, groups, gaps, self.lags, fixed)  # type: ignore[arg-type]
        self.log = wiring.MergeLog(n)  # each event's source: what the run took of each
        self._events = map(wiring.replay_event, self.log.track(merged))
        self.max_buffered = 0
        self.refills = 0  # chunks waited for inside a window (``_drain``)
        self._broken: BaseException | None = None  # a failed refill ended the merge

    def _drain(self, source: int) -> Iterator[tuple[str, Any]]:
        buffer = self._buffers[source]
        while True:
            while buffer:
                yield buffer.popleft()
            if self._ended[source]:
                return
            # past what ``ensure`` buffered, inside a window: the next chunk now (waited for)
            self.refills += 1
            try:
                self._receive(source, *ray.get(self._take_request(source)))
            except BaseException as exc:
                # the merge over this generator ends with the error: remembered, so no later
                # read takes the ended merge for the end of the data
                self._broken = exc
                raise

    def _check_merge(self) -> None:
        if self._broken is not None:
            raise RuntimeError(f"the replay's merge failed: {self._broken!r}") from self._broken

    async def ensure(self, n: int) -> None:
        self._check_merge()
        while self._skip:  # restored: the consumed events again, dropped
            drop = min(self._skip, self._chunk)
            await self._fill(drop + 2)
            if next(itertools.islice(self._events, drop - 1, None), _GONE) is _GONE:
                # the checkpoint consumed more than the replay now holds (a --resume after
                # data.files or data.sessions changed): one clear error, not a dead generator
                raise wiring.replay_changed(self._kept_from + self._skip)
            self._skip -= drop
            self._kept_from += drop  # given before this process: never rewound to
        await self._fill(n + 2)

    async def _fill(self, need: int) -> None:
        while short := [
            i for i, b in enumerate(self._buffers) if len(b) < need and not self._ended[i]
        ]:
            await asyncio.gather(*(self._fetch(i) for i in short))
        self.max_buffered = max(self.max_buffered, sum(map(len, self._buffers)))

    def _request(self, source: int) -> Any:
        reader = self._readers[self._shard[source]]
        return reader.get_source_events.remote(source, self._offsets[source], self._chunk)

    def _take_request(self, source: int) -> Any:
        ref = self._next[source]
        self._next[source] = None
        return ref if ref is not None else self._request(source)

    async def _fetch(self, source: int) -> None:
        self._receive(source, *await self._take_request(source))

    def _receive(self, source: int, data: bytes, runs: list[tuple[str, int]], count: int) -> None:
        self._offsets[source] += count
        events = iter(decode_events(data))
        buffer = self._buffers[source]
        for session, n in runs:
            buffer.extend(
                zip(itertools.repeat(session, n), itertools.islice(events, n), strict=True)
            )
        if count < self._chunk:
            self._ended[source] = True
        else:  # the next chunk is on its way while this one is merged
            self._next[source] = self._request(source)

    def _next_new(self) -> Any:
        self._check_merge()
        return next(self._events)


def merge_feed_stats(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every reader's ``MarketDataActor.stats`` as one: counts added up, and the sessions
    missing from the whole replay (those every reader misses)."""
    if len(stats) == 1:
        return stats[0]
    missing = set(stats[0].get("sessions_missing", []))
    for s in stats[1:]:
        missing &= set(s.get("sessions_missing", []))
    # two readers' venues sharing a session label: the larger lag, as one merge tells it
    # (``RecorderClock.learn``); the last reader's value replaced the others'
    lags: dict[str, int] = {}
    for s in stats:
        for session, lag in s.get("recorder_lags", {}).items():
            lags[session] = max(int(lag), lags.get(session, 0))
    return {
        "rejected": merge_counts(s["rejected"] for s in stats),
        "replay_cache": merge_counts(s.get("replay_cache", {}) for s in stats),
        "sessions_missing": sorted(missing),
        "clamped": sum(int(s["clamped"]) for s in stats),
        "recorder_lags": lags,
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


def _is_behind(exc: BaseException) -> bool:
    """A peer's call failed because Ray restarted it at an older barrier (``StepBehind``)."""
    cause = getattr(exc, "cause", None)
    return isinstance(exc, StepBehind) or isinstance(cause, StepBehind)
