"""Cross-field checks of the system config (sapphire.config.system)."""

from __future__ import annotations

import pytest

from sapphire.config.system import ConfigError, parse_config

AGENTS = [{"id": "mm", "kind": "momentum", "symbol": "BTCUSDT"}]


def test_limits_for_an_agent_the_config_does_not_run_are_refused() -> None:
    # a mistyped id under risk.agents bound nobody, and the agent ran on the defaults
    raw = {"agents": AGENTS, "risk": {"agents": {"nm": {"max_position_lots": 1}}}}
    with pytest.raises(ConfigError, match=r"demo.yaml: risk.agents: no agent \['nm'\]"):
        parse_config(raw, "demo.yaml")
    raw["risk"] = {"agents": {"mm": {"max_position_lots": 1}}}
    assert parse_config(raw, "demo.yaml").risk.agents["mm"].max_position_lots == 1


def test_the_llm_section_is_checked_when_the_config_loads() -> None:
    """A typo in ``llm:`` was caught only after Ray started (or never, with no LLM agent)."""
    with pytest.raises(ConfigError, match=r"unknown field `max_batch_sise` - at `\$.llm`"):
        parse_config({"llm": {"max_batch_sise": 3}})
    with pytest.raises(ConfigError, match="unknown engine kind 'vlm'"):
        parse_config({"llm": {"engine": {"kind": "vlm"}}})
    with pytest.raises(ConfigError, match="n_thread"):
        parse_config({"llm": {"engine": {"kind": "llamacpp", "n_thread": 2}}})
    assert parse_config({"llm": {"max_batch_size": 3}}).llm.max_batch_size == 3
