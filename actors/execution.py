"""ExecutionActor: owns a gateway. Paper by default (stepped with the market), ccxt live."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import ray

from actors.checkpoint import make_store
from actors.codec import decode_events, decode_messages, encode_messages
from actors.stepper import Stepper
from sapphire.exchange.gateway import ExecutionGateway, apply_command
from sapphire.model.orders import (
    SubmitOrder,
)

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class ExecutionActor:
    def __init__(self, build_gateway: Any, checkpoint_location: str) -> None:
        self.gateway: ExecutionGateway = build_gateway()
        self.errors = 0
        self.orders_sent = 0
        self._stepper: Stepper[bytes] = Stepper(
            make_store(checkpoint_location), "execution", self._snapshot, self._restore
        )

    def _snapshot(self) -> bytes:
        return pickle.dumps((self.gateway, self.errors, self.orders_sent))

    def _restore(self, data: bytes) -> None:
        self.gateway, self.errors, self.orders_sent = pickle.loads(data)

    def step(self, step: int, events: bytes, commands: bytes, now_ns: int) -> bytes:
        return self._stepper.run(step, lambda: self._compute(events, commands, now_ns))

    def _compute(self, events_data: bytes, commands_data: bytes, now_ns: int) -> bytes:
        reports: list[Any] = []
        for event in decode_events(events_data):
            self.gateway.on_market_event(event)
        # Orders decided on this batch reach the venue after it: the batch is the
        # system's processing delay, on top of the gateway's own entry latency.
        for command in decode_messages(commands_data):
            if isinstance(command, SubmitOrder):
                self.orders_sent += 1
            reject = apply_command(self.gateway, command, now_ns)
            if reject is not None:
                self.errors += 1
                reports.append(reject)
        reports.extend(self.gateway.poll(now_ns))
        return encode_messages(reports)

    def exchange_record(self) -> bytes:
        """The venue's own record (paper exchange), for tests and the run summary."""
        return pickle.dumps(self.gateway)

    def stats(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "orders_sent": self.orders_sent,
            "last_step": self._stepper.last_step,
            "restored": self._stepper.restored,
        }
