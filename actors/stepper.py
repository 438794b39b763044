"""Exactly-once steps for restartable actors, checkpointed at barriers.

Every actor advances in numbered steps driven by the coordinator. A step is either plain or a
*barrier*: at a barrier the actor checkpoints ``(k, state, output_k)`` before it answers.
Between barriers nothing is written, so a replay pays for a checkpoint once a second rather
than once a window. What a restart does:
- the checkpoint says k was done -> the stored output is returned (no second side effect);
- the checkpoint says k-1 was done -> state is at k-1, and step k is recomputed, which is
  deterministic for a given input, so the result is the one the lost call would have given;
- the checkpoint is older (a barrier b < k-1) -> the actor raises :class:`StepBehind`, and the
  coordinator rewinds every actor to its own last barrier and replays from there: the same
  inputs give the same outputs, and the sink drops rows it already has by (producer, seq).
An actor keeps its last two barriers, because the coordinator commits a barrier only after
every actor has written it: a coordinator that dies in between still finds the previous one.
A live venue cannot be rewound, so a live run makes every step a barrier (the second case).
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from actors.checkpoint import CheckpointStore

OutputT = TypeVar("OutputT")

_SLOTS = ("", ".prev")  # two checkpoint slots per actor: the newest barrier and the one before


class StepOutOfOrder(RuntimeError):
    """A step arrived that is neither the next one nor a retry of the last."""


class StepBehind(StepOutOfOrder):
    """A restarted actor is at an older barrier than the step asked for: the coordinator must
    rewind every actor to its committed barrier and replay (picklable: it crosses Ray)."""

    def __init__(self, key: str, last_step: int = -1, asked: int = -1) -> None:
        super().__init__(f"{key}: restored at step {last_step}, asked for step {asked}")
        self.key = key
        self.last_step = last_step
        self.asked = asked

    def __reduce__(self) -> tuple[Any, ...]:
        return (StepBehind, (self.key, self.last_step, self.asked))


class Stepper(Generic[OutputT]):
    def __init__(
        self,
        store: CheckpointStore,
        key: str,
        snapshot: Callable[[], bytes],
        restore: Callable[[bytes], None],
    ) -> None:
        self._store = store
        self._key = key
        self._snapshot = snapshot
        self._restore = restore
        self.last_step = -1
        self._last_output: Any = None
        self.restored = False
        self.checkpoint_s = 0.0
        self.checkpoint_bytes = 0
        # the step each slot holds (None: empty), so a new barrier never overwrites the newest
        self._slots: dict[str, int | None] = {}
        # a barrier step done whose checkpoint failed (a full disk, a store gone): its retry
        # writes it again before answering, never returns as if it were saved
        self._unsaved: int | None = None
        newest: tuple[int, bytes, Any] | None = None
        for slot in _SLOTS:
            data = store.load(key + slot)
            if data is None:
                self._slots[slot] = None
                continue
            step, state, output = pickle.loads(data)
            self._slots[slot] = step
            if newest is None or step > newest[0]:
                newest = (step, state, output)
        if newest is not None:
            step, state, output = newest
            restore(state)
            self.last_step = step
            self._last_output = output
            self.restored = True
        else:
            # the state before step 0, as barrier -1: a coordinator that dies before its first
            # commit rewinds everyone to here
            self._save(-1, None)

    def _save(self, step: int, output: Any) -> None:
        started = time.perf_counter()
        data = pickle.dumps((step, self._snapshot(), output), protocol=pickle.HIGHEST_PROTOCOL)
        # the slot that does not hold the newest barrier (the newest must survive a crash here)
        newest = max((s for s in self._slots.values() if s is not None), default=None)
        slot = next((k for k, s in self._slots.items() if s is None or s != newest), _SLOTS[0])
        self._store.save(self._key + slot, data)
        self._slots[slot] = step
        self.checkpoint_s += time.perf_counter() - started
        self.checkpoint_bytes = len(data)

    def _check(self, step: int) -> bool:
        """True when ``step`` is a retry of the last one (its output is returned as it was,
        once its checkpoint is written where the first try's write failed)."""
        if step == self.last_step:
            if self._unsaved == step:
                self._save(step, self._last_output)
                self._unsaved = None
            return True
        if step != self.last_step + 1:
            raise StepBehind(self._key, self.last_step, step)
        return False

    def _done(self, step: int, output: Any, barrier: bool) -> None:
        # the step is done (its state changed once; computing it again would apply it twice)
        # whether or not its checkpoint can be written: a failed write raises to the caller
        # and is written again by the retry (``_check``)
        self.last_step = step
        self._last_output = output
        if barrier:
            self._unsaved = step
            self._save(step, output)
            self._unsaved = None

    def run(self, step: int, compute: Callable[[], OutputT], *, barrier: bool = True) -> OutputT:
        if self._check(step):
            result: OutputT = self._last_output
            return result
        output = compute()
        self._done(step, output, barrier)
        return output

    def commit(self) -> None:
        """Checkpoint the last step now (a run's final step, which no later barrier follows)."""
        if self.last_barrier != self.last_step:
            self._save(self.last_step, self._last_output)

    @property
    def last_output(self) -> Any:
        """What the last step returned (None before the first)."""
        return self._last_output

    @property
    def last_barrier(self) -> int:
        """The newest checkpointed step."""
        return max((s for s in self._slots.values() if s is not None), default=-1)

    def rewind(self, step: int) -> None:
        """Back to barrier ``step`` (the coordinator's last commit), from its checkpoint. The
        state is reloaded even at that step: a failed step may have changed it half way."""
        for slot, held in self._slots.items():
            if held == step:
                data = self._store.load(self._key + slot)
                if data is None:
                    break
                _, state, output = pickle.loads(data)
                self._restore(state)
                self.last_step = step
                self._last_output = output
                self._unsaved = None
                # a barrier past ``step`` (written, never committed) is abandoned: its slot
                # takes the next barrier, so ``step`` stays until a newer one is written
                for other, at in self._slots.items():
                    if at is not None and at > step:
                        self._slots[other] = None
                return
        raise StepOutOfOrder(f"{self._key}: no checkpoint of barrier {step} to rewind to")


class AsyncStepper(Stepper[OutputT]):
    """The same contract for async actors; concurrent calls for one step share one result.

    An async actor takes a retried call while the first is still awaiting (a live venue's
    answer): computed twice, the first call's output (fills the venue sent once) went to a
    caller nobody waited for. A call for the step in flight awaits that computation."""

    _in_flight: tuple[int, asyncio.Future[Any]] | None = None

    async def run_async(
        self, step: int, compute: Callable[[], Any], *, barrier: bool = True
    ) -> OutputT:
        running = self._in_flight
        if running is not None and running[0] == step:
            shared: OutputT = await asyncio.shield(running[1])
            return shared
        if self._check(step):
            result: OutputT = self._last_output
            return result
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._in_flight = (step, future)
        try:
            output: OutputT = await compute()
            self._done(step, output, barrier)
        except BaseException as exc:
            future.set_exception(exc)  # the calls sharing it fail too, and retry later
            future.exception()  # retrieved: no "never retrieved" warning when none shared it
            raise
        finally:
            self._in_flight = None
        future.set_result(output)
        return output
