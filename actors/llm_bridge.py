"""Asks the LLM deployment on Ray Serve for an agent's decisions without blocking its ticks.

Requests go out on a background event loop; answers wait in an inbox until the agent actor's
next step hands them to the agent (``on_decision``), which acts on them at later events. The
coordinator's risk checks bind whatever the model says.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from actors.cache import redis_level
from sapphire.adapters.redis_cache import RedisCache
from sapphire.config.redis import RedisConfig
from sapphire.storage.records import LlmDecisionRecord
from sapphire.storage.tiered import TieredCache


class LlmBridge:
    def __init__(self, app_name: str, timeout_s: float, redis: RedisConfig | None = None) -> None:
        self._app_name = app_name
        self._timeout_s = timeout_s
        self._redis = redis
        self._client: Any = None
        self.l2: RedisCache | None = None
        self._inbox: list[tuple[Any, Any, int, bool]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm", daemon=True)
        self._thread.start()

    def submit(self, requests: list[Any]) -> None:
        for request in requests:
            asyncio.run_coroutine_threadsafe(self._ask(request), self._loop)

    async def _ask(self, request: Any) -> None:
        from actors.serve.llm_client import ServeDecisionClient

        if self._client is None:
            # decisions shared by every agent actor, and kept across their restarts; an
            # unreachable Redis only costs the L2 tier (counted, never raised)
            self.l2 = redis_level(self._redis, f"llm:{self._app_name}:")
            self._client = ServeDecisionClient(
                app_name=self._app_name, timeout_s=self._timeout_s, redis=self.l2
            )
        stats = self._client.stats
        failed_before = stats.timeouts + stats.errors + stats.malformed_json
        started = time.perf_counter_ns()
        decision = await self._client.decide(request.prompt)
        valid = stats.timeouts + stats.errors + stats.malformed_json == failed_before
        with self._lock:
            self._inbox.append((request, decision, time.perf_counter_ns() - started, valid))

    def collect(self, agent: Any, symbol: str, now_ns: int) -> list[LlmDecisionRecord]:
        """Hand arrived answers to the agent; the records of every answer, for storage."""
        with self._lock:
            arrived, self._inbox = self._inbox, []
        records = []
        for request, decision, latency_ns, valid in arrived:
            agent.on_decision(request.request_id, decision, now_ns)
            records.append(
                LlmDecisionRecord.of(
                    decision,
                    ts_event_ns=request.ts_event_ns,
                    agent_id=request.agent_id,
                    symbol=symbol,
                    model=self._app_name,
                    valid=valid,
                    latency_ns=latency_ns,
                )
            )
        return records

    @property
    def tiers(self) -> TieredCache | None:
        """The decision cache (L1 -> Redis -> the model), once the first request made it."""
        if self._client is None:
            return None
        tiers: TieredCache = self._client.tiers
        return tiers

    def stats(self) -> dict[str, int]:
        if self._client is None:
            return {}
        s = self._client.stats
        return {
            "ok": s.ok,
            "malformed_json": s.malformed_json,
            "schema_violation": s.schema_violation,
            "timeouts": s.timeouts,
            "errors": s.errors,
            "cache_hits": s.cache_hits,
        }
