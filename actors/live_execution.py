"""LiveExecutionActor: the execution actor for a real venue through ccxt.

Same step contract as :class:`actors.execution.ExecutionActor`, so the coordinator does not
know which one it drives. The venue is the source of truth: nothing of the gateway is
checkpointed. A restarted actor reconnects; a retried step re-sends the same client order
ids, which the gateway resolves against the venue instead of placing them twice; and
``reconcile`` (every step) reports fills and final states of resting orders, de-duplicated
downstream by fill id in the coordinator's journal.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from actors.checkpoint import make_store
from actors.codec import decode_messages, encode_messages
from actors.stepper import AsyncStepper
from sapphire.exchange.gateway import AsyncExecutionGateway, venue_error_report
from sapphire.kernel.timing import Window
from sapphire.model.orders import CancelOrder, SubmitOrder

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class LiveExecutionActor:
    def __init__(self, build_gateway: Any, checkpoint_location: str) -> None:
        self._build_gateway = build_gateway
        self.gateway: AsyncExecutionGateway | None = None
        self.errors = 0
        self.orders_sent = 0
        self._stepper: AsyncStepper[bytes] = AsyncStepper(
            make_store(checkpoint_location), "execution", lambda: b"", lambda _: None
        )

    async def _connected(self) -> AsyncExecutionGateway:
        if self.gateway is None:
            gateway = self._build_gateway()
            await gateway.connect()
            self.gateway = gateway
        return self.gateway

    async def step(self, step: int, window: Window, events: bytes, commands: bytes) -> bytes:
        # a window is what arrived; reports are stamped when they came back (live time)
        return await self._stepper.run_async(
            step, lambda: self._compute(commands, window.end_ns - 1)
        )

    async def _compute(self, commands_data: bytes, now_ns: int) -> bytes:
        gateway = await self._connected()
        reports: list[Any] = []
        for command in decode_messages(commands_data):
            try:
                if isinstance(command, SubmitOrder):
                    self.orders_sent += 1
                    reports.extend(await gateway.submit(command))
                elif isinstance(command, CancelOrder):
                    reports.extend(await gateway.cancel(command))
            except Exception as exc:  # the venue's failure becomes a reject, never a crash
                self.errors += 1
                log.warning("venue error on %s: %s", command.client_order_id, exc)
                if isinstance(command, SubmitOrder):
                    reports.append(venue_error_report(command, exc, now_ns))
        try:
            reports.extend(await gateway.reconcile())
        except Exception as exc:
            self.errors += 1
            log.warning("reconcile failed, retried next step: %s", exc)
        return encode_messages(reports)

    async def stats(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "orders_sent": self.orders_sent,
            "last_step": self._stepper.last_step,
            "restored": self._stepper.restored,
        }

    async def close(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()
