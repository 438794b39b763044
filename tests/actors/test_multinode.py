"""Three Ray nodes on one machine: agents spread over the worker nodes; a node is removed
mid-run and the run still ends with the no-fault run's fills, positions and rows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from actors.system import SystemHandles
from tests.actors.harness import assert_same_outcome, make_config, run

pytestmark = pytest.mark.slow

AGENTS = [
    {
        "id": f"mm{i}",
        "kind": "avellaneda_stoikov",
        "symbol": "BTCUSDT",
        "resources": {"agents": 1},
        "params": {"order_amount": 0.002, "max_inventory": 0.02, "order_refresh_time": 0.5},
    }
    for i in range(2)
] + [
    {
        "id": "mom",
        "kind": "momentum",
        "symbol": "BTCUSDT",
        "resources": {"agents": 1},
        "params": {"order_lots": 2, "allow_short": True, "fast_span": 5, "slow_span": 30},
    },
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "resources": {"core": 8},
            "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    for _ in range(2):
        cluster.add_node(num_cpus=2, resources={"agents": 8})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="sapphire-multinode")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _config(root: Path) -> Any:
    return make_config(
        root, agents=AGENTS, ray={"core_resources": {"core": 1}, "agent_timeout_s": 60.0}
    )


def test_agents_spread_and_a_lost_node_costs_nothing(cluster: Cluster, tmp_path: Path) -> None:
    baseline = run(_config(tmp_path / "a"), "multinode-baseline")
    # the default transport's Unix sockets reach no other node: the rounds took the graph
    assert baseline.summary["transport"] == "compiled"
    placement: dict[str, set[str]] = {}

    def remove_a_node(handles: SystemHandles, step: int) -> None:
        if step != 9:
            return
        nodes = {}
        for agent_id, handle in handles.agents.items():
            node_id = ray.get(handle.node_id.remote())
            nodes.setdefault(node_id, []).append(agent_id)
        placement["nodes"] = set(nodes)
        victim = next(n for n in cluster.worker_nodes if n.node_id in nodes)
        cluster.remove_node(victim, allow_graceful=False)
        placement["lost_agents"] = set(nodes[victim.node_id])
        time.sleep(0.5)

    outcome = run(_config(tmp_path / "b"), "multinode-chaos", before_step=remove_a_node)
    assert len(placement["nodes"]) == 2, "agents must be spread over both worker nodes"
    assert placement["lost_agents"], "the removed node must have hosted agents"
    assert_same_outcome(baseline, outcome)
