"""Async decision client for the Serve deployment: timeout, cache, validation, counts.

It implements :class:`sapphire.llm.client.DecisionClient`: every path ends in a validated
:class:`LlmDecision`, and every failure (timeout, transport error, bad output) in ``HOLD``
plus one count in :attr:`stats`. Only successfully parsed decisions are cached, under
``cache_key(model, prompt, sampling, engine)``, so a transient failure is retried next time. The
cache is the tiered one (L1 in process, then Redis when one is given, then the model):
identical prompts from several agent actors, or from an actor after a restart, are answered
once, and concurrent identical prompts share one model call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec
from ray import serve

from sapphire.adapters.redis_cache import RedisCache
from sapphire.agents.llm_agent import DecisionRequest
from sapphire.llm.client import DecisionClient
from sapphire.llm.decision import HOLD, DecisionStats, LlmDecision, parse_decision
from sapphire.llm.pit import CLEAR, CutoffVerdict, check_cutoff
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig, cache_key
from sapphire.storage.cache import L1Cache
from sapphire.storage.tiered import TieredCache

APP_NAME = "sapphire-llm"
DEPLOYMENT_NAME = "LlmDecisionDeployment"


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """One decision and everything a risk desk asks about it: whether the model's answer is
    usable (``error`` says why not), whether it predates the model's knowledge cutoff, what
    it cost (zero tokens and cost on a cache hit, and for a call that shared an identical
    call's failed answer) and the prompt's cache key (``prompt_hash``). Frozen: one model
    call's answer may reach several callers, each changing its own copy."""

    decision: LlmDecision
    error: str = ""
    model: str = ""
    prompt_hash: str = ""
    before_cutoff: bool = False
    cache_hit: bool = False
    latency_ns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_wait_ns: int = 0
    batch_size: int = 0
    cpu_s: float = 0.0
    gpu_s: float = 0.0
    cost: Decimal = Decimal(0)
    cost_currency: str = ""

    @property
    def valid(self) -> bool:
        return not self.error


# a leaseholder's call ends (answered or timed out) within timeout_s; the slack covers storing
# the answer before the lease is released
_LEASE_SLACK_S = 0.5


class _Identity(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    sampling: SamplingConfig
    knowledge_cutoff: str = ""
    point_in_time: str = "warn"
    engine: str = ""


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
        # agents asking the same question at the same instant (same features, same model)
        # make one model call: the first takes a lease in Redis for as long as a call may
        # take, the others wait for its answer in L2
        self.tiers = TieredCache(
            self.cache, redis, encode=_encode, decode=_decode, lease_s=timeout_s + _LEASE_SLACK_S
        )
        self.stats = DecisionStats()
        self._identity: _Identity | None = None

    async def _model_identity(self) -> _Identity:
        if self._identity is None:
            info = await self._handle.describe.remote()
            self._identity = msgspec.convert(
                {k: info[k] for k in _Identity.__struct_fields__ if k in info}, _Identity
            )
        return self._identity

    async def decide(self, prompt: DecisionPrompt) -> LlmDecision:
        return (await self.decide_detailed(prompt)).decision

    async def decide_detailed(
        self, prompt: DecisionPrompt, ts_event_ns: int | None = None
    ) -> Answer:
        """The decision for ``prompt`` with its metering. ``ts_event_ns`` (the event it is
        about) is checked against the model's knowledge cutoff: flagged, or under
        ``point_in_time: strict`` refused without asking the model."""
        started = time.perf_counter_ns()
        try:
            ident = await asyncio.wait_for(self._model_identity(), self.timeout_s)
        except Exception as exc:
            self.stats.errors += 1
            return Answer(decision=HOLD, error=f"error: model not reachable ({type(exc).__name__})")
        verdict: CutoffVerdict = CLEAR
        if ts_event_ns is not None:
            verdict = check_cutoff(ts_event_ns, ident.knowledge_cutoff, ident.point_in_time)
        key = prompt_key(ident, prompt)
        if verdict.refused:
            self.stats.refused += 1
            return Answer(
                decision=HOLD,
                error=verdict.reason,
                model=ident.model,
                before_cutoff=True,
                prompt_hash=key,
            )
        fresh: list[Answer] = []

        async def load(_: str) -> LlmDecision:
            answer = await self._ask(prompt, ident.model)
            fresh.append(answer)
            if answer.error:
                raise _NotCached(answer)
            return answer.decision

        try:
            decision: LlmDecision = await self.tiers.aget(key, load)
        except _NotCached as failed:
            # this call's own model call failed, or an identical call in flight whose failure
            # it waited on: that call's tokens and cost are its own row's, stored once
            answer = failed.answer if fresh else _shared(failed.answer)
        else:
            if fresh:
                answer = fresh[0]
            else:  # from L1, from Redis, or shared with an identical call in flight
                self.stats.cache_hits += 1
                answer = Answer(decision=decision, model=ident.model, cache_hit=True)
        return msgspec.structs.replace(
            answer,
            before_cutoff=verdict.flagged,
            latency_ns=time.perf_counter_ns() - started,
            prompt_hash=key,
        )

    async def _ask(self, prompt: DecisionPrompt, model: str) -> Answer:
        """One model call; its failures come back as an :class:`Answer` with ``error`` (the
        caller keeps them out of the cache, so a transient failure is retried next time)."""
        response = self._handle.remote(msgspec.to_builtins(prompt))
        try:
            reply = await asyncio.wait_for(response, self.timeout_s)
        except TimeoutError:
            response.cancel()
            self.stats.timeouts += 1
            error = f"timeout: no answer from the model within {self.timeout_s:g} s"
            return Answer(decision=HOLD, error=error, model=model)
        except Exception as exc:
            self.stats.errors += 1
            return Answer(decision=HOLD, error=f"error: {type(exc).__name__}: {exc}"[:300])
        if not isinstance(reply, dict):
            self.stats.errors += 1
            return Answer(decision=HOLD, error="error: reply is not a mapping", model=model)
        meter = _metering(reply, model)
        if reply.get("error"):
            self.stats.errors += 1
            return Answer(decision=HOLD, error=f"error: {reply['error']}"[:300], **meter)
        result = parse_decision(reply.get("text"))
        self.stats.record(result)
        return Answer(decision=result.decision, error=result.error[:300], **meter)

    async def decide_many(self, prompts: Sequence[DecisionPrompt]) -> list[LlmDecision]:
        """Concurrent requests: the deployment batches them."""
        return list(await asyncio.gather(*(self.decide(p) for p in prompts)))


def prompt_key(ident: _Identity | None, prompt: DecisionPrompt) -> str:
    """The cache key of ``prompt`` for the model ``ident`` names (what a stored decision
    names as its ``prompt_hash``); "" before the model's identity is known (None)."""
    if ident is None:
        return ""
    return cache_key(ident.model, prompt, ident.sampling, ident.engine)


def _shared(answer: Answer) -> Answer:
    """Another call's failed answer, as a call that waited on it stores it: the error and
    the model, without the model call's metering (its leader's row carries that, once)."""
    return msgspec.structs.replace(
        answer,
        prompt_tokens=0,
        completion_tokens=0,
        queue_wait_ns=0,
        batch_size=0,
        cpu_s=0.0,
        gpu_s=0.0,
        cost=Decimal(0),
        cost_currency="",
    )


class _NotCached(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__("not cacheable")
        self.answer = answer


def _metering(reply: dict[str, Any], model: str) -> dict[str, Any]:
    return {
        "model": str(reply.get("model") or model),
        "prompt_tokens": int(reply.get("prompt_tokens", 0)),
        "completion_tokens": int(reply.get("completion_tokens", 0)),
        "queue_wait_ns": int(reply.get("queue_wait_ns", 0)),
        "batch_size": int(reply.get("batch_size", 0)),
        "cpu_s": float(reply.get("cpu_s", 0.0)),
        "gpu_s": float(reply.get("gpu_s", 0.0)),
        "cost": Decimal(str(reply.get("cost", "0"))),
        "cost_currency": str(reply.get("cost_currency", "")),
    }


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
