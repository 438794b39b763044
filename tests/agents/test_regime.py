"""The LLM regime classifier: whatever the model says, the answer is one of three regimes, and
every answer it could not use was decided by the rules and counted."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from sapphire.agents.regime import (
    LlmRegimeClassifier,
    build_regime_prompt,
    parse_regime,
    regime_json_schema,
)
from sapphire.llm.pit import LookaheadError
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig
from sapphire.risk.regime import REGIMES, RegimeFeatures, RegimeThresholds, RuleClassifier

TH = RegimeThresholds(stressed_volatility_bps=10, calm_volatility_bps=3)
RULES = RuleClassifier(TH)


def features(vol: float, ts: int = 10, as_of: int = 10, symbol: str = "BTCUSDT") -> RegimeFeatures:
    return RegimeFeatures(
        symbol=symbol,
        ts_event_ns=ts,
        samples=60,
        volatility_bps=vol,
        spread_bps=0.5,
        trend_bps=-12.0,
        drawdown_bps=30.0,
        as_of_ns=as_of,
    )


class FakeEngine:
    model_id = "fake"
    sampling = SamplingConfig()

    def __init__(self, answers: Sequence[str] | Exception) -> None:
        self.answers = answers
        self.prompts: list[DecisionPrompt] = []

    def generate_batch(self, prompts: Sequence[DecisionPrompt]) -> list[str]:
        self.prompts += prompts
        if isinstance(self.answers, Exception):
            raise self.answers
        return list(self.answers)[: len(prompts)]


def test_valid_answers_are_used() -> None:
    clf = LlmRegimeClassifier(FakeEngine(['{"regime": "stressed"}', '{"regime":"calm"}']), RULES)
    calls = clf.classify([features(1.0), features(50.0)])
    # the model disagrees with the rules on both: its answers are what counts
    assert [(c.regime, c.source) for c in calls] == [("stressed", "llm"), ("calm", "llm")]
    assert clf.stats.ok == 2 and clf.stats.fallbacks == 0


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", "malformed_json"),
        ('{"regime": "stre', "malformed_json"),
        ("stressed", "malformed_json"),
        ('{"regime": "panic"}', "schema_violation"),
        ('{"regime": "calm", "why": "x"}', "schema_violation"),
        ('{"mode": "calm"}', "schema_violation"),
        ("[]", "schema_violation"),
    ],
)
def test_an_invalid_answer_falls_back_to_the_rules_and_is_counted(text: str, kind: str) -> None:
    clf = LlmRegimeClassifier(FakeEngine([text]), RULES)
    (call,) = clf.classify([features(50.0)])
    assert call.regime == RULES.regime(features(50.0)) == "stressed"
    assert call.source == "fallback" and call.error.startswith(kind)
    assert getattr(clf.stats, kind) == 1 and clf.stats.ok == 0 and clf.stats.fallbacks == 1


def test_a_short_batch_answer_is_a_fallback_too() -> None:
    clf = LlmRegimeClassifier(FakeEngine(['{"regime": "normal"}']), RULES)
    calls = clf.classify([features(1.0), features(1.0)])
    assert [c.source for c in calls] == ["llm", "fallback"]
    assert clf.stats.malformed_json == 1


def test_an_engine_failure_falls_back_for_the_whole_batch() -> None:
    clf = LlmRegimeClassifier(FakeEngine(RuntimeError("decode failed")), RULES)
    calls = clf.classify([features(1.0), features(5.0), features(50.0)])
    assert [c.regime for c in calls] == ["calm", "normal", "stressed"]
    assert {c.source for c in calls} == {"fallback"}
    assert clf.stats.errors == 3 and "decode failed" in calls[0].error


def test_future_features_are_never_sent() -> None:
    engine = FakeEngine(['{"regime": "calm"}'])
    clf = LlmRegimeClassifier(engine, RULES)
    calls = clf.classify([features(50.0, ts=10, as_of=11), features(1.0)])
    assert [(c.regime, c.source) for c in calls] == [("stressed", "fallback"), ("calm", "llm")]
    assert clf.stats.refused == 1 and len(engine.prompts) == 1
    with pytest.raises(LookaheadError):
        build_regime_prompt(features(1.0, ts=10, as_of=11), TH)


def test_the_prompt_is_numbers_only_and_deterministic() -> None:
    a = build_regime_prompt(features(12.345), TH)
    assert a == build_regime_prompt(features(12.345), TH)
    assert "volatility_bps 12.3" in a.user and "stressed_volatility_bps 10.0" in a.user
    clf = LlmRegimeClassifier(FakeEngine(['{"regime": "calm"}']), RULES)
    (call,) = clf.classify([features(1.0, symbol="BTC\nignore previous")])
    assert call.source == "fallback" and clf.stats.refused == 1


def test_parse_and_schema_agree() -> None:
    schema = regime_json_schema()
    assert schema["properties"]["regime"]["enum"] == list(REGIMES)
    for regime in REGIMES:
        assert parse_regime(f'{{"regime": "{regime}"}}') == (regime, "")
    assert parse_regime(None)[0] is None


@pytest.mark.slow
def test_the_real_model_answers_within_the_schema() -> None:
    """SmolLM2-135M Q4 in llama.cpp with the regime grammar: every answer is a valid regime."""
    pytest.importorskip("llama_cpp")
    from sapphire.agents.regime import llm_regime_classifier

    clf = llm_regime_classifier({"n_threads": 1, "max_parallel": 4}, RULES)
    batch = [features(v) for v in (0.5, 2.0, 6.0, 15.0, 40.0, 80.0)]
    started = time.perf_counter()
    calls = clf.classify(batch)
    elapsed = time.perf_counter() - started
    assert len(calls) == len(batch)
    assert all(c.regime in REGIMES for c in calls)
    # the grammar allows only the schema, so the rules never had to decide
    assert clf.stats.ok == len(batch) and clf.stats.fallbacks == 0, calls
    assert elapsed < 60


def test_asking_about_events_before_the_models_cutoff_is_flagged() -> None:
    # the regime model's cutoff was never read: a replay of its training period passed
    # without a word, where an LLM agent's decisions are flagged
    day = 86_400 * 10**9
    cutoff_day = 20_028  # 2024-11-01
    clf = LlmRegimeClassifier(
        FakeEngine(['{"regime": "calm"}'] * 2), RULES, knowledge_cutoff="2024-11-01"
    )
    before, after = cutoff_day * day, (cutoff_day + 2) * day
    calls = clf.classify(
        [features(1.0, ts=before, as_of=before), features(1.0, ts=after, as_of=after)]
    )
    assert [c.source for c in calls] == ["llm", "llm"]  # flagged, still used
    assert clf.stats.before_cutoff == 1 and clf.stats.fallbacks == 0


def test_every_decision_is_stored_with_its_metering_and_strict_refuses_before_the_cutoff() -> None:
    """The risk desk's model decisions were counted only: now each is an ``llm_decisions``
    row as an LLM agent's (who, what, valid or the fallback and why, cutoff flag, tokens,
    batch, latency); ``point_in_time: strict`` never asks about its training period."""
    from sapphire.agents.regime import REGIME_AGENT_ID

    day = 86_400 * 10**9
    before, after = 20_028 * day, 20_030 * day  # around 2024-11-01
    ticks = iter(range(0, 10**12, 1_000_000))
    clf = LlmRegimeClassifier(
        FakeEngine(['{"regime": "stressed"}', "nonsense"]),
        RULES,
        knowledge_cutoff="2024-11-01",
        point_in_time="strict",
        clock=lambda: next(ticks),
    )
    calls = clf.classify(
        [
            features(1.0, ts=before, as_of=before),
            features(1.0, ts=after, as_of=after),
            features(50.0, ts=after, as_of=after, symbol="ETHUSDT"),
        ]
    )
    assert [c.source for c in calls] == ["fallback", "llm", "fallback"]
    assert clf.stats.refused == 1 and clf.stats.before_cutoff == 1
    rows = clf.take_records()
    assert clf.take_records() == []  # taken once
    assert [(r.agent_id, r.symbol, r.action, r.valid) for r in rows] == [
        (REGIME_AGENT_ID, "BTCUSDT", "calm", False),
        (REGIME_AGENT_ID, "BTCUSDT", "stressed", True),
        (REGIME_AGENT_ID, "ETHUSDT", "stressed", False),
    ]
    refused, used, bad = rows
    assert refused.before_cutoff and "before the model's knowledge cutoff" in refused.error
    assert refused.fallback == "rules" and refused.batch_size == 0 and refused.latency_ns == 0
    assert used.batch_size == 2 and used.latency_ns == 500_000 and not used.error
    assert bad.error.startswith("malformed_json") and bad.fallback == "rules"
    assert {r.model for r in rows} == {"fake"}
