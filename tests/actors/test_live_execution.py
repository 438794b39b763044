"""The live venue actor's start-up after a restart: what its journal makes it wait for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from actors.checkpoint import DirectoryCheckpointStore
from actors.live_execution import WAL_KEY, LiveExecutionActor, WalEntry
from sapphire.model.events import Side
from sapphire.model.orders import OrderType, SubmitOrder

# the class Ray wraps: its methods run here without a cluster
Actor: Any = LiveExecutionActor.__ray_metadata__.modified_class


class Gateway:
    def __init__(self) -> None:
        self.sent_before: list[int] = []

    async def connect(self) -> None:
        return None

    async def recover(
        self, journal: Iterable[SubmitOrder], symbols: Iterable[str], *, sent_before_ns: int
    ) -> list[object]:
        self.sent_before.append(sent_before_ns)
        return []


def test_a_restart_waits_out_sends_made_after_the_journal_entry(tmp_path: Path) -> None:
    # the previous incarnation journalled the order an hour ago, then retried its send (a
    # Retry-After, a 5xx) until it died: that retry may still reach the venue, so "the
    # venue has no such order" is no answer before a recvWindow from the restart
    order = SubmitOrder(
        ts_event_ns=1,
        client_order_id="a-1",
        agent_id="a",
        symbol="BTCUSDT",
        side=Side.BUY,
        qty_lots=1,
        order_type=OrderType.LIMIT,
        limit_ticks=600_000,
    )
    hour_ago = time.time_ns() - 3_600 * 10**9
    DirectoryCheckpointStore(tmp_path).save(
        WAL_KEY, msgspec.msgpack.encode([WalEntry(order=order, written_ns=hour_ago)])
    )
    gateway = Gateway()
    restarted = time.time_ns()
    actor = Actor(lambda: gateway, str(tmp_path), ("BTCUSDT",))
    asyncio.run(actor.prepare())
    assert gateway.sent_before and gateway.sent_before[0] >= restarted
    # nothing journalled: nothing to wait for
    fresh = Gateway()
    asyncio.run(Actor(lambda: fresh, str(tmp_path / "empty"), ("BTCUSDT",)).prepare())
    assert fresh.sent_before == [0]
