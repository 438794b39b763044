"""The cache hierarchy in the running system: an agent actor killed mid-run and restarted by
Ray gets its instrument spec from Redis, not from the source; the run summary (and the
end-of-run screen) count every level; with Redis unreachable the run trades exactly the same."""

from __future__ import annotations

import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import redis
from rich.console import Console

from actors.report import print_summary
from actors.system import RunResult, finish, shutdown_system, start_system
from sapphire.adapters.bq_emulator import free_port
from sapphire.config.system import SystemConfig
from tests.actors.harness import Outcome, assert_same_outcome, make_config
from tests.ray_local import init_local, release_local

pytestmark = pytest.mark.slow

VICTIM = "mom"
KILL_STEP = 9


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=4, include_dashboard=False, namespace="sapphire-cache")
    yield
    release_local()


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"test:cache-system:{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


class Run:
    def __init__(self, outcome: Outcome, result: RunResult, agents: dict[str, Any]) -> None:
        self.outcome = outcome
        self.result = result
        self.agents = agents  # each agent actor's stats() at the end (its live incarnation)

    @property
    def cache(self) -> dict[str, Any]:
        return dict(self.result.summary["cache"])


def run(config: SystemConfig, run_id: str, kill: str = "") -> Run:
    handles = start_system(config, run_id)
    try:
        step = 0
        while True:
            ref = handles.coordinator.run_step.remote(step)
            if kill and step == KILL_STEP:
                time.sleep(0.02)  # mid-step, as tests/actors/test_chaos.py does
                ray.kill(handles.agents[kill], no_restart=False)
            progress = ray.get(ref, timeout=180)
            step += 1
            if progress.done:
                break
        agents = {a: ray.get(h.stats.remote(), timeout=60) for a, h in handles.agents.items()}
        result = finish(handles, step, 0.0)
        venue = pickle.loads(ray.get(handles.execution.exchange_record.remote()))
        return Run(Outcome(handles, result.summary, venue), result, agents)
    finally:
        shutdown_system(handles)


@pytest.fixture(scope="module")
def restarted(ray_local: None, prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("restart")
    # Redis's default 50 ms timeout is a trading budget; a CI host at load 10 can miss it,
    # and this test is about which level answers, not how fast
    redis_config = {"cache_prefix": prefix, "socket_timeout_s": 2.0}
    return run(make_config(root, redis=redis_config), "cache-restart", kill=VICTIM)


def test_restarted_agent_is_served_from_redis_not_from_the_source(restarted: Run) -> None:
    victim = restarted.agents[VICTIM]
    assert victim["restored"], "the agent was not restarted by Ray"
    # the new incarnation: a new process (L1 miss), answered by Redis, the source untouched
    own = victim["cache_incarnation"]["instruments"]
    assert own["l1"] == {"hits": 0, "misses": 1, "errors": 0}
    assert own["l2"] == {"hits": 1, "misses": 0, "errors": 0}
    assert own["l3"] == {"hits": 0, "misses": 0, "errors": 0}
    # its run totals still hold the first incarnation's lookup (from its checkpoint)
    totals = victim["cache"]["instruments"]
    assert totals["l1"]["misses"] == 2
    assert totals["l2"]["hits"] + totals["l3"]["hits"] == 2


def test_summary_reports_every_level_and_the_screen_prints_it(restarted: Run) -> None:
    cache = restarted.cache
    assert set(cache) == {"instruments", "all"}
    specs = cache["instruments"]
    n_agents = len(restarted.agents)
    assert specs["lookups"] == n_agents + 1  # every start, and the restart
    # a cold prefix: at least one agent loaded the source; agents that started at the same
    # instant may each have loaded it, never the restarted one
    assert 1 <= specs["l3"]["loads"] <= n_agents
    assert specs["l2"]["hits"] == specs["lookups"] - specs["l3"]["loads"]
    assert specs["l2"]["hits"] >= 1
    assert specs["combined_hit_ratio"] == pytest.approx(specs["l2"]["hits"] / specs["lookups"])
    assert specs["l1"]["hit_ratio"] == 0.0  # one read per process: nothing for L1 to answer
    console = Console(record=True, width=160)
    print_summary(restarted.result, console)
    screen = console.export_text()
    assert "Cache: L1 (in process) -> L2 (Redis) -> L3 (source)" in screen
    assert f"{specs['combined_hit_ratio']:.1%}" in screen


def test_results_are_identical_with_redis_unreachable(
    restarted: Run, prefix: str, tmp_path: Path
) -> None:
    down = {"port": free_port(), "cache_prefix": prefix}
    without = run(make_config(tmp_path, redis=down), "cache-no-redis")
    # the same fills, orders, positions and stored rows as the run with Redis and a restart
    assert restarted.outcome.summary["fills"] > 5
    assert_same_outcome(restarted.outcome, without.outcome)
    specs = without.cache["instruments"]
    n_agents = len(without.agents)
    assert specs["l3"]["loads"] == n_agents and specs["l2"]["hits"] == 0
    assert specs["l2"]["errors"] >= n_agents  # Redis missing shows as errors, never raised
    assert specs["combined_hit_ratio"] == 0.0
