"""A checkpoint_dir shared by store roots: one run id on two roots never shares its
checkpoints (the second start is refused, a resume on the other root too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.checkpoint import DirectoryCheckpointStore, RedisCheckpointStore
from actors.system import check_run_start, checkpoint_location, release_claim
from sapphire.config.system import SystemConfig, parse_config
from sapphire.kernel.builders import WiringError


def _config(root: Path, checkpoints: str) -> SystemConfig:
    return parse_config({"storage": {"root": str(root)}, "checkpoint_dir": checkpoints})


def test_one_run_id_on_two_roots_never_shares_a_checkpoint_dir(tmp_path: Path) -> None:
    shared = str(tmp_path / "ckpt")
    first, second, third = (_config(tmp_path / n, shared) for n in ("k1", "k2", "k3"))
    release_claim(check_run_start(first, "team", resume=False))
    with pytest.raises(WiringError, match=r"the checkpoints in .* are those of the run on"):
        check_run_start(second, "team", resume=False)
    # the first run checkpointed; a --resume of its id on a root where it never ran stored
    # the first run's results under the third's config and exited 0
    location = checkpoint_location(first, "team")
    DirectoryCheckpointStore(location).save("coordinator", b"state")
    with pytest.raises(WiringError, match="resume it with that root"):
        check_run_start(third, "team", resume=True)
    release_claim(check_run_start(first, "team", resume=True))  # its own root resumes


def test_the_owner_is_made_once_in_redis_too() -> None:
    import uuid

    prefix = f"sapphire-test:{uuid.uuid4().hex[:8]}"
    store = RedisCheckpointStore("redis://127.0.0.1:6379/0", prefix)
    try:
        assert store.create("owner", b"/a") is None
        assert store.create("owner", b"/b") == b"/a"
    finally:
        store._client.delete(f"{prefix}:owner")
