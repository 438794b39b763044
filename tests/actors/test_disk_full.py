"""A full disk mid-run (a real, tiny tmpfs as the store root): ``sapphire run`` stops with a
one-line error and a non-zero exit, claims nothing it did not store, and once space is
freed ``--resume`` completes the run with exactly the rows of a run that had room."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import polars as pl
import pytest

from sapphire.storage.query import read_table
from tests.actors.harness import TABLES
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:  # not root, or no CAP_SYS_ADMIN in this container
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def config(tmp_path: Path, root: Path) -> Path:
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw["data"] = {**raw["data"], "max_events": 40_000}
    raw["storage"] = {**raw["storage"], "root": str(root)}
    raw["ray"] = {"num_cpus": 2}
    path = tmp_path / f"{root.parent.name}-{root.name}.yaml"
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


def sapphire(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "sapphire.cli", *args, "--no-progress"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def stored(root: Path, run_id: str) -> dict[str, pl.DataFrame]:
    return {
        t: read_table(root / "store", t, run_id).drop("run_id", "date").collect().sort("seq")
        for t in TABLES
    }


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
    # the same config with room from the start, in one process (the runners are exact)
    roomy = tmp_path / "roomy"
    baseline = sapphire("backtest", "--config", str(config(tmp_path, roomy)), "--run-id", "df")
    assert baseline.returncode == 0, baseline.stderr[-1500:]
    want, got = stored(roomy, "df"), stored(tiny_fs / "runs", "df")
    assert want["fills"].height > 0
    for table in TABLES:
        assert got[table]["seq"].n_unique() == got[table].height, f"{table}: duplicates"
        assert got[table].equals(want[table]), f"{table} differs after the disk filled"
