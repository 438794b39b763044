"""A sharded config on Ray: each shard's venue and agents are actors of their own; the run
trades and stores exactly what ``sapphire backtest`` does, and a shard's venue actor killed
mid-step loses and duplicates nothing (each venue checkpoints under its own name)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import ray
import yaml

from sapphire.kernel.runner import InProcessKernel
from sapphire.storage.query import read_table
from tests.actors.harness import TABLES, Outcome, assert_same_outcome, run
from tests.kernel.test_shards import SPOT, USDM, shards_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="sapphire-shards")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shards")


@pytest.fixture(scope="module")
def baseline(ray_local: None, root: Path) -> Outcome:
    return run(shards_config(root, ray={"agent_timeout_s": 20.0}), "shards-base")


def test_a_sharded_run_on_ray_trades_and_stores_as_one_process(
    baseline: Outcome, root: Path
) -> None:
    config = shards_config(root)
    config_file = root / "shards.yaml"
    config_file.write_text(yaml.safe_dump(msgspec.to_builtins(config)))
    done = subprocess.run(
        [
            *(sys.executable, "-m", "sapphire.cli", "backtest", "--config", str(config_file)),
            *("--run-id", "shards-in-process", "--no-progress"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # each shard's venue actor traded its own symbol, as the in-process shard's venue did
    kernel = InProcessKernel(config, "again")
    kernel.run()
    for k, symbol in enumerate((USDM, SPOT)):
        want = list(kernel.venues[k].gateway.fills)  # type: ignore[attr-defined]
        assert list(baseline.venues[k].fills) == want, f"shard {k}: venue fills differ"
        assert want and {f.symbol for f in want} == {symbol}
    assert baseline.summary["fills"] == kernel.summary()["fills"]
    store = root / "store"
    for table in TABLES:
        ray_rows = baseline.rows[table]
        in_process = (
            read_table(store, table, "shards-in-process")
            .drop("run_id", "date")
            .collect()
            .sort("seq")
        )
        assert ray_rows.height > 0, table
        assert ray_rows.equals(in_process), f"stored {table} differ"


def test_killing_a_shards_venue_mid_step_loses_and_duplicates_nothing(
    baseline: Outcome, tmp_path: Path
) -> None:
    outcome = run(
        shards_config(tmp_path, ray={"agent_timeout_s": 20.0}),
        "shards-chaos",
        chaos=("venue:1", 12),
    )
    assert outcome.victim_restarted, "the spot shard's venue was not restarted by Ray"
    assert_same_outcome(baseline, outcome)
