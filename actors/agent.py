"""AgentActor: the kernel's agent stage for one agent, stepped window by window; errors are
contained and counted by the stage. Its instrument spec (and an LLM agent's decisions) come
through the cache hierarchy of ``actors.cache``."""

from __future__ import annotations

import logging
import pickle
import time
import uuid
from typing import Any

import ray

from actors.cache import AgentCaches, InstrumentCache, counts_from_builtins, counts_to_builtins
from actors.checkpoint import make_store
from actors.codec import decode_events, decode_messages, encode_messages
from actors.fanout import bytes_only_channels
from actors.llm_bridge import LlmBridge
from actors.stepper import Stepper
from sapphire.agents.base import Agent
from sapphire.config.redis import RedisConfig
from sapphire.kernel.agents import AgentStage
from sapphire.kernel.assembly import AgentBuilder
from sapphire.kernel.timing import Timing, Window

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class AgentActor:
    def __init__(
        self,
        agent_id: str,
        build: Any,
        timing: Timing,
        checkpoint_location: str,
        llm_app: str = "",
        redis: RedisConfig | None = None,
        symbols: tuple[str, ...] = (),
    ) -> None:
        bytes_only_channels()  # a leaf of the coordinator's compiled graph
        self.agent_id = agent_id
        self.caches = AgentCaches()
        if isinstance(build, AgentBuilder):
            # a restart is a new process: L1 is empty and the spec comes from Redis
            specs = InstrumentCache(redis)
            self.caches.track("instruments", specs.tiers, specs.l2)
            self.agent: Agent = build(specs.get(build.instrument))
        else:  # any other zero-argument builder (tests, ad hoc drivers)
            self.agent = build()
        self.stage = AgentStage([self.agent], timing, symbols)
        # agents that ask an LLM (``drain_requests``/``on_decision``) get a Serve bridge
        self._llm = (
            LlmBridge(llm_app, timeout_s=10.0, redis=redis)
            if llm_app and hasattr(self.agent, "drain_requests")
            else None
        )
        self.busy_s = 0.0
        self._incarnation = uuid.uuid4().hex  # this process (a rewind restores within it)
        self._stepper: Stepper[tuple[bytes, list[Any]]] = Stepper(
            make_store(checkpoint_location),
            f"agent-{agent_id}",
            self._snapshot,
            self._restore,
        )
        self.caches.publish()

    def _snapshot(self) -> bytes:
        # the cache counts ride along, so the run's summary counts earlier incarnations too;
        # the earlier ones apart from this process's, which a rewind in this same process
        # must not count twice (its live counters keep running)
        state = (
            self.stage.snapshot(),
            counts_to_builtins(self.caches.totals()),
            counts_to_builtins(self.caches.base),
            self._incarnation,
        )
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def _restore(self, data: bytes) -> None:
        loaded = pickle.loads(data)
        if isinstance(loaded, tuple) and len(loaded) == 4 and isinstance(loaded[0], bytes):
            stage, totals, base, incarnation = loaded
            caches = base if incarnation == self._incarnation else totals
        elif isinstance(loaded, tuple) and len(loaded) == 2 and isinstance(loaded[0], bytes):
            stage, caches = loaded
        else:  # a checkpoint from before the counts were kept: the stage's snapshot alone
            stage, caches = data, {}
        self.stage.restore(stage)
        self.caches.restore(counts_from_builtins(caches))

    def step(
        self, step: int, window: Window, events: bytes, reports: bytes, barrier: bool = True
    ) -> tuple[bytes, list[Any]]:
        """Outputs of one window, and the LLM decisions that arrived before it (for storage)."""
        return self._stepper.run(
            step, lambda: self._compute(window, events, reports), barrier=barrier
        )

    def rewind(self, step: int) -> int:
        """Back to barrier ``step`` (see ``actors.stepper``); returns the step it is at."""
        self._stepper.rewind(step)
        return self._stepper.last_step

    def _compute(
        self, window: Window, events_data: bytes, reports_data: bytes
    ) -> tuple[bytes, list[Any]]:
        started = time.perf_counter()
        events = decode_events(events_data)
        llm_records: list[Any] = []
        if self._llm is not None and events:
            symbol = getattr(self.agent, "symbol", events[0].symbol)
            llm_records = self._llm.collect(self.agent, symbol, events[0].ts_event_ns)
        reports = {self.agent_id: decode_messages(reports_data)}
        outputs = self.stage.step(window, events, reports)[self.agent_id]
        if self._llm is not None:
            self._llm.submit(self.agent.drain_requests())  # type: ignore[attr-defined]
            tiers = self._llm.tiers
            if tiers is not None and not self.caches.tracks("llm_decisions"):
                self.caches.track("llm_decisions", tiers, self._llm.l2)
            self.caches.publish()  # decisions arrive between steps: publish as they come
        self.busy_s += time.perf_counter() - started
        return encode_messages(outputs), llm_records

    def agent_state(self) -> bytes:
        """The agent's own snapshot (what it learned), for tests and inspection."""
        return self.agent.snapshot()

    def node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def stats(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "incarnation": self._incarnation,  # a new one: Ray restarted this actor
            "errors": self.stage.state.errors.get(self.agent_id, 0),
            "refused_outputs": self.stage.refused_outputs().get(self.agent_id, ""),
            "events_seen": self.stage.state.events_seen,
            "busy_s": self.busy_s,
            "restored": self._stepper.restored,
            "last_step": self._stepper.last_step,
            "checkpoint_s": self._stepper.checkpoint_s,
            "llm": self._llm.stats() if self._llm is not None else {},
            # per cache, per level: every incarnation's counts, and this process's own
            "cache": counts_to_builtins(self.caches.totals()),
            "cache_incarnation": counts_to_builtins(self.caches.live()),
        }
