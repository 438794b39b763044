"""The LLM decision deployment: one model per replica, requests batched by ``@serve.batch``.

Dict in (a :class:`~sapphire.llm.prompt.DecisionPrompt` as builtins), dict out (raw text and
its metering: token counts, queue wait, batch size, engine time, CPU/GPU seconds and their
cost at the run's price table). The replica does not trust or parse the text for callers:
clients validate it with ``parse_decision``. Generation runs in a worker thread so the
replica's event loop keeps answering health checks and reporting load to the autoscaler
while a batch decodes.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import msgspec
from ray import serve
from starlette.requests import Request

from actors.cost import HOUR, Prices
from sapphire.llm.engines import Generation, create_engine, engine_config_from_dict
from sapphire.llm.prompt import DecisionPrompt

MAX_PROMPT_CHARS = 4000
DECISION_COST_PRECISION = Decimal("0.000000001")
"""A 135M-model decision costs millionths of a dollar: the run table's micro-unit rounding
would store most as zero. Nine places is what the stored money columns keep."""


def _validate(request: object) -> DecisionPrompt | str:
    try:
        prompt = msgspec.convert(request, DecisionPrompt)
    except msgspec.ValidationError as exc:
        return f"bad request: {exc}"
    if len(prompt.system) + len(prompt.user) > MAX_PROMPT_CHARS:
        return f"bad request: prompt longer than {MAX_PROMPT_CHARS} chars"
    return prompt


@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 1})
class LlmDecisionDeployment:
    def __init__(
        self,
        engine: dict[str, Any] | None = None,
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.02,
        point_in_time: str = "warn",
        prices: dict[str, Any] | None = None,
    ) -> None:
        config = engine_config_from_dict(dict(engine or {}))
        self._engine = create_engine(config)
        self._cutoff = config.knowledge_cutoff
        self._point_in_time = point_in_time
        prices = dict(prices or {})
        self._currency = str(prices.pop("currency", ""))
        self._prices = msgspec.convert(prices or {"cpu_hour": "0"}, Prices, strict=False)
        import ray

        assigned = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call]
        self._gpus = float(assigned.get("GPU", 0.0))
        self._batches = 0
        self.reconfigure(
            {"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s}
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        batcher: Any = self.generate  # serve.batch adds setters its type stub lacks
        if "max_batch_size" in user_config:
            batcher.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            batcher.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def generate(self, requests: list[tuple[Any, int]]) -> list[dict[str, Any]]:
        """``requests``: (request, monotonic ns it arrived at this replica)."""
        started = time.monotonic_ns()
        checked = [_validate(r) for r, _ in requests]
        prompts = [c for c in checked if isinstance(c, DecisionPrompt)]
        gens: list[Generation] = []
        error = ""
        cpu_before = time.process_time()
        if prompts:
            try:
                gens = await asyncio.to_thread(self._engine.generate_batch_detailed, prompts)
            except Exception as exc:  # an engine failure answers the batch, never kills it
                error = f"engine error: {type(exc).__name__}: {exc}"
        engine_ns = time.monotonic_ns() - started
        # Why process CPU time: llama.cpp decodes on its own threads, which a thread clock
        # misses; this process serves nothing else. A batch's cost is shared evenly.
        share = max(1, len(prompts))
        cpu_s = (time.process_time() - cpu_before) / share
        gpu_s = self._gpus * engine_ns / 1e9 / share
        cost = (
            Decimal(repr(cpu_s)) / HOUR * self._prices.cpu_hour
            + Decimal(repr(gpu_s)) / HOUR * self._prices.gpu_hour
        ).quantize(DECISION_COST_PRECISION)
        meter = {
            "batch_size": len(prompts),
            "engine_ns": engine_ns,
            "cpu_s": cpu_s,
            "gpu_s": gpu_s,
            "cost": str(cost),
            "cost_currency": self._currency,
        }
        self._batches += 1
        it = iter(gens)
        out: list[dict[str, Any]] = []
        for c, (_, arrived_ns) in zip(checked, requests, strict=True):
            waited = {**meter, "queue_wait_ns": max(0, started - arrived_ns)}
            if isinstance(c, str):
                out.append({"text": "", "error": c, **waited})
            elif error:
                out.append({"text": "", "error": error, **waited})
            else:
                g = next(it)
                out.append(
                    {
                        "text": g.text,
                        "prompt_tokens": g.prompt_tokens,
                        "completion_tokens": g.completion_tokens,
                        "model": self._engine.model_id,
                        "error": "",
                        **waited,
                    }
                )
        return out

    def describe(self) -> dict[str, Any]:
        """What a client needs for its cache key."""
        return {
            "model": self._engine.model_id,
            "sampling": msgspec.to_builtins(self._engine.sampling),
            "batches": self._batches,
            "knowledge_cutoff": self._cutoff,
            "point_in_time": self._point_in_time,
            "cost_currency": self._currency,
        }

    async def __call__(self, request: Request | dict[str, Any]) -> dict[str, Any]:
        if isinstance(request, Request):
            try:
                body = await request.json()
            except ValueError:
                return {"text": "", "error": "bad request: body is not JSON"}
        else:
            body = request
        result: dict[str, Any] = await self.generate((body, time.monotonic_ns()))
        return result
