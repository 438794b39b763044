"""An LLM in the risk desk's seat: it names the market's risk mode, and the coordinator scales
every other agent's limits down by it (``risk.regime``, ``sapphire.risk.regime``).

The model only ever picks one of three words: its answer is grammar-constrained to the JSON
schema ``{"regime": "calm" | "normal" | "stressed"}``, parsed against that schema again, and
anything else (no output, malformed JSON, a value outside the enum, an engine failure, a
feature known after the decision time) hands that decision to the rule baseline, counted in
:class:`RegimeStats`. Whatever it says, a regime can only tighten limits (scales are in
(0, 1]), so a wrong model costs trading room, never risk.

Prompts are numbers with a fixed precision and a symbol matching a strict pattern, like the
trading agent's (``sapphire.llm.prompt``), and the system prompt is one constant, so
consecutive prompts share their prefix in the llama.cpp KV cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from sapphire.llm.decision import MAX_OUTPUT_CHARS
from sapphire.llm.engines import EngineError, Generation, LlamaCppConfig, TextEngine
from sapphire.llm.pit import LookaheadError, PointInTimeMode, check_as_of, check_cutoff
from sapphire.llm.prompt import DecisionPrompt, PromptError, safe_symbol
from sapphire.risk.regime import (
    REGIMES,
    Regime,
    RegimeCall,
    RegimeFeatures,
    RegimeThresholds,
    RuleClassifier,
)
from sapphire.storage.records import LlmDecisionRecord

# who the stored decisions name (``llm_decisions.agent_id``): the coordinator's risk desk
REGIME_AGENT_ID = "risk.regime"

REGIME_SYSTEM_PROMPT = (
    "You are a crypto risk manager. From the market features, name the risk regime: "
    "stressed when volatility is above its stressed level or the price fell or jumped "
    "sharply, calm when volatility is below its calm level, normal otherwise. "
    'Answer with JSON only: {"regime": "calm"}, {"regime": "normal"} or {"regime": "stressed"}.'
)


class RegimeAnswer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    regime: Literal["calm", "normal", "stressed"]


_DECODER = msgspec.json.Decoder(RegimeAnswer)


def regime_json_schema() -> dict[str, Any]:
    """The flat schema the grammar is built from (one required enum property)."""
    return {
        "type": "object",
        "properties": {"regime": {"type": "string", "enum": list(REGIMES)}},
        "required": ["regime"],
        "additionalProperties": False,
    }


class RegimeStats(msgspec.Struct, kw_only=True):
    """Counts of the model's answers; every one not ``ok`` was decided by the rules."""

    ok: int = 0
    malformed_json: int = 0
    schema_violation: int = 0
    errors: int = 0
    """The engine failed: no model output for the batch."""
    refused: int = 0
    """Never asked: a feature known after the decision time, or (``point_in_time:
    strict``) an event before the model's knowledge cutoff."""
    before_cutoff: int = 0
    """Asked about a time before the model's knowledge cutoff: it may know what came next
    (flagged, as an LLM agent's decisions are; the answers are still used)."""

    @property
    def fallbacks(self) -> int:
        return self.malformed_json + self.schema_violation + self.errors + self.refused


def parse_regime(text: object) -> tuple[Regime | None, str]:
    """``(regime, "")`` for a valid answer, ``(None, reason)`` otherwise; never raises. The
    reason starts with ``malformed_json`` or ``schema_violation``."""
    if not isinstance(text, str):
        return None, f"malformed_json: expected text, got {type(text).__name__}"
    if len(text) > MAX_OUTPUT_CHARS:
        return None, f"malformed_json: output of {len(text)} chars is too long"
    try:
        return _DECODER.decode(text.strip()).regime, ""
    except msgspec.ValidationError as exc:
        try:
            msgspec.json.decode(text)
        except msgspec.DecodeError as syntax:
            return None, f"malformed_json: {syntax}"
        return None, f"schema_violation: {exc}"
    except msgspec.DecodeError as exc:
        return None, f"malformed_json: {exc}"


def _num(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def build_regime_prompt(
    features: RegimeFeatures,
    thresholds: RegimeThresholds,
    system: str = REGIME_SYSTEM_PROMPT,
) -> DecisionPrompt:
    """The features, and the baseline's reference levels so the model reads them on the same
    scale. Raises :class:`PromptError` on a bad symbol and :class:`LookaheadError` on a
    feature known after the decision time."""
    symbol = safe_symbol(features.symbol)
    check_as_of(features.ts_event_ns, (("samples", features.as_of_ns),))
    lines = [
        f"market {symbol}",
        f"calm_volatility_bps {_num(thresholds.calm_volatility_bps, 1)}",
        f"stressed_volatility_bps {_num(thresholds.stressed_volatility_bps, 1)}",
        f"volatility_bps {_num(features.volatility_bps, 1)}",
        f"spread_bps {_num(features.spread_bps, 2)}",
        f"drawdown_bps {_num(features.drawdown_bps, 0)}",
        f"return_bps {_num(features.trend_bps, 0)}",
        "Regime now? JSON only.",
    ]
    return DecisionPrompt(system=system, user="\n".join(lines))


class LlmRegimeClassifier:
    """Asks ``engine`` for a batch of regimes at once; the rules decide what it cannot."""

    name = "llm"

    def __init__(
        self,
        engine: TextEngine,
        fallback: RuleClassifier,
        system: str = REGIME_SYSTEM_PROMPT,
        knowledge_cutoff: str = "",
        point_in_time: PointInTimeMode = "warn",
        clock: Callable[[], int] | None = None,
    ) -> None:
        """``point_in_time``: warn flags a decision about an event before the model's
        cutoff, strict refuses to ask (the rules decide), off neither. ``clock``: a wall
        clock in ns, for each stored decision's latency (None: 0, a pure replay)."""
        self.engine = engine
        self.fallback = fallback
        self.system = system
        self.stats = RegimeStats()
        self.knowledge_cutoff = knowledge_cutoff
        self.point_in_time = point_in_time
        self._clock = clock
        # every decision, as an LLM agent's are stored (``llm_decisions``): taken by the
        # coordinator after each step (:meth:`take_records`)
        self.records: list[LlmDecisionRecord] = []

    def prompt(self, features: RegimeFeatures) -> DecisionPrompt:
        return build_regime_prompt(features, self.fallback.thresholds, self.system)

    def classify(self, features: Sequence[RegimeFeatures]) -> list[RegimeCall]:
        calls: list[RegimeCall | None] = [None] * len(features)
        flagged = [False] * len(features)
        asked: list[int] = []
        prompts: list[DecisionPrompt] = []
        for i, f in enumerate(features):
            try:
                prompt = self.prompt(f)
            except (LookaheadError, PromptError) as exc:
                self.stats.refused += 1
                calls[i] = self._fall_back(f, f"refused: {exc}")
                continue
            verdict = check_cutoff(f.ts_event_ns, self.knowledge_cutoff, self.point_in_time)
            flagged[i] = verdict.flagged
            self.stats.before_cutoff += int(verdict.flagged)
            if verdict.refused:  # strict: never asked about what it may have read
                self.stats.refused += 1
                calls[i] = self._fall_back(f, f"refused: {verdict.reason}")
                continue
            prompts.append(prompt)
            asked.append(i)
        outputs: list[Generation] = []
        started = self._clock() if self._clock is not None else 0
        if prompts:
            try:
                outputs = self._generate(prompts)
            except Exception as exc:  # any engine failure: the rules decide, counted
                error = f"error: {type(exc).__name__}: {exc}"
                for i in asked:
                    self.stats.errors += 1
                    calls[i] = self._fall_back(features[i], error)
                asked = []
        latency = (self._clock() - started) // max(len(prompts), 1) if self._clock else 0
        for n, i in enumerate(asked):
            text = outputs[n].text if n < len(outputs) else None
            regime, error = parse_regime(text)
            if regime is None:
                if error.startswith("schema_violation"):
                    self.stats.schema_violation += 1
                else:
                    self.stats.malformed_json += 1
                calls[i] = self._fall_back(features[i], error)
            else:
                self.stats.ok += 1
                calls[i] = RegimeCall(regime, self.name)
        done = [c for c in calls if c is not None]
        slot = {i: n for n, i in enumerate(asked)}  # the model's answer of each asked
        for i, (f, call) in enumerate(zip(features, done, strict=True)):
            at = slot.get(i)
            output = outputs[at] if at is not None and at < len(outputs) else None
            self.records.append(
                LlmDecisionRecord(
                    ts_event_ns=f.ts_event_ns,
                    agent_id=REGIME_AGENT_ID,
                    symbol=f.symbol,
                    model=self.engine.model_id,
                    action=call.regime,
                    size_fraction=0.0,
                    confidence=0.0,
                    rationale="",
                    valid=call.source == self.name,
                    latency_ns=latency if at is not None else 0,
                    error=call.error,
                    fallback="rules" if call.source != self.name else "",
                    before_cutoff=flagged[i],
                    prompt_tokens=output.prompt_tokens if output is not None else 0,
                    completion_tokens=output.completion_tokens if output is not None else 0,
                    batch_size=len(prompts) if at is not None else 0,
                )
            )
        return done

    def _generate(self, prompts: list[DecisionPrompt]) -> list[Generation]:
        detailed = getattr(self.engine, "generate_batch_detailed", None)
        if detailed is not None:
            return list(detailed(prompts))
        return [Generation(text=t) for t in self.engine.generate_batch(prompts)]

    def take_records(self) -> list[LlmDecisionRecord]:
        out, self.records = self.records, []
        return out

    def _fall_back(self, features: RegimeFeatures, error: str) -> RegimeCall:
        return RegimeCall(self.fallback.regime(features), "fallback", error)


def regime_engine(config: LlamaCppConfig) -> TextEngine:
    """The llama.cpp engine with its grammar built from :func:`regime_json_schema` instead of
    the trading decision's schema (same batching, prefix cache and greedy grammar sampler)."""
    from sapphire.llm.llamacpp import LlamaCppEngine  # the backend loads here

    return LlamaCppEngine(config, schema=regime_json_schema())


DEFAULT_ENGINE: dict[str, Any] = {
    "n_threads": 2,
    "max_parallel": 8,
    # an answer is at most ~10 tokens; a bound keeps a looping model cheap
    "sampling": {"temperature": 0.0, "max_tokens": 24},
}


def regime_engine_config(engine: dict[str, Any]) -> LlamaCppConfig:
    """``risk.regime.llm`` (llama.cpp engine fields over :data:`DEFAULT_ENGINE`), checked
    without loading the model: a run checks it before its first step (the model loads at
    the first evaluation, where a bad field was a traceback mid-run)."""
    raw = {**DEFAULT_ENGINE, **engine}
    try:
        config = msgspec.convert(raw, LlamaCppConfig)
    except msgspec.ValidationError as exc:
        raise EngineError(f"risk.regime.llm: {exc}") from exc
    if config.sampling.temperature != 0.0:
        raise EngineError("risk.regime.llm: sampling.temperature must be 0 (replays repeat)")
    if config.model_path and not Path(config.model_path).expanduser().is_file():
        raise EngineError(f"risk.regime.llm.model_path: no file {config.model_path}")
    return config


def llm_regime_classifier(
    engine: dict[str, Any], fallback: RuleClassifier, point_in_time: PointInTimeMode = "warn"
) -> LlmRegimeClassifier:
    """``risk.regime.llm`` (llama.cpp engine fields over :data:`DEFAULT_ENGINE`) -> classifier,
    its decisions' latency on the wall clock (the model runs here, at the I/O edge)."""
    config = regime_engine_config(engine)
    return LlmRegimeClassifier(
        regime_engine(config),
        fallback,
        knowledge_cutoff=config.knowledge_cutoff,
        point_in_time=point_in_time,
        clock=time.perf_counter_ns,
    )


__all__ = [
    "REGIME_SYSTEM_PROMPT",
    "LlmRegimeClassifier",
    "RegimeAnswer",
    "RegimeStats",
    "build_regime_prompt",
    "llm_regime_classifier",
    "parse_regime",
    "regime_engine",
    "regime_json_schema",
]
