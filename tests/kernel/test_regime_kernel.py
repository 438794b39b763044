"""``risk.regime`` through the kernel: off it leaves a run as it was; on, the risk mode changes
at the same events whatever the window, and its scale binds in pre-trade risk."""

from __future__ import annotations

from typing import Any

import pytest

from sapphire.kernel.runner import InProcessKernel
from tests.kernel.conftest import LATENCY, kernel_config
from tests.kernel.test_window_invariance import assert_same, outcome

# seconds-scale features on the sample's quotes: the mode moves within its few minutes
REGIME: dict[str, Any] = {
    "enabled": True,
    "lookback_s": 10,
    "sample_interval_s": 1,
    "evaluate_every_s": 1,
    "min_samples": 3,
    "thresholds": {"stressed_volatility_bps": 0.3, "calm_volatility_bps": 0.1},
    "scales": {"calm": 1.0, "normal": 0.5, "stressed": 0.05},
}


def run(regime: dict[str, Any] | None, window_ns: int = 0) -> tuple[dict[str, Any], Any]:
    risk = kernel_config().risk
    raw_risk: dict[str, Any] = {
        "price_band_bps": risk.price_band_bps,
        "default_agent": {
            "max_position_lots": 50,
            "max_notional_quote": "5000",
            "max_order_lots": 20,
            "max_orders_per_second": 20,
        },
    }
    if regime is not None:
        raw_risk["regime"] = regime
    config = kernel_config(data={"window_ns": window_ns}, risk=raw_risk)
    kernel = InProcessKernel(config, "regime")
    kernel.run()
    return outcome(kernel), kernel.summary()


@pytest.fixture(scope="module")
def off() -> tuple[dict[str, Any], Any]:
    return run(None)


def test_off_by_default_is_the_run_without_it(off: tuple[dict[str, Any], Any]) -> None:
    explicit_off, summary = run({**REGIME, "enabled": False})
    assert_same(off[0], explicit_off)
    assert "regime" not in summary and "regime" not in off[1]


def test_regimes_scale_limits_the_same_way_in_every_window(
    off: tuple[dict[str, Any], Any],
) -> None:
    on, summary = run(REGIME)
    regime = summary["regime"]
    assert regime["changes"] >= 2 and regime["by_regime"]["stressed"] > 0, regime
    # the scaled limits bind: more risk denials than the same run without them
    assert sum(on["risk"].values()) > sum(off[0]["risk"].values()), (on["risk"], off[0]["risk"])
    small, small_summary = run(REGIME, window_ns=LATENCY["entry_ns"] // 10)
    assert_same(on, small)
    assert small_summary["regime"] == regime


@pytest.mark.slow
def test_the_llm_classifier_drives_the_scale_in_a_kernel_run() -> None:
    """``classifier: llm`` in the coordinator: SmolLM2-135M Q4 decides the regime at every
    evaluation (greedy, grammar-constrained), the rules only where its answer is unusable."""
    pytest.importorskip("llama_cpp")
    out, summary = run({**REGIME, "classifier": "llm", "llm": {"n_threads": 1}})
    regime = summary["regime"]
    stats = regime["llm"]
    asked = regime["evaluations"].get("llm", 0) + regime["evaluations"].get("fallback", 0)
    # every evaluation past the warm-up asked the model once; each answer is counted once
    answers = {k: v for k, v in stats.items() if k != "before_cutoff"}
    assert asked > 0 and sum(answers.values()) == asked
    # the sample (2024-08-08) is before SmolLM2's cutoff (2024-11-01): every one flagged
    assert stats["before_cutoff"] == asked
    assert stats["ok"] == regime["evaluations"].get("llm", 0) > 0
    assert sum(regime["by_regime"].values()) == sum(regime["evaluations"].values())
    # every model decision stored as an LLM agent's (llm_decisions), with its metering
    stored = out["rows"]["llm_decisions"]
    assert stored.height == asked and set(stored["agent_id"]) == {"risk.regime"}
    assert stored["before_cutoff"].all() and (stored["prompt_tokens"] > 0).any()


@pytest.mark.parametrize(
    ("llm", "why"),
    [
        ({"bogus": 1}, "unknown field `bogus`"),
        ({"sampling": {"temperature": 0.5}}, "temperature must be 0"),
        (
            {"model_path": "/nonexistent.gguf", "model_id": "x", "knowledge_cutoff": "2024-01-01"},
            "no file /nonexistent.gguf",
        ),
        # another model keeps no packaged cutoff: its later events were not flagged
        ({"model_path": "/other.gguf"}, "knowledge_cutoff .* is required with model_path"),
    ],
)
def test_a_bad_regime_model_config_is_refused_before_the_run(llm: dict[str, Any], why: str) -> None:
    # the model loads at the first evaluation: these were a traceback mid-run, exit 1
    from sapphire.kernel.builders import WiringError

    config = kernel_config(risk={"regime": {**REGIME, "classifier": "llm", "llm": llm}})
    with pytest.raises(WiringError, match=why):
        InProcessKernel(config, "bad-regime")
