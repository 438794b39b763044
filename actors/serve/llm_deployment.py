"""The LLM decision deployment: one model per replica, requests batched by ``@serve.batch``.

Dict in (a :class:`~sapphire.llm.prompt.DecisionPrompt` as builtins), dict out (raw text and
token counts). The replica does not trust or parse the text for callers: clients validate
it with ``parse_decision``. Generation runs in a worker thread so the replica's event loop
keeps answering health checks and reporting load to the autoscaler while a batch decodes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from ray import serve
from starlette.requests import Request

from sapphire.llm.engines import Generation, create_engine, engine_config_from_dict
from sapphire.llm.prompt import DecisionPrompt

MAX_PROMPT_CHARS = 4000


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
    ) -> None:
        config = engine_config_from_dict(dict(engine or {}))
        self._engine = create_engine(config)
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
    async def generate(self, requests: list[Any]) -> list[dict[str, Any]]:
        checked = [_validate(r) for r in requests]
        prompts = [c for c in checked if isinstance(c, DecisionPrompt)]
        gens: list[Generation] = []
        error = ""
        if prompts:
            try:
                gens = await asyncio.to_thread(self._engine.generate_batch_detailed, prompts)
            except Exception as exc:  # an engine failure answers the batch, never kills it
                error = f"engine error: {type(exc).__name__}: {exc}"
        self._batches += 1
        it = iter(gens)
        out: list[dict[str, Any]] = []
        for c in checked:
            if isinstance(c, str):
                out.append({"text": "", "error": c, "batch_size": len(prompts)})
            elif error:
                out.append({"text": "", "error": error, "batch_size": len(prompts)})
            else:
                g = next(it)
                out.append(
                    {
                        "text": g.text,
                        "prompt_tokens": g.prompt_tokens,
                        "completion_tokens": g.completion_tokens,
                        "batch_size": len(prompts),
                        "model": self._engine.model_id,
                        "error": "",
                    }
                )
        return out

    def describe(self) -> dict[str, Any]:
        """What a client needs for its cache key."""
        return {
            "model": self._engine.model_id,
            "sampling": msgspec.to_builtins(self._engine.sampling),
            "batches": self._batches,
        }

    async def __call__(self, request: Request | dict[str, Any]) -> dict[str, Any]:
        if isinstance(request, Request):
            try:
                body = await request.json()
            except ValueError:
                return {"text": "", "error": "bad request: body is not JSON"}
        else:
            body = request
        result: dict[str, Any] = await self.generate(body)
        return result
