"""Risk modes: features from the past only, the rule baseline, and limit scales that only
ever tighten what pre-trade risk allows."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.coordination.core import CoordinatorCore
from sapphire.model import Instrument, OrderIntent, OrderType, Quote, RejectReason, Side
from sapphire.model.events import Bar
from sapphire.risk.engine import RiskEngine
from sapphire.risk.limits import AgentLimits, RiskLimits
from sapphire.risk.portfolio import Portfolio
from sapphire.risk.regime import (
    NS,
    RegimeConfig,
    RegimeFeatures,
    RegimeMonitor,
    RegimeScales,
    RegimeThresholds,
    RegimeTracker,
    RuleClassifier,
    clamp_scale,
    scaled_limits,
)

BTC = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001")
MID = 600_000.0


# -- scaling ------------------------------------------------------------------------------------

limits_st = st.builds(
    AgentLimits,
    max_position_lots=st.integers(0, 10**9),
    max_order_lots=st.integers(0, 10**9),
    max_notional_quote=st.decimals(0, 10**12, places=8, allow_nan=False).map(lambda d: f"{d:f}"),
)
any_float = st.floats(allow_nan=True, allow_infinity=True)


@given(limits_st, any_float)
def test_a_scaled_limit_never_exceeds_the_configured_one(limits: AgentLimits, scale: float) -> None:
    s = clamp_scale(scale)
    assert 0.0 <= s <= 1.0
    scaled = scaled_limits(limits, scale)
    assert scaled.max_position_lots <= limits.max_position_lots
    assert scaled.max_order_lots <= limits.max_order_lots
    assert Decimal(scaled.max_notional_quote) <= Decimal(limits.max_notional_quote)
    # what is not a size limit is left alone
    assert scaled.max_orders_per_second == limits.max_orders_per_second
    assert scaled.max_daily_loss_quote == limits.max_daily_loss_quote
    # the scaled values decode as a valid config again
    msgspec.convert(msgspec.to_builtins(scaled), AgentLimits)


def test_a_huge_notional_limit_scales_too() -> None:
    huge = AgentLimits(max_notional_quote="1" + "0" * 40 + ".12345678")
    scaled = scaled_limits(huge, 0.5)
    assert Decimal(scaled.max_notional_quote) == Decimal("5" + "0" * 39 + ".06172839")


@given(st.floats(0.001, 0.999))
def test_a_scale_below_one_tightens_large_limits(scale: float) -> None:
    limits = AgentLimits(max_position_lots=100_000, max_order_lots=100_000)
    scaled = scaled_limits(limits, scale)
    assert scaled.max_position_lots == math.floor(100_000 * scale)
    assert scaled.max_order_lots == max(1, math.floor(100_000 * scale))


def test_config_scales_must_be_in_zero_one() -> None:
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"stressed": bad}, RegimeScales)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"regime": {"enabled": True, "speed": 1}}, RiskLimits)
    assert RiskLimits().regime.enabled is False


# -- the engine ---------------------------------------------------------------------------------


def intent(seq: int, qty: int, side: Side = Side.BUY) -> OrderIntent:
    return OrderIntent(
        ts_event_ns=seq * NS,
        agent_id="a",
        seq=seq,
        symbol="BTCUSDT",
        side=side,
        qty_lots=qty,
        limit_ticks=int(MID),
        order_type=OrderType.LIMIT,
    )


def engine(**agent: object) -> RiskEngine:
    limits = RiskLimits(default_agent=AgentLimits(**agent))  # type: ignore[arg-type]
    eng = RiskEngine(limits, {"BTCUSDT": BTC}, Portfolio({"BTCUSDT": BTC}))
    eng.update_mark("BTCUSDT", MID)
    return eng


@pytest.mark.parametrize("batch", [False, True])
def test_order_size_binds_at_the_scaled_value(batch: bool) -> None:
    eng = engine(max_order_lots=10)
    eng.set_limit_scale("BTCUSDT", 0.5)
    decide = _batch(eng) if batch else (lambda i: eng.check(i, 0, i.ts_event_ns))
    assert decide(intent(1, 5)).accepted
    denied = decide(intent(2, 6))
    assert denied.reason is RejectReason.RISK_ORDER_SIZE
    eng.set_limit_scale("BTCUSDT", 1.0)  # back to the configured limits
    assert decide(intent(3, 6)).accepted


def _batch(eng: RiskEngine):  # type: ignore[no-untyped-def]
    def decide(i: OrderIntent):  # type: ignore[no-untyped-def]
        out = eng.check_batch([i], {}, lambda _: 0.0)
        assert out is not None
        return out[0]

    return decide


@pytest.mark.parametrize("batch", [False, True])
def test_position_binds_at_the_scaled_value(batch: bool) -> None:
    eng = engine(max_position_lots=8)
    eng.set_limit_scale("BTCUSDT", 0.25)
    decide = _batch(eng) if batch else (lambda i: eng.check(i, 0, i.ts_event_ns))
    assert decide(intent(1, 2)).accepted
    assert decide(intent(2, 3)).reason is RejectReason.RISK_MAX_POSITION


@pytest.mark.parametrize("batch", [False, True])
def test_notional_binds_at_the_scaled_value(batch: bool) -> None:
    # 60,000 USDT a lot of 0.001 BTC is 60 USDT; cap 600 -> 10 lots, scaled 0.3 -> 3 lots
    eng = engine(max_notional_quote="600")
    eng.set_limit_scale("BTCUSDT", 0.3)
    decide = _batch(eng) if batch else (lambda i: eng.check(i, 0, i.ts_event_ns))
    assert decide(intent(1, 3)).accepted
    assert decide(intent(2, 4)).reason is RejectReason.RISK_MAX_NOTIONAL


def test_a_scale_above_one_does_not_loosen() -> None:
    eng = engine(max_order_lots=10)
    eng.set_limit_scale("BTCUSDT", 7.0)
    assert eng.limit_scales == {}
    assert eng.check(intent(1, 11), 0, NS).reason is RejectReason.RISK_ORDER_SIZE
    eng.set_limit_scale("BTCUSDT", float("nan"))  # a bad input is the tightest, not the loosest
    assert eng.agent_limits("a", "BTCUSDT").max_order_lots == 1


def test_the_scale_is_per_symbol() -> None:
    eth = Instrument(symbol="ETHUSDT", tick_size="0.01", lot_size="0.001")
    eng = RiskEngine(
        RiskLimits(default_agent=AgentLimits(max_order_lots=10)),
        {"BTCUSDT": BTC, "ETHUSDT": eth},
        Portfolio({"BTCUSDT": BTC, "ETHUSDT": eth}),
    )
    eng.set_limit_scale("ETHUSDT", 0.2)
    assert eng.agent_limits("a", "BTCUSDT").max_order_lots == 10
    assert eng.agent_limits("a", "ETHUSDT").max_order_lots == 2


# -- features and the rule baseline --------------------------------------------------------------


def bar(minute: int, close: int) -> Bar:
    """The bar that opens at ``minute`` (an event at its close, a minute later)."""
    return Bar(
        ts_event_ns=(minute + 1) * 60 * NS,
        symbol="BTCUSDT",
        interval_ns=60 * NS,
        open_ticks=close,
        high_ticks=close,
        low_ticks=close,
        close_ticks=close,
        volume_lots=1,
    )


def test_a_bar_counts_from_its_close_not_its_open() -> None:
    tracker = RegimeTracker(lookback_ns=3600 * NS, sample_interval_ns=60 * NS)
    for m in range(10):
        tracker.observe(bar(m, 600_000 + 100 * m))
    at_open_of_last = tracker.features("BTCUSDT", 9 * 60 * NS)
    assert at_open_of_last is not None
    # the last bar closes at minute 10: at its open only the nine bars before it are known
    assert at_open_of_last.samples == 9
    assert at_open_of_last.as_of_ns <= at_open_of_last.ts_event_ns
    closed = tracker.features("BTCUSDT", 10 * 60 * NS)
    assert closed is not None and closed.samples == 10


def test_tracker_features_measure_volatility_move_and_spread() -> None:
    tracker = RegimeTracker(lookback_ns=600 * NS, sample_interval_ns=NS)
    mids = [1000, 1010, 990, 1020, 980, 950]
    for i, m in enumerate(mids):
        tracker.observe(
            Quote(
                ts_event_ns=i * NS,
                symbol="X",
                bid_ticks=m - 1,
                bid_lots=1,
                ask_ticks=m + 1,
                ask_lots=1,
            )
        )
    f = tracker.features("X", 5 * NS)
    assert f is not None
    assert f.trend_bps == pytest.approx((950 / 1000 - 1) * 1e4)
    assert f.drawdown_bps == pytest.approx((1 - 950 / 1020) * 1e4)
    assert f.spread_bps == pytest.approx(sum(2 / m * 1e4 for m in mids) / len(mids))
    assert f.volatility_bps > 100


def features(vol: float, move: float = 0.0, spread: float = 0.0) -> RegimeFeatures:
    return RegimeFeatures(
        symbol="X",
        ts_event_ns=0,
        samples=60,
        volatility_bps=vol,
        spread_bps=spread,
        trend_bps=-move,
        drawdown_bps=move,
        as_of_ns=0,
    )


def test_rule_baseline_thresholds() -> None:
    rules = RuleClassifier(
        RegimeThresholds(
            stressed_volatility_bps=10,
            calm_volatility_bps=3,
            stressed_move_bps=200,
            stressed_spread_bps=5,
        )
    )
    assert rules.regime(features(2)) == "calm"
    assert rules.regime(features(5)) == "normal"
    assert rules.regime(features(10)) == "stressed"
    assert rules.regime(features(5, move=250)) == "stressed"
    assert rules.regime(features(2, spread=6)) == "stressed"
    with pytest.raises(ValueError, match="calm_volatility_bps"):
        RegimeThresholds(stressed_volatility_bps=3, calm_volatility_bps=5)


# -- in the coordinator core ------------------------------------------------------------------


def quote(sec: int, mid: int) -> Quote:
    return Quote(
        ts_event_ns=sec * NS,
        symbol="BTCUSDT",
        bid_ticks=mid - 10,
        bid_lots=5,
        ask_ticks=mid + 10,
        ask_lots=5,
    )


def _run(limits: RiskLimits) -> tuple[list[tuple[str, bool, str]], CoordinatorCore]:
    """A calm minute, then a violent one, with a 4-lot buy every 5 s (5-lot order limit)."""
    core = CoordinatorCore({"BTCUSDT": BTC}, limits, Decimal("1e9"), {"a": 1.0})
    out = []
    for sec in range(120):
        swing = 0 if sec < 60 else (3000 if sec % 2 else -3000)
        core.on_mark(quote(sec, 600_000 + swing))
        if sec % 5 == 4:
            result = core.step([], [], {"a": [intent(sec, 4)]}, sec * NS)
            out += [(d.client_order_id, d.accepted, str(d.reason)) for d in result.decisions]
    return out, core


REGIME = RegimeConfig(
    enabled=True,
    lookback_s=20,
    sample_interval_s=1,
    evaluate_every_s=5,
    min_samples=5,
    thresholds=RegimeThresholds(stressed_volatility_bps=20, calm_volatility_bps=1),
    scales=RegimeScales(calm=1.0, normal=1.0, stressed=0.5),
)


def test_off_by_default_and_scales_of_one_leave_every_decision_identical() -> None:
    base = RiskLimits(default_agent=AgentLimits(max_order_lots=5))
    off, core = _run(base)
    assert core.regime is None
    ones = msgspec.structs.replace(REGIME, scales=RegimeScales(calm=1.0, normal=1.0, stressed=1.0))
    same, core_on = _run(msgspec.structs.replace(base, regime=ones))
    assert same == off
    assert core_on.regime is not None and core_on.regime.by_regime["stressed"] > 0
    assert all(accepted for _, accepted, _ in off)


def test_a_stressed_market_scales_the_order_limit_in_the_core() -> None:
    base = RiskLimits(default_agent=AgentLimits(max_order_lots=5))
    on, core = _run(msgspec.structs.replace(base, regime=REGIME))
    calm_part = [d for d in on if int(d[0].split("-")[1]) < 60]
    violent = [d for d in on if int(d[0].split("-")[1]) >= 80]
    assert all(accepted for _, accepted, _ in calm_part)
    # 4 lots > 5 x 0.5 once the swings are in the lookback
    assert violent and all(reason == "risk_order_size" for _, _, reason in violent)
    assert core.regime is not None
    assert core.regime.current == {"BTCUSDT": "stressed"}
    summary = core.regime.summary()
    assert summary["evaluations"]["rules"] > 0 and summary["changes"] >= 2


def test_the_monitor_survives_a_snapshot_without_its_classifier() -> None:
    import pickle

    monitor = RegimeMonitor(REGIME, RuleClassifier(REGIME.thresholds))
    for sec in range(30):
        monitor.on_event(quote(sec, 600_000 + (3000 if sec % 2 else 0)))
    restored = pickle.loads(pickle.dumps(monitor))
    assert restored._classifier is None  # rebuilt from the config on first use
    a = monitor.on_event(quote(35, 600_000))
    b = restored.on_event(quote(35, 600_000))
    assert a == b is not None and a[1] == 0.5


def test_a_model_that_will_not_load_leaves_the_rules_deciding(tmp_path: Path) -> None:
    # the model loads at the first evaluation, inside the coordinator's step: a file that
    # passed the start-up check but is no model raised there, and the run failed
    pytest.importorskip("llama_cpp")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    config = msgspec.structs.replace(
        REGIME,
        classifier="llm",
        llm={"model_path": str(broken), "model_id": "broken", "knowledge_cutoff": "2024-01-01"},
    )
    monitor = RegimeMonitor(config)
    scaled = [monitor.on_event(quote(sec, 600_000 + (3000 if sec % 2 else 0))) for sec in range(30)]
    assert any(s is not None for s in scaled)  # the rules' regimes scale the limits
    summary = monitor.summary()
    assert summary["evaluations"].get("fallback", 0) > 0 and "llm" not in summary["evaluations"]
    assert summary["llm"]["errors"] == summary["evaluations"]["fallback"]


class _StressedEngine:
    """A model that calls every market stressed (a deterministic engine for the classifier)."""

    model_id = "scripted"

    def generate_batch(self, prompts: list[object]) -> list[str]:
        return ['{"regime": "stressed"}'] * len(prompts)


def test_the_llm_classifiers_counts_survive_a_snapshot(tmp_path: Path) -> None:
    # the classifier is dropped from the snapshot and its counts went with it: a resumed
    # run's summary had no LLM figures, and no point-in-time warning for the decisions
    # about events before the model's knowledge cutoff
    import pickle

    from sapphire.agents.regime import LlmRegimeClassifier

    broken = tmp_path / "broken.gguf"  # the model rebuilt after the restore will not load
    broken.write_bytes(b"not a model")
    config = msgspec.structs.replace(
        REGIME,
        classifier="llm",
        llm={"model_path": str(broken), "model_id": "broken", "knowledge_cutoff": "2024-01-01"},
    )
    classifier = LlmRegimeClassifier(
        _StressedEngine(), RuleClassifier(REGIME.thresholds), knowledge_cutoff="2024-01-01"
    )
    monitor = RegimeMonitor(config, classifier)
    for sec in range(30):  # 1970: every event is before the cutoff, flagged
        monitor.on_event(quote(sec, 600_000 + (3000 if sec % 2 else 0)))
    before = monitor.summary()["llm"]
    assert before["ok"] > 0 and before["before_cutoff"] == before["ok"]
    restored = pickle.loads(pickle.dumps(monitor))
    assert restored.summary()["llm"] == before
    # a snapshot of the restored monitor, before any classifier was rebuilt, keeps them too
    assert pickle.loads(pickle.dumps(restored)).summary()["llm"] == before
    # the classifier rebuilt at the next evaluation carries them on, and counts its own
    for sec in range(30, 45):
        restored.on_event(quote(sec, 600_000))
    after = restored.summary()["llm"]
    assert after["ok"] == before["ok"] and after["before_cutoff"] == before["before_cutoff"]
    assert after["errors"] > 0  # the rebuilt model's failures, counted on top
    # the live monitor kept counting on its own: the snapshot took a copy
    monitor.on_event(quote(35, 600_000))
    assert monitor.summary()["llm"]["ok"] == before["ok"] + 1
    assert restored.summary()["llm"]["ok"] == before["ok"]
