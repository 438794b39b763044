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


def test_a_retry_of_a_step_in_flight_shares_its_result(tmp_path: Path) -> None:
    # an async actor (the live venue) takes a retried call while the first is still at the
    # venue: both computed the step, and the first call's reports (fills the venue had just
    # sent, which the gateway never reports again) went to a caller nobody was waiting for
    import asyncio

    from actors.stepper import AsyncStepper

    state = Counter()
    stepper: AsyncStepper[str] = AsyncStepper(
        DirectoryCheckpointStore(tmp_path), "leaf", state.snapshot, state.restore
    )
    release = asyncio.Event()

    async def compute() -> str:
        state.applied.append(len(state.applied))
        await release.wait()  # at the venue
        return f"reports-{len(state.applied)}"

    async def main() -> list[str]:
        first = asyncio.ensure_future(stepper.run_async(0, compute))
        await asyncio.sleep(0)
        retry = asyncio.ensure_future(stepper.run_async(0, compute))
        await asyncio.sleep(0)
        release.set()
        return list(await asyncio.gather(first, retry))

    assert asyncio.run(main()) == ["reports-1", "reports-1"]
    assert state.applied == [0] and stepper.last_step == 0

    async def failing() -> str:
        raise RuntimeError("venue down")

    async def both_fail() -> list[object]:
        calls = [stepper.run_async(1, failing), stepper.run_async(1, failing)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    assert [type(r) for r in asyncio.run(both_fail())] == [RuntimeError, RuntimeError]
    assert stepper.last_step == 0  # not done: the next retry computes it
