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
from tests.ray_local import init_local, release_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=4, include_dashboard=False, namespace="sapphire-resume")
    yield
    release_local()


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


def test_ctrl_c_is_one_line_naming_the_resume_and_exits_130(tmp_path: Path) -> None:
    """It was a KeyboardInterrupt traceback through Ray's get, with no word of the resume."""
    import signal
    import subprocess
    import sys

    import msgspec

    raw = msgspec.to_builtins(make_config(tmp_path))
    raw["data"]["speed"] = 1.0  # the recorded pace: the run is still going when interrupted
    config = tmp_path / "paced.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    command = [sys.executable, "-m", "sapphire.cli", "run", "--config", str(config)]
    proc = subprocess.Popen(
        [*command, "--run-id", "ctrl-c", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the console's URL: the actors are up and stepping
            if line.startswith("console:"):
                break
        time.sleep(3.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: run ctrl-c" in err and "--resume ctrl-c" in err
    assert "Traceback" not in err
