"""Exactly-once steps with barrier checkpoints (``actors.stepper``), below the actors: a
failed checkpoint write and a rewind past abandoned barriers."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from actors.checkpoint import DirectoryCheckpointStore
from actors.stepper import StepOutOfOrder, Stepper


class Counter:
    """An actor's state: how many times each step was applied."""

    def __init__(self) -> None:
        self.applied: list[int] = []

    def snapshot(self) -> bytes:
        return pickle.dumps(self.applied)

    def restore(self, data: bytes) -> None:
        self.applied = pickle.loads(data)


class FlakyStore(DirectoryCheckpointStore):
    """A store whose next ``fail`` writes raise (a full disk)."""

    fail = 0

    def save(self, key: str, data: bytes, *, durable: bool = False) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError(28, "No space left on device")
        super().save(key, data, durable=durable)


def _stepper(store: DirectoryCheckpointStore, state: Counter) -> Stepper[str]:
    return Stepper(store, "leaf", state.snapshot, state.restore)


def _step(stepper: Stepper[str], state: Counter, k: int, barrier: bool) -> str:
    def compute() -> str:
        state.applied.append(k)
        return f"out-{k}"

    return stepper.run(k, compute, barrier=barrier)


def test_a_barrier_whose_checkpoint_failed_is_written_by_its_retry(tmp_path: Path) -> None:
    store, state = FlakyStore(tmp_path), Counter()
    stepper = _stepper(store, state)
    _step(stepper, state, 0, barrier=True)
    store.fail = 1
    with pytest.raises(OSError):
        _step(stepper, state, 1, barrier=True)
    # the retry (the coordinator's fallback call) neither applies the step again nor answers
    # as if the barrier were written: it writes it, then answers
    store.fail = 1
    with pytest.raises(OSError):
        _step(stepper, state, 1, barrier=True)
    assert _step(stepper, state, 1, barrier=True) == "out-1"
    assert state.applied == [0, 1]
    assert stepper.last_barrier == 1
    # a restarted actor finds barrier 1
    again = Counter()
    assert _stepper(DirectoryCheckpointStore(tmp_path), again).last_step == 1
    assert again.applied == [0, 1]


def test_after_a_rewind_the_committed_barrier_survives_the_next_one(tmp_path: Path) -> None:
    # barriers 0, 3, 5 written; the coordinator committed 3 and died before committing 5:
    # everyone back to 3. The next barrier (4) must not overwrite 3, the only committed one
    store, state = DirectoryCheckpointStore(tmp_path), Counter()
    stepper = _stepper(store, state)
    for k in range(6):
        _step(stepper, state, k, barrier=k in (0, 3, 5))
    stepper.rewind(3)
    assert state.applied == [0, 1, 2, 3]
    _step(stepper, state, 4, barrier=True)
    stepper.rewind(3)  # the coordinator died again before committing 4
    assert state.applied == [0, 1, 2, 3]
    # and a restarted actor never restores the abandoned barrier 5
    _step(stepper, state, 4, barrier=True)
    restarted = Counter()
    assert _stepper(DirectoryCheckpointStore(tmp_path), restarted).last_step == 4
    with pytest.raises(StepOutOfOrder):
        stepper.rewind(5)
