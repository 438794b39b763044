"""ExecutionActor: the kernel's venue stage (the paper exchange, or any synchronous gateway)
in its own actor, checkpointed per step."""

from __future__ import annotations

import logging
import pickle
import threading
import uuid
from typing import Any

import ray

from actors.checkpoint import make_store
from actors.codec import decode_events, decode_messages, encode_messages
from actors.fanout import bytes_only_channels
from actors.sockets import RoundLeaf, RoundServer
from actors.stepper import Stepper
from sapphire.kernel.timing import Window
from sapphire.kernel.venue import VenueStage

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class ExecutionActor(RoundLeaf):
    def __init__(
        self, build_gateway: Any, checkpoint_location: str, key: str = "execution"
    ) -> None:
        """``key``: this venue's name in the run's checkpoints (one per shard)."""
        bytes_only_channels()  # a leaf of the coordinator's compiled graph
        self.stage = VenueStage(build_gateway())
        self._incarnation = uuid.uuid4().hex  # this process: a new one after a restart
        self._stepper: Stepper[bytes] = Stepper(
            make_store(checkpoint_location), key, self._snapshot, self._restore
        )
        # a round over sockets (``actors.sockets``) steps this actor from its own thread:
        # the lock keeps it and Ray's calls (a fallback step, a rewind) one at a time
        self._lock = threading.Lock()
        self._round: RoundServer | None = None

    def _snapshot(self) -> bytes:
        return pickle.dumps((self.stage.gateway, self.stage.stats))

    def _restore(self, data: bytes) -> None:
        self.stage.gateway, self.stage.stats = pickle.loads(data)

    def step(
        self, step: int, window: Window, events: bytes, commands: bytes, barrier: bool = True
    ) -> bytes:
        with self._lock:
            return self._step(step, window, events, commands, barrier)

    def _step(
        self, step: int, window: Window, events: bytes, commands: bytes, barrier: bool
    ) -> bytes:
        return self._stepper.run(
            step,
            lambda: encode_messages(
                self.stage.step(window, decode_events(events), decode_messages(commands))
            ),
            barrier=barrier,
        )

    def exchange_record(self) -> bytes:
        """The venue's own record (paper exchange), for tests and the run summary."""
        return pickle.dumps(self.stage.gateway)

    def stats(self) -> dict[str, Any]:
        return {
            "incarnation": self._incarnation,
            "checkpoint_s": self._stepper.checkpoint_s,
            "errors": self.stage.stats.errors,
            "orders_sent": self.stage.stats.orders_sent,
            "books": self.stage.book_health(),
            "last_step": self._stepper.last_step,
            "restored": self._stepper.restored,
        }
