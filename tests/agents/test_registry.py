from __future__ import annotations

import pytest

from sapphire.agents.base import Agent, AgentConfigError
from sapphire.agents.indicator_agent import IndicatorAgent
from sapphire.agents.registry import build_agent, kinds
from tests.agents.streams import BTCUSDT


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("momentum", {}),
        ("mean_reversion", {}),
        ("avellaneda_stoikov", {"order_amount": 0.001, "max_inventory": 0.01}),
        ("indicator:EmaCross", {}),
        ("indicator:RsiBollinger", {"strategy_params": {"rsi_period": 7}}),
        ("indicator:sapphire.agents.strategies.rsi_bollinger:RsiBollingerLongShort", {}),
    ],
)
def test_build_agent_with_each_kind_returns_an_agent(kind: str, params: dict[str, object]) -> None:
    agent = build_agent(kind, "id-1", BTCUSDT, params)
    assert isinstance(agent, Agent)
    assert agent.agent_id == "id-1"


def test_build_agent_with_bad_input_raises_clear_errors() -> None:
    with pytest.raises(AgentConfigError, match="unknown agent kind 'nope'"):
        build_agent("nope", "a", BTCUSDT, {})
    with pytest.raises(AgentConfigError, match="unknown strategy"):
        build_agent("indicator:Missing", "a", BTCUSDT, {})
    with pytest.raises(AgentConfigError, match="slow"):
        build_agent("indicator:EmaCross", "a", BTCUSDT, {"strategy_params": {"fast": 30}})
    with pytest.raises(AgentConfigError, match="stake"):
        build_agent(
            "indicator:EmaCross", "a", BTCUSDT, {"stake": {"stake_lots": 1, "stake_fraction": 0.5}}
        )
    with pytest.raises(AgentConfigError, match="agent_id"):
        build_agent("momentum", "", BTCUSDT, {})
    assert "llm" in kinds()


def test_indicator_window_is_startup_plus_extra() -> None:
    agent = build_agent("indicator:EmaCross", "a", BTCUSDT, {"window_extra": 7})
    assert isinstance(agent, IndicatorAgent)
    assert agent.window == 400 + 7
