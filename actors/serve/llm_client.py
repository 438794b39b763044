"""Async decision client for the Serve deployment: timeout, cache, validation, counts.

It implements :class:`sapphire.llm.client.DecisionClient`: every path ends in a validated
:class:`LlmDecision`, and every failure (timeout, transport error, bad output) in ``HOLD``
plus one count in :attr:`stats`. Only successfully parsed decisions are cached, under
``cache_key(model, prompt, sampling)``, so a transient failure is retried next time. The
cache is the tiered one (L1 in process, then Redis when one is given, then the model):
identical prompts from several agent actors, or from an actor after a restart, are answered
once, and concurrent identical prompts share one model call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import msgspec
from ray import serve

from sapphire.adapters.redis_cache import RedisCache
from sapphire.agents.llm_agent import DecisionRequest
from sapphire.llm.client import DecisionClient
from sapphire.llm.decision import HOLD, DecisionStats, LlmDecision, parse_decision
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig, cache_key
from sapphire.storage.cache import L1Cache
from sapphire.storage.tiered import TieredCache

APP_NAME = "sapphire-llm"
DEPLOYMENT_NAME = "LlmDecisionDeployment"


class ServeDecisionClient:
    def __init__(
        self,
        handle: Any | None = None,
        *,
        app_name: str = APP_NAME,
        deployment_name: str = DEPLOYMENT_NAME,
        timeout_s: float = 2.0,
        cache: L1Cache | None = None,
        cache_ttl_s: float = 30.0,
        redis: RedisCache | None = None,
    ) -> None:
        self._handle = handle or serve.get_deployment_handle(deployment_name, app_name=app_name)
        self.timeout_s = timeout_s
        self.cache = cache or L1Cache(
            clock=time.monotonic_ns, max_entries=4096, ttl_ns=int(cache_ttl_s * 1e9)
        )
        self.tiers = TieredCache(self.cache, redis, encode=_encode, decode=_decode)
        self.stats = DecisionStats()
        self._identity: tuple[str, SamplingConfig] | None = None

    async def _model_identity(self) -> tuple[str, SamplingConfig]:
        if self._identity is None:
            info = await self._handle.describe.remote()
            self._identity = (str(info["model"]), msgspec.convert(info["sampling"], SamplingConfig))
        return self._identity

    async def decide(self, prompt: DecisionPrompt) -> LlmDecision:
        try:
            model, sampling = await asyncio.wait_for(self._model_identity(), self.timeout_s)
        except Exception:
            self.stats.errors += 1
            return HOLD
        key = cache_key(model, prompt, sampling)
        asked = False

        async def load(_: str) -> LlmDecision:
            nonlocal asked
            asked = True
            return await self._ask(prompt)

        try:
            decision: LlmDecision = await self.tiers.aget(key, load)
        except _NotCached as failed:
            return failed.decision
        if not asked:  # from L1, from Redis, or shared with an identical call in flight
            self.stats.cache_hits += 1
        return decision

    async def _ask(self, prompt: DecisionPrompt) -> LlmDecision:
        """One model call. Failures raise ``_NotCached`` (with HOLD or the parsed fallback),
        so the tiers store only valid decisions."""
        response = self._handle.remote(msgspec.to_builtins(prompt))
        try:
            reply = await asyncio.wait_for(response, self.timeout_s)
        except TimeoutError:
            response.cancel()
            self.stats.timeouts += 1
            raise _NotCached(HOLD) from None
        except Exception:
            self.stats.errors += 1
            raise _NotCached(HOLD) from None
        if not isinstance(reply, dict) or reply.get("error"):
            self.stats.errors += 1
            raise _NotCached(HOLD)
        result = parse_decision(reply.get("text"))
        self.stats.record(result)
        if not result.ok:
            raise _NotCached(result.decision)
        return result.decision

    async def decide_many(self, prompts: Sequence[DecisionPrompt]) -> list[LlmDecision]:
        """Concurrent requests: the deployment batches them."""
        return list(await asyncio.gather(*(self.decide(p) for p in prompts)))


class _NotCached(Exception):
    def __init__(self, decision: LlmDecision) -> None:
        super().__init__("not cacheable")
        self.decision = decision


def _encode(decision: LlmDecision) -> bytes:
    return msgspec.msgpack.encode(decision)


def _decode(data: bytes) -> LlmDecision:
    return msgspec.msgpack.decode(data, type=LlmDecision)


async def answer_requests(
    client: DecisionClient, requests: Sequence[DecisionRequest]
) -> list[tuple[int, LlmDecision]]:
    """``(request_id, decision)`` for drained agent requests, asked concurrently.

    An agent actor runs this as a background task and feeds the results to
    ``agent.on_decision`` between event batches, so the tick path never awaits a model.
    """
    decisions = await asyncio.gather(*(client.decide(r.prompt) for r in requests))
    return [(r.request_id, d) for r, d in zip(requests, decisions, strict=True)]
