"""The decision-client contract, and an in-process client over any :class:`TextEngine`.

Agents never call a client: they hand out prompts and get decisions back later (see
``sapphire.agents.llm_agent``). Clients are used by the layer that drains those requests:
the Ray Serve client in ``actors/serve/llm_client.py`` or, in a single-process backtest,
:class:`EngineDecisionClient`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from sapphire.llm.decision import DecisionStats, LlmDecision, parse_decision
from sapphire.llm.engines import TextEngine
from sapphire.llm.prompt import DecisionPrompt


@runtime_checkable
class DecisionClient(Protocol):
    stats: DecisionStats

    async def decide(self, prompt: DecisionPrompt) -> LlmDecision:
        """A validated decision for ``prompt``; :data:`HOLD` on any failure (never raises)."""


class EngineDecisionClient:
    """Runs an engine in a worker thread (one prompt per call) and validates its output."""

    def __init__(self, engine: TextEngine) -> None:
        self.engine = engine
        self.stats = DecisionStats()
        self._lock = asyncio.Lock()

    async def decide(self, prompt: DecisionPrompt) -> LlmDecision:
        # llama.cpp contexts are not re-entrant: one generation at a time per engine.
        async with self._lock:
            texts = await asyncio.to_thread(self.engine.generate_batch, [prompt])
        result = parse_decision(texts[0] if texts else "")
        self.stats.record(result)
        return result.decision
