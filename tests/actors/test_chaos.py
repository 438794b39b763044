"""Kill each actor kind mid-step on a fixed replay, one after another in one run per seed:
the run completes with exactly the fills, positions and stored rows of a run with no fault
(0 lost, 0 duplicated). The runs use the default transport (Unix sockets, whose failures
fall back to plain calls); the compiled graph and plain calls give the same outcome."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sapphire.config.system import SystemConfig
from tests.actors.harness import Outcome, assert_same_outcome, kill_schedule, make_config, run
from tests.ray_local import init_local, release_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=4, include_dashboard=False, namespace="sapphire-chaos")
    yield
    release_local()


def chaos_config(root: Path) -> SystemConfig:
    # two thirds of the harness replay: every kill step (3-57) is early, the rest runs it out
    return make_config(root, data={"source": "sample", "batch_events": 1000, "max_events": 16_000})


@pytest.fixture(scope="module")
def baseline(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    root = tmp_path_factory.mktemp("baseline")
    outcome = run(chaos_config(root), "baseline")
    # the replay must exercise what the chaos runs compare
    assert outcome.summary["fills"] > 5
    assert outcome.rows["ticks"].height > 1000
    return outcome


VICTIMS = ("coordinator", "market_data", "execution", "sink", "agent:mm", "agent:mom")


# the second seed in `./dev full` only (CI time): a run with six kills costs 10-14 s
@pytest.mark.parametrize("seed", [11, pytest.param(23, marks=pytest.mark.full)])
def test_killing_every_actor_mid_step_loses_and_duplicates_nothing(
    baseline: Outcome, seed: int, tmp_path: Path
) -> None:
    # one run kills each actor kind in turn (a system start costs 3-5 s of both cores; six
    # runs of one kill each cost six): the run must still end exactly as the unfaulted one
    # steps 3 apart or more: each victim restarted before the next kill
    kills = kill_schedule(seed, VICTIMS, range(3, 60, 3))
    outcome = run(chaos_config(tmp_path), f"chaos-{seed}", kills=kills)
    assert outcome.restarted == {v: True for v in VICTIMS}, f"not restarted by Ray: {kills}"
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
