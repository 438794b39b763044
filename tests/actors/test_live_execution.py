"""The live venue actor's start-up after a restart: what its journal makes it wait for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest

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
        self,
        journal: Iterable[SubmitOrder],
        symbols: Iterable[str],
        *,
        sent_before_ns: int,
        capital_quote: object = None,
        fresh: bool = True,
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


def test_a_venue_throttling_the_start_is_tried_again_not_given_up(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a venue unavailable at the first account read ended the live run for good: every
    # later step refused every order with "venue start-up failed", the venue healthy again
    from actors import live_execution
    from actors.codec import decode_messages, encode_messages
    from sapphire.adapters.binance_double import Fault, FaultKind
    from sapphire.kernel.timing import Window
    from sapphire.model.orders import OrderUpdate, VenueAlert
    from tests.exchange.ccxt_env import environment, order

    monkeypatch.setattr(live_execution, "START_RETRY_FIRST_S", 0.0)  # the next step may retry

    async def scenario() -> None:
        async with environment(shared_data) as env:
            # unavailable through every one of the client's own retries, then healthy
            attempts = env.gateway.config.retry.max_attempts
            env.double.inject("GET", "account", Fault(kind=FaultKind.UNAVAILABLE), times=attempts)
            actor = Actor(lambda: _client_of(env), str(tmp_path), ("BTCUSDT",))
            [alert] = decode_messages(await actor.prepare())
            assert isinstance(alert, VenueAlert) and not alert.fatal, alert
            assert "try 1" in alert.message
            bid, _ = env.best()
            window = Window(step=0, start_ns=0, end_ns=1)
            placed = decode_messages(
                await actor.step(
                    0, window, b"", encode_messages([order(1, Side.BUY, bid - 500, 100)])
                )
            )
            accepted = [r for r in placed if isinstance(r, OrderUpdate)]
            assert accepted and accepted[-1].reason is None, placed
            assert len(env.venue.orders) == 1
            await actor.gateway.close()

    asyncio.run(scenario())


def test_a_start_under_a_venue_ban_waits_the_ban_out(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each try built a new client and forgot the ban: a request every 1, 2, 4 ... 60 s
    # into a 418, each one lengthening it
    from actors import live_execution
    from actors.codec import decode_messages, encode_messages
    from sapphire.adapters.binance_double import Fault, FaultKind
    from sapphire.kernel.timing import Window
    from sapphire.model.orders import OrderUpdate, VenueAlert
    from tests.exchange.ccxt_env import environment, order

    monkeypatch.setattr(live_execution, "START_RETRY_FIRST_S", 0.0)

    async def scenario() -> None:
        async with environment(shared_data) as env:
            ban = Fault(kind=FaultKind.RATE_LIMIT, retry_after_s=600)
            env.double.inject("GET", "account", ban, times=100)
            actor = Actor(lambda: _client_of(env), str(tmp_path), ("BTCUSDT",))
            [alert] = decode_messages(await actor.prepare())
            assert isinstance(alert, VenueAlert) and not alert.fatal
            assert "again in 600 s" in alert.message, alert.message
            sent = env.double.count("GET", "account")
            bid, _ = env.best()
            for step in range(3):
                window = Window(step=step, start_ns=step, end_ns=step + 1)
                commands = encode_messages([order(step, Side.BUY, bid - 500, 100)])
                out = decode_messages(await actor.step(step, window, b"", commands))
                assert [r.status for r in out if isinstance(r, OrderUpdate)] == ["rejected"]
            assert env.double.count("GET", "account") == sent  # nothing into the ban

    asyncio.run(scenario())


def _client_of(env: Any) -> Any:
    """A new gateway to the environment's Binance double, as a restarted actor builds one."""
    import random

    from sapphire.adapters.ccxt_credentials import ApiCredentials
    from sapphire.adapters.ccxt_gateway import CcxtExchange
    from tests.exchange.ccxt_env import API_KEY, SECRET

    gw = CcxtExchange(
        env.gateway.config, ApiCredentials(API_KEY, SECRET), sleep=env.sleep, rng=random.Random(1)
    )
    gw.exchange.urls["api"] = env.double.ccxt_urls(gw.exchange.urls["api"])
    gw.exchange.timeout_on_exit = 0
    return gw
