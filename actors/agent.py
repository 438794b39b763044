"""AgentActor: one pure agent, stepped in batches; errors are contained and counted."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from actors.checkpoint import make_store
from actors.codec import decode_events, decode_messages, encode_messages
from actors.llm_bridge import LlmBridge
from actors.stepper import Stepper
from sapphire.agents.base import Agent, AgentOutput

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class AgentActor:
    def __init__(
        self,
        agent_id: str,
        build: Any,
        checkpoint_location: str,
        llm_app: str = "",
        redis: Any = None,
    ) -> None:
        self.agent_id = agent_id
        self.agent: Agent = build()
        # agents that ask an LLM (``drain_requests``/``on_decision``) get a Serve bridge
        self._llm = (
            LlmBridge(llm_app, timeout_s=10.0, redis=redis)
            if llm_app and hasattr(self.agent, "drain_requests")
            else None
        )
        self.errors = 0
        self.events_seen = 0
        self.busy_s = 0.0
        self._stepper: Stepper[tuple[bytes, list[Any]]] = Stepper(
            make_store(checkpoint_location),
            f"agent-{agent_id}",
            self._snapshot,
            self._restore,
        )

    def _snapshot(self) -> bytes:
        import pickle

        return pickle.dumps((self.agent.snapshot(), self.errors, self.events_seen))

    def _restore(self, data: bytes) -> None:
        import pickle

        agent_state, self.errors, self.events_seen = pickle.loads(data)
        self.agent.restore(agent_state)

    def step(self, step: int, events: bytes, reports: bytes) -> tuple[bytes, list[Any]]:
        """Outputs of one batch, and the LLM decisions that arrived before it (for storage)."""
        return self._stepper.run(step, lambda: self._compute(events, reports))

    def _compute(self, events_data: bytes, reports_data: bytes) -> tuple[bytes, list[Any]]:
        started = time.perf_counter()
        outputs: list[AgentOutput] = []
        events = decode_events(events_data)
        llm_records: list[Any] = []
        if self._llm is not None and events:
            symbol = getattr(self.agent, "symbol", events[0].symbol)
            llm_records = self._llm.collect(self.agent, symbol, events[0].ts_event_ns)
        for report in decode_messages(reports_data):
            outputs.extend(self._guarded(lambda r=report: self.agent.on_report(r, r.ts_event_ns)))
        for event in events:
            self.events_seen += 1
            outputs.extend(self._guarded(lambda e=event: self.agent.on_event(e, e.ts_event_ns)))
        if self._llm is not None:
            self._llm.submit(self.agent.drain_requests())  # type: ignore[attr-defined]
        self.busy_s += time.perf_counter() - started
        return encode_messages(outputs), llm_records

    def _guarded(self, call: Any) -> list[AgentOutput]:
        try:
            return list(call())
        except Exception:  # an agent bug must not take the actor (or the system) down
            self.errors += 1
            if self.errors <= 10:
                log.exception("agent %s raised; event skipped", self.agent_id)
            return []

    def node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def stats(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "errors": self.errors,
            "events_seen": self.events_seen,
            "busy_s": self.busy_s,
            "restored": self._stepper.restored,
            "last_step": self._stepper.last_step,
            "llm": self._llm.stats() if self._llm is not None else {},
        }
