"""AgentActor: the kernel's agent stage for the agents it hosts (one, or those sharing an
``AgentSpec.host``), stepped window by window; errors are contained and counted per agent by
the stage. Instrument specs (and an LLM agent's decisions) come through the cache hierarchy
of ``actors.cache``."""

from __future__ import annotations

import logging
import pickle
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import ray

from actors.cache import AgentCaches, InstrumentCache, counts_from_builtins, counts_to_builtins
from actors.checkpoint import make_store
from actors.codec import decode_events, decode_messages, encode_messages
from actors.fanout import bytes_only_channels
from actors.llm_bridge import LlmBridge
from actors.sockets import RoundLeaf, RoundServer
from actors.stepper import Stepper
from sapphire.agents.base import Agent
from sapphire.config.redis import RedisConfig
from sapphire.kernel.agents import AgentStage
from sapphire.kernel.builders import AgentBuilder, asks_model
from sapphire.kernel.timing import Timing, Window

log = logging.getLogger(__name__)


class HostedAgent(NamedTuple):
    """One agent of an agent actor: its id, its builder (an ``AgentBuilder``, or any
    zero-argument builder in tests and ad hoc drivers) and, for an LLM agent, the Serve app
    it asks (an LLM agent has an actor of its own)."""

    agent_id: str
    build: Any
    llm_app: str = ""
    # a decision's wall-clock wait (``llm.request_timeout_s``); None: not an LLM agent
    llm_timeout_s: float | None = None


@ray.remote(max_restarts=-1, max_task_retries=-1)
class AgentActor(RoundLeaf):
    def __init__(
        self,
        agents: Sequence[HostedAgent],
        timing: Timing,
        checkpoint_location: str,
        redis: RedisConfig | None = None,
        symbols: tuple[str, ...] = (),
        key: str = "",
    ) -> None:
        bytes_only_channels()  # a leaf of the coordinator's compiled graph
        if not agents:
            raise ValueError("an agent actor hosts at least one agent")
        self.agent_ids = [a.agent_id for a in agents]
        self.agent_id = self.agent_ids[0]
        self.key = key or f"agent-{self.agent_id}"
        self.caches = AgentCaches()
        specs = InstrumentCache(redis)
        built: list[Agent] = []
        for hosted in agents:
            if isinstance(hosted.build, AgentBuilder):
                # a restart is a new process: L1 is empty and the spec comes from Redis
                if not self.caches.tracks("instruments"):
                    self.caches.track("instruments", specs.tiers, specs.l2)
                built.append(hosted.build(specs.get(hosted.build.instrument)))
            else:
                built.append(hosted.build())
        self.agents: dict[str, Agent] = dict(zip(self.agent_ids, built, strict=True))
        self.agent: Agent = built[0]
        self.stage = AgentStage(built, timing, symbols)
        # an LLM agent (``asks_model``) gets a Serve bridge; it is the only agent of its
        # actor (the bridge's inbox is one agent's). One that came without an app would run
        # on its fallback alone, its requests never sent: refused, as the in-process runner
        # refuses it
        asking = [a for a, agent in zip(self.agent_ids, built, strict=True) if asks_model(agent)]
        llm_app, llm_timeout_s = agents[0].llm_app, agents[0].llm_timeout_s
        self._llm = None
        if asking:
            if len(agents) > 1:
                raise ValueError(f"agents {asking}: an LLM agent cannot share a host")
            if not llm_app:
                raise ValueError(f"agent {asking[0]} asks a language model, but no Serve app")
            if llm_timeout_s is None:
                raise ValueError(f"agent {self.agent_ids[0]}: an LLM app without its timeout")
            self._llm = LlmBridge(llm_app, timeout_s=llm_timeout_s, redis=redis)
        self.busy_s = 0.0
        self._incarnation = uuid.uuid4().hex  # this process (a rewind restores within it)
        self._stepper: Stepper[tuple[list[bytes], list[Any]]] = Stepper(
            make_store(checkpoint_location),
            self.key,
            self._snapshot,
            self._restore,
        )
        self.caches.publish()
        # a round over sockets (``actors.sockets``) steps this actor from its own thread:
        # the lock keeps it and Ray's calls (a fallback step, a rewind) one at a time
        self._lock = threading.Lock()
        self._round: RoundServer | None = None

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
        self,
        step: int,
        window: Window,
        events: bytes,
        reports: Sequence[bytes],
        barrier: bool = True,
    ) -> tuple[list[bytes], list[Any]]:
        """Each hosted agent's outputs of one window (``reports``: each one's reports, both
        in ``agent_ids`` order), and the LLM decisions that arrived before it (storage)."""
        with self._lock:
            return self._step(step, window, events, reports, barrier)

    def _step(
        self, step: int, window: Window, events: bytes, reports: Sequence[bytes], barrier: bool
    ) -> tuple[list[bytes], list[Any]]:
        return self._stepper.run(
            step, lambda: self._compute(window, events, reports), barrier=barrier
        )

    def _compute(
        self, window: Window, events_data: bytes, reports_data: Sequence[bytes]
    ) -> tuple[list[bytes], list[Any]]:
        started = time.perf_counter()
        events = decode_events(events_data)
        llm_records: list[Any] = []
        symbol = getattr(self.agent, "symbol", events[0].symbol if events else "")
        if self._llm is not None and events:
            llm_records = self._llm.collect(self.agent, symbol, events[0].ts_event_ns)
        reports = {
            agent_id: decode_messages(data)
            for agent_id, data in zip(self.agent_ids, reports_data, strict=True)
        }
        outputs = self.stage.step(window, events, reports)
        if self._llm is not None:
            # what the agent decided in this step (a model answer used or dropped, its
            # fallbacks) is stored with this step: asked for at the next step only, a
            # run's last step's decisions were never stored
            llm_records += self._llm.take_outcomes(self.agent, symbol)
            self._llm.submit(self.agent.drain_requests())  # type: ignore[attr-defined]
            tiers = self._llm.tiers
            if tiers is not None and not self.caches.tracks("llm_decisions"):
                self.caches.track("llm_decisions", tiers, self._llm.l2)
            self.caches.publish()  # decisions arrive between steps: publish as they come
        self.busy_s += time.perf_counter() - started
        return [encode_messages(outputs[a]) for a in self.agent_ids], llm_records

    def end_llm(self) -> list[Any]:
        """The run's last LLM rows: its decisions unresolved at the end
        (:meth:`LlmBridge.end_records`); none for an agent that asks no model."""
        with self._lock:
            if self._llm is None:
                return []
            symbol = getattr(self.agent, "symbol", "")
            return self._llm.end_records(self.agent, symbol)

    def agent_state(self, agent_id: str = "") -> bytes:
        """An agent's own snapshot (what it learned; default: the first hosted), for tests
        and inspection."""
        return self.agents[agent_id or self.agent_id].snapshot()

    def node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def stats(self, agent_id: str = "") -> dict[str, Any]:
        """One hosted agent's figures (default: the first) and its actor's: ``host`` names
        the actor, whose figures (steps, busy time, cache counts) its agents share."""
        agent_id = agent_id or self.agent_id
        return {
            "agent_id": agent_id,
            "host": self.key,
            "agents": list(self.agent_ids),
            "incarnation": self._incarnation,  # a new one: Ray restarted this actor
            "errors": self.stage.state.errors.get(agent_id, 0),
            "refused_outputs": self.stage.refused_outputs().get(agent_id, ""),
            "unheard": self.stage.unheard().get(agent_id, ""),
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
