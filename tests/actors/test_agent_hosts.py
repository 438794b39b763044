"""Agents sharing a host (``AgentSpec.host``): one actor process steps them, with the same
fills, orders and stored rows as one actor each; killing the shared actor mid-step loses and
duplicates nothing; a hung agent takes its host's other agents into quarantine with it, and
no one else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import ray

from actors.system import shutdown_system, start_system
from sapphire.config.system import SystemConfig
from tests.actors.harness import Outcome, assert_same_outcome, make_config, run
from tests.ray_local import init_local, release_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=4, include_dashboard=False, namespace="sapphire-hosts")
    yield
    release_local()


DATA = {"source": "sample", "batch_events": 1000, "max_events": 12_000}


def hosted(root: Path, host: str = "pair", **overrides: Any) -> SystemConfig:
    base = make_config(root, data=DATA)
    agents = [
        {"id": a.id, "kind": a.kind, "symbol": a.symbol, "params": a.params, "host": host}
        for a in base.agents
    ]
    return make_config(root, data=DATA, agents=agents, **overrides)


@pytest.fixture(scope="module")
def apart(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    outcome = run(make_config(tmp_path_factory.mktemp("apart"), data=DATA), "apart")
    assert outcome.summary["fills"] > 3  # the replay exercises what the runs compare
    return outcome


def test_agents_sharing_a_host_trade_exactly_as_in_actors_of_their_own(
    apart: Outcome, tmp_path: Path
) -> None:
    config = hosted(tmp_path)
    handles = start_system(config, "hosts-probe")
    try:
        # one actor for the two agents, named for its host
        assert list(handles.agent_hosts) == ["agents-pair"]
        assert handles.agents["mm"] == handles.agents["mom"]
        stats = ray.get(handles.agents["mom"].stats.remote("mom"), timeout=120)
        assert (stats["agent_id"], stats["agents"]) == ("mom", ["mm", "mom"])
    finally:
        shutdown_system(handles)
    assert_same_outcome(apart, run(config, "together"))


def test_killing_a_shared_host_mid_step_loses_and_duplicates_nothing(
    apart: Outcome, tmp_path: Path
) -> None:
    # the host of both agents killed twice in one run: early, and again once restored
    kills = [("agent:mm", 4, 0.02), ("agent:mm", 13, 0.02)]
    outcome = run(hosted(tmp_path), "host-kills", kills=kills)
    assert outcome.restarted == {"agent:mm": True}
    assert_same_outcome(apart, outcome)


def test_a_hung_agent_quarantines_its_host_and_no_one_else(ray_local: None, tmp_path: Path) -> None:
    base = make_config(tmp_path, data=DATA)
    mm = base.agents[0]
    agents = [
        {"id": "mm", "kind": mm.kind, "symbol": mm.symbol, "params": mm.params, "host": "h"},
        {
            "id": "hanger",
            "kind": "tests.actors.faulty:HangingAgent",
            "symbol": "BTCUSDT",
            "host": "h",
        },
        {"id": "raiser", "kind": "tests.actors.faulty:RaisingAgent", "symbol": "BTCUSDT"},
    ]
    agents[1]["host"] = "h"
    config = make_config(tmp_path, data=DATA, agents=agents, ray={"agent_timeout_s": 3.0})
    outcome = run(config, "host-hang")
    quarantined = outcome.summary["quarantined"]
    assert set(quarantined) == {"mm", "hanger"}, quarantined
    stored = outcome.rows["risk_decisions"].filter(pl.col("reason") == "risk_agent_quarantined")
    assert sorted(stored["agent_id"].to_list()) == ["hanger", "mm"]
    assert all("timed out" in d for d in stored["detail"].to_list())
