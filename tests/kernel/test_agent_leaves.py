"""Which agents share a Ray actor (``AgentSpec.host``), decided from the config alone."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from sapphire.config.system import SystemConfig
from sapphire.kernel.assembly import check_agents, load_instruments
from sapphire.kernel.builders import WiringError, agent_leaves


def config(agents: list[dict[str, Any]]) -> SystemConfig:
    return msgspec.convert({"data": {"source": "sample"}, "agents": agents}, SystemConfig)


def agent(agent_id: str, host: str = "", kind: str = "momentum") -> dict[str, Any]:
    return {"id": agent_id, "kind": kind, "symbol": "BTCUSDT", "host": host}


def test_agents_naming_a_host_share_its_actor_in_config_order() -> None:
    cfg = config([agent("b", "x"), agent("solo"), agent("a", "x"), agent("c", "y")])
    assert agent_leaves(cfg) == {
        "agents-x": ("b", "a"),
        "agent-solo": ("solo",),
        "agents-y": ("c",),
    }


def test_a_host_named_like_an_agent_is_still_another_actor() -> None:
    cfg = config([agent("a"), agent("b", "a")])
    assert agent_leaves(cfg) == {"agent-a": ("a",), "agents-a": ("b",)}


def test_bad_host_names_and_shared_llm_agents_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="host"):
        config([agent("a", "no spaces")])
    cfg = config([agent("a", "x", kind="llm")])
    with pytest.raises(WiringError, match="agent a: an LLM agent cannot share a host"):
        check_agents(cfg, load_instruments(cfg.data))


@pytest.mark.parametrize("kind", ["llm", "sapphire.agents.llm:build_llm_agent"])
def test_an_llm_agent_is_found_by_what_it_is_not_by_its_kinds_name(kind: str) -> None:
    # named by its factory path, an LLM agent was not found: on Ray it got no Serve app and
    # no bridge (every decision a silent fallback), and it could share a host
    cfg = config([agent("a", kind=kind), agent("b")])
    assert check_agents(cfg, load_instruments(cfg.data)) == {"a"}
    shared = config([agent("a", "x", kind=kind)])
    with pytest.raises(WiringError, match="agent a: an LLM agent cannot share a host"):
        check_agents(shared, load_instruments(shared.data))


def test_asks_model_is_the_drain_requests_capability() -> None:
    from sapphire.agents.llm_agent import LlmAgent
    from sapphire.agents.momentum import MomentumAgent
    from sapphire.kernel.builders import asks_model

    inst = load_instruments(config([]).data)["BTCUSDT"]
    assert asks_model(LlmAgent("a", inst, {}))
    assert not asks_model(MomentumAgent("m", inst, {}))
