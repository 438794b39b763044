"""Shared fixtures: where the real recorded data lives, and the instruments of the recordings."""

from __future__ import annotations

import atexit
import collections
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ray_local import drop_released, shutdown_local

REPO_ROOT = Path(__file__).resolve().parents[1]

# Converted replays (data.cache) of this test session go to a directory of its own, not the
# user's ~/.cache: every run in the session after the first of a file reads it converted.
if "SAPPHIRE_CACHE_DIR" not in os.environ:  # xdist workers inherit the controller's
    os.environ["SAPPHIRE_CACHE_DIR"] = tempfile.mkdtemp(prefix="sapphire-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SAPPHIRE_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with the most slow tests first (each file's tests in their own order).

    Why: ``--dist loadfile --no-loadscope-reorder`` (``./dev test``) hands files to the two
    workers in collection order, the next one to whichever is free: the longest first leaves
    the short ones to even out the end. xdist's own order (most tests first) left the Ray,
    model and ops files of a few minute-long tests for last, one worker running them alone."""
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: a file's tests stay in order


@pytest.fixture(autouse=True)
def _no_released_ray() -> None:
    """A test runs with no Ray cluster but its own module's: the one another module released
    (``tests.ray_local``) is stopped first. Module fixtures set up before this one, so a module
    asking for the released cluster's options has taken it over by now."""
    drop_released()


def pytest_sessionfinish() -> None:
    shutdown_local()  # this process's cluster, released by the last module that held it


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repo (CI copies shared/ there); overridable by env."""
    override = os.environ.get("SAPPHIRE_SHARED_DATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared recorded data not found at {path}")
    return path


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    pytest.importorskip("bqemulator")
    from sapphire.adapters.bq_emulator import start_emulator

    log = tmp_path_factory.mktemp("bqemu") / "emulator.log"
    with start_emulator(log_path=log) as emu:
        yield emu


@pytest.fixture
def tiny_fs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A real filesystem that fills up: a tmpfs of ``@pytest.mark.tiny_fs_size("600k")``
    (default 1500k) bytes, mounted for the test (needs root, as on the project's machines)."""
    marker = request.node.get_closest_marker("tiny_fs_size")
    size = marker.args[0] if marker else "1500k"
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:  # not root, or no CAP_SYS_ADMIN in this container
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
