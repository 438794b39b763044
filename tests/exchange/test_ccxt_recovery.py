"""Start-up reconciliation of a live gateway, with real ccxt against the Binance double: a
restarted gateway of the same run books what it missed and adopts only its own orders; a
new run never takes over another run's orders; a refused key fails loudly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt_async
import msgspec
import pytest

from sapphire.adapters.binance_double import Fault, FaultKind
from sapphire.adapters.ccxt_credentials import ApiCredentials
from sapphire.adapters.ccxt_gateway import CcxtExchange
from sapphire.exchange.gateway import ExecutionReport
from sapphire.exchange.order_ids import VenueOrderIds
from sapphire.model import OrderFilled, OrderStatus, OrderUpdate, Side
from sapphire.model.orders import CancelOrder, VenueAlert
from tests.exchange.ccxt_env import API_KEY, SECRET, Env, environment, order, trade_fill_id

SYMBOL = "BTCUSDT"


@asynccontextmanager
async def gateway(
    env: Env,
    run_id: str,
    *,
    unknown_orders: str = "halt",
    api_key: str = API_KEY,
    start_balances: str = "warn",
) -> AsyncIterator[CcxtExchange]:
    """Another process's gateway on the same venue (same settings as ``env.gateway``)."""
    config = msgspec.structs.replace(
        env.gateway.config, unknown_orders=unknown_orders, start_balances=start_balances
    )
    gw = CcxtExchange(
        config,
        ApiCredentials(api_key, SECRET),
        sleep=env.sleep,
        rng=random.Random(3),
        order_ids=VenueOrderIds(run_id),
    )
    gw.exchange.urls["api"] = env.double.ccxt_urls(gw.exchange.urls["api"])
    gw.exchange.timeout_on_exit = 0
    try:
        await gw.connect()
        yield gw
    finally:
        await gw.close()


def run(data: Path, scenario: Callable[[Env], Awaitable[None]]) -> None:
    async def main() -> None:
        async with environment(data) as env:
            await scenario(env)

    asyncio.run(main())


def split(out: Any) -> tuple[list[ExecutionReport], VenueAlert]:
    alerts = [r for r in out if isinstance(r, VenueAlert)]
    assert len(alerts) == 1, out
    return [r for r in out if not isinstance(r, VenueAlert)], alerts[0]


def venue_fill_ids(env: Env, venue_cid: str) -> set[str]:
    placed = env.venue.orders[venue_cid]
    return {trade_fill_id(t) for t in env.venue.trades if t["orderId"] == placed.order_id}


def test_venue_ids_are_run_scoped_and_fit_the_venue() -> None:
    a, b = VenueOrderIds("run-a"), VenueOrderIds("run-b")
    assert a.venue_id("mm-1") != b.venue_id("mm-1")
    assert a.venue_id("mm-1") == VenueOrderIds("run-a").venue_id("mm-1")  # a restart: same id
    long_id = "avellaneda_stoikov_with_a_very_long_name-123456789"
    for ids in (a, b, VenueOrderIds("x", max_len=20)):
        vid = ids.venue_id(long_id)
        assert len(vid) <= ids.max_len and ids.is_ours(vid)
        assert vid != ids.venue_id(long_id + "0")
    assert not b.is_ours(a.venue_id("mm-1"))


def test_a_restarted_gateway_books_the_fills_it_missed_and_cancels_for_real(
    shared_data: Path,
) -> None:
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        first = order(1, Side.BUY, bid, 2000)  # at the bid: the market trades into it
        far = order(2, Side.BUY, bid - 900, 100)  # rests untouched
        async with gateway(env, "run-a") as gw:
            _, alert = split(await gw.recover([], [SYMBOL]))
            assert alert.counts["unknown_orders"] == 0 and not alert.halt
            seen = [*await gw.submit(first), *await gw.submit(far)]
            vcid = gw.venue_client_id("agent-1")
        # the process died; the venue trades on without it
        env.feed_until(lambda: bool(venue_fill_ids(env, vcid)))
        missed = venue_fill_ids(env, vcid)
        assert missed, "the recording must trade into the resting bid"
        async with gateway(env, "run-a") as gw:
            reports, alert = split(await gw.recover([first, far], [SYMBOL]))
            fills = {r.fill_id for r in reports if isinstance(r, OrderFilled)}
            assert fills == missed - {r.fill_id for r in seen if isinstance(r, OrderFilled)}
            assert alert.counts["fills_booked"] == len(fills)
            assert alert.counts["unknown_orders"] == 0 and not alert.halt
            # a cancel after the restart is the venue's cancel, never a "rejected" guess
            done = await gw.cancel(
                CancelOrder(ts_event_ns=3, client_order_id="agent-2", symbol=SYMBOL)
            )
            assert [r.status for r in done if isinstance(r, OrderUpdate)] == [OrderStatus.CANCELED]
            assert env.venue.final_status(gw.venue_client_id("agent-2")) is OrderStatus.CANCELED
            # an id no journal knows: unknown, nothing final is reported for it
            assert (
                await gw.cancel(
                    CancelOrder(ts_event_ns=4, client_order_id="agent-99", symbol=SYMBOL)
                )
                == []
            )
            assert gw.unknown_cancels == 1
        assert env.venue.duplicate_submits == 0

    run(shared_data, scenario)


@pytest.mark.parametrize("policy", ["halt", "cancel", "cancel_all", "ignore"])
def test_a_new_run_never_adopts_another_runs_orders(shared_data: Path, policy: str) -> None:
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        async with gateway(env, "crashed") as old:
            await old.recover([], [SYMBOL])
            await old.submit(order(1, Side.BUY, bid - 700, 100))
            orphan = old.venue_client_id("agent-1")
            # an order a person (or another tool) placed by hand on the same account
            inst = old.instruments[SYMBOL]
            await old.exchange.create_order(
                old._symbols[SYMBOL],
                "limit",
                "buy",
                float(inst.lots_to_qty(100)),
                float(inst.ticks_to_price(bid - 900)),
                {"newClientOrderId": "by-hand-1"},
            )
        async with gateway(env, "fresh", unknown_orders=policy) as gw:
            if policy.startswith("cancel"):  # a cancel meets a rate limit first: retried
                env.double.inject("DELETE", "order", Fault(kind=FaultKind.RATE_LIMIT))
            reports, alert = split(await gw.recover([], [SYMBOL]))
            assert reports == []  # nothing of the old run is booked as ours
            assert alert.counts["unknown_orders"] == 2
            assert alert.counts["other_sapphire_runs"] == 1
            assert alert.halt is (policy == "halt")
            # `cancel` never cancels another Sapphire run's order (that run may be alive,
            # trading the same account); `cancel_all` does; both cancel the one by hand
            expected = OrderStatus.CANCELED if policy == "cancel_all" else OrderStatus.ACCEPTED
            assert env.venue.final_status(orphan) is expected
            by_hand = OrderStatus.CANCELED if policy.startswith("cancel") else OrderStatus.ACCEPTED
            assert env.venue.final_status("by-hand-1") is by_hand
            assert alert.counts["unknown_cancelled"] == {"cancel": 1, "cancel_all": 2}.get(
                policy, 0
            )
            assert alert.counts["other_runs_left_open"] == (policy == "cancel")
            # the same internal id is a new order of this run, placed for real
            placed = await gw.submit(order(1, Side.BUY, bid - 800, 100))
            assert [r.status for r in placed if isinstance(r, OrderUpdate)] == [
                OrderStatus.ACCEPTED
            ]
            assert gw.venue_client_id("agent-1") in env.venue.orders
        assert env.venue.duplicate_submits == 0

    run(shared_data, scenario)


def test_a_venue_order_that_differs_from_its_intent_is_not_adopted(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        async with gateway(env, "run-a") as gw:
            await gw.recover([], [SYMBOL])
            await gw.submit(order(1, Side.BUY, bid - 700, 100))
        # the journal says something else was sent under that id (a bug, or tampering)
        claimed = order(1, Side.BUY, bid - 700, 300)
        async with gateway(env, "run-a") as gw:
            reports, alert = split(await gw.recover([claimed], [SYMBOL]))
            assert alert.counts["mismatched"] == 1 and alert.counts["adopted"] == 0
            assert alert.halt  # an order at the venue that is not ours as sent
            assert not [r for r in reports if isinstance(r, OrderFilled)]

    run(shared_data, scenario)


@pytest.mark.parametrize("policy", ["warn", "halt"])
def test_start_balances_that_cannot_fund_the_run_are_reported(
    shared_data: Path, policy: str
) -> None:
    # the account (100,000 USDT free, 1 BTC) against a run of 1,000,000 USDT starting flat:
    # the balance was read only to count its assets, and the run traded as if funded and flat
    async def scenario(env: Env) -> None:
        async with gateway(env, "run-a", start_balances=policy) as gw:
            _, alert = split(await gw.recover([], [SYMBOL], capital_quote=Decimal("1000000")))
            assert alert.counts["capital_short"] == 1 and alert.counts["untracked_holdings"] == 1
            assert "free USDT 100000" in alert.message and "capital_quote 1000000" in alert.message
            assert "holds 1 BTC" in alert.message
            assert alert.halt is (policy == "halt")
            # funded, and a restart (a journal): nothing to say
            bid, _ = env.best()
            sent = order(1, Side.BUY, bid - 700, 100)
            await gw.submit(sent)
        async with gateway(env, "run-a", start_balances=policy) as gw:
            # a restart or resume: its capital is in what it holds, nothing to say
            recovered = await gw.recover(
                [sent], [SYMBOL], capital_quote=Decimal("1000000"), fresh=False
            )
            _, alert = split(recovered)
            assert alert.counts["capital_short"] == alert.counts["untracked_holdings"] == 0
            assert not alert.halt

    run(shared_data, scenario)


def test_a_refused_api_key_fails_recovery(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        async with gateway(env, "run-a", api_key="wrong-key") as gw:
            with pytest.raises(ccxt_async.AuthenticationError):
                await gw.recover([], [SYMBOL])

    run(shared_data, scenario)


def test_a_long_session_tracks_open_orders_and_the_recent_final_ones_only(
    shared_data: Path,
) -> None:
    # reconcile asks the venue about every order it tracks as open, each step: orders final
    # for longer than finished_order_memory_s are forgotten, not scanned for the session
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        now = [100.0]
        config = msgspec.structs.replace(env.gateway.config, finished_order_memory_s=10.0)
        gw = CcxtExchange(
            config,
            ApiCredentials(API_KEY, SECRET),
            sleep=env.sleep,
            rng=random.Random(3),
            order_ids=VenueOrderIds("long"),
            clock=lambda: now[0],
        )
        gw.exchange.urls["api"] = env.double.ccxt_urls(gw.exchange.urls["api"])
        gw.exchange.timeout_on_exit = 0
        try:
            await gw.connect()
            await gw.recover([], [SYMBOL])
            for seq in (1, 2, 3):
                await gw.submit(order(seq, Side.BUY, bid - 700 - seq, 100))
            for seq in (1, 2):
                await gw.cancel(
                    CancelOrder(ts_event_ns=2, client_order_id=f"agent-{seq}", symbol=SYMBOL)
                )
            await gw.reconcile()
            assert len(gw._open) == 1 and len(gw._orders) == 3  # 1 and 2 final, remembered
            # a re-sent submit of a final order within the memory is answered, not placed
            assert await gw.submit(order(1, Side.BUY, bid - 701, 100)) is not None
            assert env.venue.duplicate_submits == 0
            now[0] += 11.0
            await gw.reconcile()
            assert set(gw._orders) == {"agent-3"} and set(gw._open) == {"agent-3"}
            assert len(gw._by_venue_cid) == 1
            # the venue still answers for the open one
            done = await gw.cancel(
                CancelOrder(ts_event_ns=3, client_order_id="agent-3", symbol=SYMBOL)
            )
            assert [r.status for r in done if isinstance(r, OrderUpdate)] == [OrderStatus.CANCELED]
        finally:
            await gw.close()

    run(shared_data, scenario)


def test_dust_under_an_order_step_is_not_a_holding(shared_data: Path) -> None:
    # a fee's leftover far below the 0.00001 BTC order step halted a fresh run under
    # start_balances: halt ("the account holds 0.00000012 BTC")
    async def scenario(env: Env) -> None:
        account = env.venue.paper.account
        account.adjust("BTC", Decimal("0.00000012") - account.balance("BTC"))
        async with gateway(env, "run-a", start_balances="halt") as gw:
            _, alert = split(await gw.recover([], [SYMBOL], capital_quote=Decimal("1000")))
            assert alert.counts["untracked_holdings"] == 0 and not alert.halt

    run(shared_data, scenario)
