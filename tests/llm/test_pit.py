"""Point-in-time rules: the model's knowledge cutoff, and features known after decision time."""

from __future__ import annotations

import pytest

from sapphire.llm.engines import (
    SMOLLM2_CUTOFF,
    EngineConfigError,
    LlamaCppConfig,
    engine_config_from_dict,
)
from sapphire.llm.pit import LookaheadError, PointInTimeError, check_cutoff, cutoff_ns
from sapphire.llm.prompt import MarketFeatures, build_prompt

NS = 1_000_000_000
APRIL_2023 = 1_680_652_800 * NS  # 2023-04-05, the bundled Binance sample's day


def test_every_engine_config_carries_a_cutoff_and_a_bad_date_is_refused() -> None:
    assert LlamaCppConfig().knowledge_cutoff == SMOLLM2_CUTOFF == "2024-11-01"
    for kind in ("llamacpp", "vllm", "transformers"):
        assert engine_config_from_dict({"kind": kind}).knowledge_cutoff
    with pytest.raises(EngineConfigError, match="knowledge_cutoff"):
        engine_config_from_dict({"kind": "llamacpp", "knowledge_cutoff": "Nov 2024"})
    # the right shape but no day of the calendar: accepted, then every decision failed in
    # the model client and was stored as a timeout
    for kind in ("llamacpp", "vllm", "transformers"):
        with pytest.raises(EngineConfigError, match="no calendar date"):
            engine_config_from_dict({"kind": kind, "knowledge_cutoff": "2024-13-45"})


def test_an_event_before_the_cutoff_is_flagged_and_refused_under_strict() -> None:
    warn = check_cutoff(APRIL_2023, SMOLLM2_CUTOFF, "warn")
    assert warn.flagged and not warn.refused
    assert "before the model's knowledge cutoff 2024-11-01" in warn.reason
    strict = check_cutoff(APRIL_2023, SMOLLM2_CUTOFF, "strict")
    assert strict.flagged and strict.refused and strict.reason.startswith("point_in_time:")
    assert not check_cutoff(APRIL_2023, SMOLLM2_CUTOFF, "off").flagged
    # the cutoff day itself is still inside what the model may have read
    end_of_day = cutoff_ns(SMOLLM2_CUTOFF)
    assert check_cutoff(end_of_day - 1, SMOLLM2_CUTOFF, "strict").refused
    assert not check_cutoff(end_of_day, SMOLLM2_CUTOFF, "strict").flagged
    with pytest.raises(PointInTimeError):
        check_cutoff(APRIL_2023, SMOLLM2_CUTOFF, "lenient")


def _features(as_of: tuple[tuple[str, int], ...]) -> MarketFeatures:
    return MarketFeatures(
        symbol="BTCUSDT",
        ts_event_ns=APRIL_2023,
        mid=28165.475,
        spread_bps=0.0036,
        returns_bps=((10, 0.4),),
        as_of_ns=as_of,
    )


def test_a_future_leaking_feature_is_refused_with_its_name() -> None:
    honest = _features((("mid", APRIL_2023), ("returns_bps", APRIL_2023 - NS)))
    assert "return_10s_bps 0.4" in build_prompt(honest).user
    leaking = _features((("mid", APRIL_2023), ("returns_bps", APRIL_2023 + 1)))
    with pytest.raises(LookaheadError) as info:
        build_prompt(leaking)
    assert info.value.late == (("returns_bps", APRIL_2023 + 1),)
    assert str(info.value).startswith("lookahead: returns_bps as of 2023-04-05T00:00:00.000000")
