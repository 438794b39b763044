"""Kill each actor kind mid-step on a fixed replay: the run completes with exactly the
fills, positions and stored rows of a run with no fault (0 lost, 0 duplicated). The runs use
the default transport (Unix sockets, whose failures fall back to plain calls); the
compiled graph and plain calls give the same outcome."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from sapphire.config.system import SystemConfig
from tests.actors.harness import Outcome, assert_same_outcome, make_config, run
from tests.ray_local import init_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=4, include_dashboard=False, namespace="sapphire-chaos")
    yield
    ray.shutdown()


def chaos_config(root: Path) -> SystemConfig:
    # two thirds of the harness replay: every kill step (3-20) is early, the rest runs it out
    return make_config(root, data={"source": "sample", "batch_events": 1000, "max_events": 16_000})


@pytest.fixture(scope="module")
def baseline(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    root = tmp_path_factory.mktemp("baseline")
    outcome = run(chaos_config(root), "baseline")
    # the replay must exercise what the chaos runs compare
    assert outcome.summary["fills"] > 5
    assert outcome.rows["ticks"].height > 1000
    return outcome


@pytest.mark.parametrize("seed", [11, 23])
@pytest.mark.parametrize(
    "victim", ["coordinator", "market_data", "execution", "sink", "agent:mm", "agent:mom"]
)
def test_killing_an_actor_mid_step_loses_and_duplicates_nothing(
    baseline: Outcome, victim: str, seed: int, tmp_path: Path
) -> None:
    # the seed picks the step and how far into it the kill lands
    rng = random.Random(seed)
    step, delay_s = rng.randint(3, 20), rng.uniform(0.0, 0.05)
    outcome = run(
        chaos_config(tmp_path),
        f"chaos-{victim.replace(':', '-')}-{seed}",
        chaos=(victim, step),
        kill_delay_s=delay_s,
    )
    assert outcome.victim_restarted, f"{victim} was not restarted by Ray"
    assert_same_outcome(baseline, outcome)


@pytest.mark.parametrize("transport", ["calls", "compiled"])
def test_every_transport_trades_exactly_as_the_default(
    baseline: Outcome, transport: str, tmp_path: Path
) -> None:
    # the baseline and the kills above run the default transport, sockets, without fallback
    assert baseline.summary["transport"] == "sockets"
    assert baseline.summary["counters"].get("graph_fallbacks", 0) == 0
    other = make_config(
        tmp_path,
        data={"source": "sample", "batch_events": 1000, "max_events": 16_000},
        ray={"agent_timeout_s": 20.0, "transport": transport},
    )
    outcome = run(other, transport)
    assert outcome.summary["transport"] == transport
    assert outcome.summary["counters"].get("graph_fallbacks", 0) == 0
    assert_same_outcome(baseline, outcome)
