"""A run whose driver died (every actor gone with it) continues with ``--resume``: the stored
tables and the venue's record equal a run without the crash; an existing run id is never
silently reused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import ray

from actors.system import drive, run_system, start_system
from actors.wiring import WiringError
from sapphire.cli import main
from sapphire.storage.query import read_table
from tests.actors.harness import TABLES, make_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="sapphire-resume")
    yield
    ray.shutdown()


def stored(root: Path, run_id: str) -> dict[str, pl.DataFrame]:
    return {
        t: read_table(root / "store", t, run_id).drop("run_id", "date").collect().sort("seq")
        for t in TABLES
    }


@pytest.mark.parametrize("crash_after", [40, None], ids=["mid-run", "after-the-last-step"])
def test_a_crashed_run_resumes_with_nothing_lost_or_duplicated(
    ray_local: None, tmp_path: Path, crash_after: int | None
) -> None:
    # mid-run: between two barriers (replayed from the last); after the last step: before
    # the driver flushed the sink (the end's checkpoint holds the rows still to store)
    config = make_config(tmp_path)
    baseline = run_system(config, run_id="unfaulted")
    handles = start_system(config, "crashed")
    drive(handles, max_steps=crash_after)
    # the driver dies: every actor of the run goes with it, nothing is flushed or closed
    for actor in handles.actors():
        ray.kill(actor, no_restart=True)
    time.sleep(1.0)
    with pytest.raises(WiringError, match="--resume crashed"):
        start_system(config, "crashed")  # a rerun without --resume is refused, not a traceback
    resumed = run_system(config, run_id="crashed", resume=True)
    assert resumed.unacked_rows == 0
    assert resumed.summary["agents"] == baseline.summary["agents"]
    assert resumed.summary["fills"] == baseline.summary["fills"] > 0
    assert resumed.summary["orders_by_status"] == baseline.summary["orders_by_status"]
    want, got = stored(tmp_path, "unfaulted"), stored(tmp_path, "crashed")
    for table in TABLES:
        assert got[table]["seq"].n_unique() == got[table].height, f"{table}: duplicates"
        assert got[table].equals(want[table]), f"{table} differs after the resume"


def test_resume_of_an_unknown_run_and_a_bad_run_id_are_one_line_errors(
    ray_local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path)
    with pytest.raises(WiringError, match="no checkpoints"):
        start_system(config, "never-ran", resume=True)
    path = tmp_path / "c.yaml"
    path.write_text("data: {source: sample}\n")
    assert main(["run", "--config", str(path), "--run-id", "../../escape"]) == 2
    assert "run id '../../escape'" in capsys.readouterr().err
