"""Whole-process faults of ``sapphire run``, as a user meets them: the driver SIGKILLed
mid-run, and a full disk (a real, tiny tmpfs as the store root). The run never claims what it
did not store, and ``--resume`` completes it with exactly the rows of an unfaulted run (the
same config through ``sapphire backtest``: the runners are exact, tests/kernel)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import polars as pl
import pytest

from sapphire.storage.query import read_table
from tests.actors.harness import TABLES
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def config(tmp_path: Path, root: Path, max_events: int = 40_000) -> Path:
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw["data"] = {**raw["data"], "max_events": max_events}
    raw["storage"] = {**raw["storage"], "root": str(root)}
    # barriers every 50 ms: the SIGKILL lands between two of them, well inside the run
    raw["ray"] = {"num_cpus": 2, "checkpoint_interval_s": 0.05}
    path = tmp_path / f"{root.parent.name}-{root.name}.yaml"
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


def sapphire(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "sapphire.cli", *args, "--no-progress"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def assert_equals_unfaulted(
    tmp_path: Path, root: Path, run_id: str, max_events: int = 40_000
) -> None:
    roomy = tmp_path / "unfaulted"
    path = config(tmp_path, roomy, max_events)
    baseline = sapphire("backtest", "--config", str(path), "--run-id", run_id)
    assert baseline.returncode == 0, baseline.stderr[-1500:]
    want, got = stored(roomy, run_id), stored(root, run_id)
    assert want["fills"].height > 0
    for table in TABLES:
        assert got[table]["seq"].n_unique() == got[table].height, f"{table}: duplicates"
        assert got[table].equals(want[table]), f"{table} differs from the unfaulted run"


def checkpointed_step(path: Path) -> int:
    """The newest barrier the coordinator checkpointed (it keeps two: actors.stepper)."""
    newest = -1
    for slot in (path, path.with_name("coordinator.prev.ckpt")):
        try:
            step, _, _ = pickle.loads(slot.read_bytes())
        except (FileNotFoundError, EOFError, pickle.UnpicklingError):
            continue
        newest = max(newest, int(step))
    return newest


def test_a_sigkilled_driver_resumes_to_exactly_the_unfaulted_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    path = config(tmp_path, root, max_events=20_000)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "sapphire.cli", "run", "--config", str(path)]
    # its own session: the SIGKILL reaches the driver and every process it started
    proc = subprocess.Popen(
        [*cmd, "--run-id", "sk", "--no-progress"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = root / "sk" / "checkpoints" / "coordinator.ckpt"
    deadline = time.monotonic() + 300
    try:
        while checkpointed_step(ckpt) < 150 and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never reached step 150"
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    killed_at = checkpointed_step(ckpt)
    again = sapphire("run", "--config", str(path), "--run-id", "sk")
    assert again.returncode == 2 and "--resume sk" in again.stderr  # never silently reused
    resumed = sapphire("run", "--config", str(path), "--resume", "sk")
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert checkpointed_step(ckpt) > killed_at
    assert_equals_unfaulted(tmp_path, root, "sk", max_events=20_000)


def stored(root: Path, run_id: str) -> dict[str, pl.DataFrame]:
    return {
        t: read_table(root / "store", t, run_id).drop("run_id", "date").collect().sort("seq")
        for t in TABLES
    }


# a whole run stores ~1.1 MB (checkpoints ~0.56 MB, Parquet ~0.5 MB): the disk fills mid-run
@pytest.mark.tiny_fs_size("800k")
def test_a_full_disk_fails_loudly_and_resume_completes_the_run_exactly(
    tmp_path: Path, tiny_fs: Path
) -> None:
    full = sapphire("run", "--config", str(config(tmp_path, tiny_fs / "runs")), "--run-id", "df")
    assert full.returncode == 1, (full.stdout[-1500:], full.stderr[-1500:])
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], full.stderr[-1500:]
    assert "--resume df" in errors[0]
    assert "Traceback" not in full.stderr
    assert "rows stored" not in full.stdout  # no summary of a run that did not finish
    # room again: the run continues from its last checkpoint to the same end
    subprocess.run(["mount", "-o", "remount,size=200m", str(tiny_fs)], check=True)
    resumed = sapphire("run", "--config", str(config(tmp_path, tiny_fs / "runs")), "--resume", "df")
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert_equals_unfaulted(tmp_path, tiny_fs / "runs", "df")
