"""Exactly-once steps for restartable actors.

Every actor advances in numbered steps driven by the coordinator. After computing step k it
checkpoints ``(k, state, output_k)`` atomically. When Ray restarts it and retries the call:
- the checkpoint says k was done -> the stored output is returned (no second side effect);
- the checkpoint says k-1 was done -> state is at k-1, and step k is recomputed, which is
  deterministic for a given input, so the result is the one the lost call would have given.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from actors.checkpoint import CheckpointStore

OutputT = TypeVar("OutputT")


class StepOutOfOrder(RuntimeError):
    """A step arrived that is neither the next one nor a retry of the last."""


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
        self.last_step = -1
        self._last_output: Any = None
        self.restored = False
        self.checkpoint_s = 0.0
        self.checkpoint_bytes = 0
        data = store.load(key)
        if data is not None:
            step, state, output = pickle.loads(data)
            restore(state)
            self.last_step = step
            self._last_output = output
            self.restored = True

    def _save(self, step: int, output: Any) -> None:
        started = time.perf_counter()
        data = pickle.dumps((step, self._snapshot(), output), protocol=pickle.HIGHEST_PROTOCOL)
        self._store.save(self._key, data)
        self.checkpoint_s += time.perf_counter() - started
        self.checkpoint_bytes = len(data)

    def run(self, step: int, compute: Callable[[], OutputT]) -> OutputT:
        if step == self.last_step:
            result: OutputT = self._last_output
            return result
        if step != self.last_step + 1:
            raise StepOutOfOrder(f"{self._key}: asked for step {step} after {self.last_step}")
        output = compute()
        self._save(step, output)
        self.last_step = step
        self._last_output = output
        return output


class AsyncStepper(Stepper[OutputT]):
    """The same contract for async actors; concurrent calls for one step share one result."""

    async def run_async(self, step: int, compute: Callable[[], Any]) -> OutputT:
        if step == self.last_step:
            result: OutputT = self._last_output
            return result
        if step != self.last_step + 1:
            raise StepOutOfOrder(f"{self._key}: asked for step {step} after {self.last_step}")
        output: OutputT = await compute()
        self._save(step, output)
        self.last_step = step
        self._last_output = output
        return output
