"""Real, unpatched ccxt against the Binance double: place, fill, cancel and reconcile under
injected faults; every order ends in exactly one final state, the venue's own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.adapters.binance_double import Fault, FaultKind
from sapphire.exchange.gateway import AsyncExecutionGateway, ExecutionReport
from sapphire.model import OrderFilled, OrderStatus, OrderUpdate, RejectReason, Side
from sapphire.model.orders import CancelOrder, TimeInForce
from tests.exchange.ccxt_env import (
    API_KEY,
    RECV_WINDOW_MS,
    SECRET,
    Env,
    check_ledger,
    environment,
    order,
)

Scenario = Callable[[Env], Awaitable[None]]


def run(data: Path, scenario: Scenario) -> None:
    async def main() -> None:
        async with environment(data) as env:
            await scenario(env)

    asyncio.run(main())


def cancel(seq: int) -> CancelOrder:
    return CancelOrder(ts_event_ns=2, client_order_id=f"agent-{seq}", symbol="BTCUSDT")


def updates(reports: Sequence[ExecutionReport]) -> list[OrderUpdate]:
    return [r for r in reports if isinstance(r, OrderUpdate)]


def final(env: Env, seq: int) -> OrderUpdate:
    return check_ledger(env)[f"agent-{seq}"]


# One fault of each kind; ``executed``: the faulted request itself reached the engine.
FAULTS = {
    "rate_limit": (Fault(kind=FaultKind.RATE_LIMIT, retry_after_s=2), False),
    "server_error": (Fault(kind=FaultKind.SERVER_ERROR), False),
    "unavailable": (Fault(kind=FaultKind.UNAVAILABLE), False),
    "stall_in_window": (Fault(kind=FaultKind.STALL, delay_s=0.15), True),
    "stall_past_window": (Fault(kind=FaultKind.STALL, delay_s=0.3), False),
    "slow_response": (Fault(kind=FaultKind.SLOW_RESPONSE, delay_s=0.15), True),
    "lost_response": (Fault(kind=FaultKind.LOST_RESPONSE), True),
    "gateway_timeout": (Fault(kind=FaultKind.GATEWAY_TIMEOUT), True),
    # ccxt raises a bare ExchangeError here: still no answer, never a rejection
    "cut_response": (Fault(kind=FaultKind.CUT_RESPONSE), True),
}


def test_connect_loads_instruments_from_the_venue(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        assert isinstance(env.gateway, AsyncExecutionGateway)
        inst = env.gateway.instruments["BTCUSDT"]
        venue_inst = env.venue.paper.instruments["BTCUSDT"]
        assert (inst.tick_size, inst.lot_size, inst.min_qty, inst.min_notional) == (
            venue_inst.tick_size,
            venue_inst.lot_size,
            venue_inst.min_qty,
            venue_inst.min_notional,
        )
        # Only spot endpoints were called: no margin, futures or wallet requests.
        assert {(r.method, r.path) for r in env.double.requests} == {("GET", "exchangeInfo")}

    run(shared_data, scenario)


def test_place_fill_cancel_and_reconcile_on_a_recorded_market(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        bid, ask = env.best()
        resting = await env.submit(order(1, Side.BUY, bid - 500, 100))
        assert [type(r) for r in resting] == [OrderUpdate]
        assert [u.status for u in updates(resting)] == [OrderStatus.ACCEPTED]
        # A taker buy that walks several recorded ask levels: one fill per venue trade.
        depth = env.venue.paper.book("BTCUSDT").levels(Side.SELL, 3)
        sweep = sum(q for _, q in depth[:2]) + 1
        taken = await env.submit(order(2, Side.BUY, depth[2][0], sweep))
        fills = [r for r in taken if isinstance(r, OrderFilled)]
        assert len(fills) >= 3 and sum(f.qty_lots for f in fills) == sweep
        assert [f.price_ticks for f in fills[:3]] == [p for p, _ in depth]
        assert isinstance(taken[-1], OrderUpdate) and taken[-1].status is OrderStatus.FILLED
        await env.submit(order(3, Side.SELL, ask + 1000, 100))
        canceled = await env.run(env.gateway.cancel(cancel(3)))
        assert [r.status for r in updates(canceled)] == [OrderStatus.CANCELED]
        # The recorded market trades through our bid while we are not looking.
        env.feed_until(lambda: env.venue.final_status("agent-1") is OrderStatus.FILLED)
        assert env.venue.final_status("agent-1") is OrderStatus.FILLED
        first = await env.run(env.gateway.reconcile())
        assert [type(r) for r in first] == [OrderFilled, OrderUpdate]
        assert isinstance(first[0], OrderFilled) and first[0].is_maker
        assert first[0].fee_quote == Decimal(env.venue.trades[-1]["commission"])
        assert await env.gateway.reconcile() == []  # nothing new, nothing repeated
        finals = check_ledger(env)
        assert {k: v.status for k, v in finals.items()} == {
            "agent-1": OrderStatus.FILLED,
            "agent-2": OrderStatus.FILLED,
            "agent-3": OrderStatus.CANCELED,
        }
        # A cancel of a filled order is refused, and the fill is not reported again.
        late = await env.gateway.cancel(cancel(1))
        assert [(r.status, r.reason) for r in updates(late)] == [
            (OrderStatus.FILLED, RejectReason.UNKNOWN_ORDER)
        ]

    run(shared_data, scenario)


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_submit_under_fault_places_exactly_one_order(shared_data: Path, name: str) -> None:
    fault, executed = FAULTS[name]

    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        env.double.inject("POST", "order", fault)
        reports = await env.submit(order(1, Side.BUY, bid - 200, 100))
        assert [r.status for r in updates(reports)] == [OrderStatus.ACCEPTED]
        posts = env.double.count("POST", "order")
        # Re-sent only when the faulted request did not execute.
        assert posts == (1 if executed else 2), env.double.requests
        assert list(env.venue.orders) == ["agent-1"]
        if fault.kind is FaultKind.RATE_LIMIT:
            assert max(env.sleep.calls) >= fault.retry_after_s
        if fault.kind not in (FaultKind.RATE_LIMIT,):
            settle = (RECV_WINDOW_MS + 50) / 1000
            assert settle in env.sleep.calls  # waited out the recvWindow before asking
        env.feed_until(lambda: env.venue.final_status("agent-1") is OrderStatus.FILLED)
        await env.run(env.gateway.reconcile())
        assert final(env, 1).status is OrderStatus.FILLED

    run(shared_data, scenario)


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_cancel_under_fault_cancels_exactly_once(shared_data: Path, name: str) -> None:
    fault, _ = FAULTS[name]

    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        await env.submit(order(1, Side.BUY, bid - 5000, 100))
        env.double.inject("DELETE", "order", fault)
        reports = await env.run(env.gateway.cancel(cancel(1)))
        statuses = [r.status for r in updates(reports)]
        assert statuses == [OrderStatus.CANCELED], reports
        if fault.kind is FaultKind.STALL:
            await asyncio.sleep(fault.delay_s)  # let the stalled request finish at the venue
        assert await env.run(env.gateway.reconcile()) == []
        assert final(env, 1).status is OrderStatus.CANCELED

    run(shared_data, scenario)


def test_reconcile_survives_faults_on_every_read(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        await env.submit(order(1, Side.BUY, bid - 500, 100))
        await env.submit(order(2, Side.BUY, bid - 30_000, 100))
        env.feed_until(lambda: env.venue.final_status("agent-1") is OrderStatus.FILLED)
        env.double.inject("GET", "openOrders", Fault(kind=FaultKind.SERVER_ERROR))
        env.double.inject("GET", "order", Fault(kind=FaultKind.RATE_LIMIT, retry_after_s=1))
        env.double.inject("GET", "myTrades", Fault(kind=FaultKind.LOST_RESPONSE))
        env.double.inject("GET", "myTrades", Fault(kind=FaultKind.STALL, delay_s=0.15))
        reports = await env.run(env.gateway.reconcile())
        assert [type(r) for r in reports] == [OrderFilled, OrderUpdate]
        assert env.double.pending_faults() == 0
        assert env.gateway.order_status("agent-2") is OrderStatus.ACCEPTED
        await env.run(env.gateway.cancel(cancel(2)))
        finals = check_ledger(env)
        assert finals["agent-1"].status is OrderStatus.FILLED
        assert finals["agent-2"].status is OrderStatus.CANCELED

    run(shared_data, scenario)


def test_resubmitting_a_known_client_id_places_nothing(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        first = order(1, Side.BUY, bid - 500, 100)
        await env.submit(first)
        again = await env.submit(first)
        assert again == []  # nothing changed, nothing to tell
        assert env.double.count("POST", "order") == 1
        env.feed_until(lambda: env.venue.final_status("agent-1") is OrderStatus.FILLED)
        late = await env.submit(first)
        assert [type(r) for r in late] == [OrderFilled, OrderUpdate]
        assert env.double.count("POST", "order") == 1
        assert final(env, 1).status is OrderStatus.FILLED

    run(shared_data, scenario)


def test_throttled_to_the_end_is_rejected_and_never_placed(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        env.double.inject("POST", "order", Fault(kind=FaultKind.RATE_LIMIT), times=4)
        reports = await env.submit(order(1, Side.BUY, bid - 500, 100))
        assert [(r.status, r.reason) for r in updates(reports)] == [
            (OrderStatus.REJECTED, RejectReason.EXCHANGE_ERROR)
        ]
        assert env.venue.orders == {}
        assert len(env.sleep.calls) == 3 and all(s >= 1 for s in env.sleep.calls)

    run(shared_data, scenario)


def test_venue_refusals_are_final_rejections(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        _, ask = env.best()
        post_only = await env.submit(order(1, Side.BUY, ask, 100, tif=TimeInForce.POST_ONLY))
        too_big = await env.submit(order(2, Side.BUY, ask - 10, 10**7))  # 100 BTC
        dust = await env.submit(order(3, Side.BUY, ask - 10, 1))  # 0.6 USDT < min notional
        got = [(u.status, u.reason) for r in (post_only, too_big, dust) for u in updates(r)]
        assert got == [
            (OrderStatus.REJECTED, RejectReason.POST_ONLY_WOULD_TAKE),
            (OrderStatus.REJECTED, RejectReason.INSUFFICIENT_BALANCE),
            (OrderStatus.REJECTED, RejectReason.MIN_NOTIONAL),
        ]
        assert env.venue.orders == {}
        check_ledger(env)

    run(shared_data, scenario)


def test_a_restarted_gateway_adopts_journal_orders_and_reconciles(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        placed = order(1, Side.BUY, bid - 500, 100)
        lost = order(2, Side.BUY, bid - 600, 100)
        # The venue executes order 1, but the answer is lost and so is every lookup.
        env.double.inject("POST", "order", Fault(kind=FaultKind.LOST_RESPONSE))
        env.double.inject("GET", "order", Fault(kind=FaultKind.SERVER_ERROR), times=4)
        assert await env.submit(placed) == []
        assert env.gateway.order_status("agent-1") is OrderStatus.PENDING
        # A fresh gateway (process restart) knows both orders only from the journal.
        env.gateway._orders.clear()
        env.gateway.track(placed)
        env.gateway.track(lost)  # never reached the venue
        env.feed_until(lambda: env.venue.final_status("agent-1") is OrderStatus.FILLED)
        reports = await env.run(env.gateway.reconcile())
        by_order = {(type(r).__name__, r.client_order_id) for r in reports}
        assert by_order == {
            ("OrderFilled", "agent-1"),
            ("OrderUpdate", "agent-1"),
            ("OrderUpdate", "agent-2"),
        }
        finals = check_ledger(env)
        assert finals["agent-1"].status is OrderStatus.FILLED
        assert finals["agent-2"].status is OrderStatus.REJECTED
        assert env.double.count("POST", "order") == 1

    run(shared_data, scenario)


_FAULT_OR_NONE = st.sampled_from([None, *sorted(FAULTS)])


@pytest.mark.slow  # ~10 s: each example runs a venue and real HTTP with real settle waits
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(
        st.tuples(
            st.integers(min_value=-300, max_value=200),  # limit vs best bid, ticks
            st.integers(min_value=20, max_value=400),  # lots
            _FAULT_OR_NONE,  # on the submit
            st.booleans(),  # cancel it afterwards?
            _FAULT_OR_NONE,  # on the cancel
        ),
        min_size=1,
        max_size=4,
    ),
    read_fault=_FAULT_OR_NONE,
    events=st.integers(min_value=0, max_value=400),
)
def test_random_fault_schedules_lose_and_duplicate_nothing(
    shared_data: Path,
    plan: list[tuple[int, int, str | None, bool, str | None]],
    read_fault: str | None,
    events: int,
) -> None:
    async def scenario(env: Env) -> None:
        for seq, (offset, lots, submit_fault, do_cancel, cancel_fault) in enumerate(plan, 1):
            bid, _ = env.best()
            if submit_fault is not None:
                env.double.inject("POST", "order", FAULTS[submit_fault][0])
            await env.submit(order(seq, Side.BUY, bid + offset, lots))
            env.feed_until(lambda: False, limit=events // len(plan))
            if do_cancel:
                if cancel_fault is not None:
                    env.double.inject("DELETE", "order", FAULTS[cancel_fault][0])
                await env.run(env.gateway.cancel(cancel(seq)))
        await asyncio.sleep(0.35)  # stalled requests finish (or are refused) at the venue
        if read_fault is not None:
            for endpoint in ("openOrders", "order", "myTrades"):
                env.double.inject("GET", endpoint, FAULTS[read_fault][0])
        await env.run(env.gateway.reconcile())
        # Wind down: cancel whatever still rests; every order must end final, once.
        for seq in range(1, len(plan) + 1):
            if env.gateway.order_status(f"agent-{seq}") in (
                OrderStatus.ACCEPTED,
                OrderStatus.PARTIALLY_FILLED,
            ):
                await env.run(env.gateway.cancel(cancel(seq)))
        await env.run(env.gateway.reconcile())
        finals = check_ledger(env)
        assert sorted(finals) == sorted(f"agent-{s}" for s in range(1, len(plan) + 1))

    run(shared_data, scenario)


def test_debug_logs_of_signed_requests_never_show_the_credentials(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        await env.submit(order(1, Side.BUY, bid - 500, 100))
        assert "test-key" not in repr(env.gateway)

    with caplog.at_level(logging.DEBUG):
        run(shared_data, scenario)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "X-MBX-APIKEY" in text and "***" in text  # the signed request was logged...
    assert API_KEY not in text and SECRET not in text  # ...with its credentials masked


def test_concurrent_resend_and_reconcile_during_a_submit_place_one_order(
    shared_data: Path,
) -> None:
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        first = order(1, Side.BUY, bid - 500, 100)
        # The order reaches the engine late (stall); meanwhile a re-send and a reconcile run.
        env.double.inject("POST", "order", Fault(kind=FaultKind.STALL, delay_s=0.15))

        async def later(coro: Awaitable[Sequence[ExecutionReport]]) -> None:
            await asyncio.sleep(0.05)
            await env.run(coro)

        await asyncio.gather(
            env.submit(first), later(env.gateway.submit(first)), later(env.gateway.reconcile())
        )
        assert [u.status for u in updates(env.reports)] == [OrderStatus.ACCEPTED]
        assert env.double.count("POST", "order") == 1
        await env.run(env.gateway.cancel(cancel(1)))
        assert final(env, 1).status is OrderStatus.CANCELED

    run(shared_data, scenario)


def test_market_ioc_and_fok_orders_end_filled_or_expired(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        (best_ask, ask_lots), _ = env.venue.paper.book("BTCUSDT").levels(Side.SELL, 2)
        await env.submit(order(1, Side.BUY, None, 100))
        await env.submit(order(2, Side.SELL, None, 100))
        ioc = await env.submit(order(3, Side.BUY, best_ask, ask_lots + 50, tif=TimeInForce.IOC))
        await env.submit(order(4, Side.BUY, bid - 100, 100, tif=TimeInForce.FOK))
        sent = [r.params for r in env.double.requests if r.method == "POST"]
        assert [(p["type"], p.get("timeInForce")) for p in sent] == [
            ("MARKET", None),
            ("MARKET", None),
            ("LIMIT", "IOC"),
            ("LIMIT", "FOK"),
        ]
        assert sent[2]["price"] == "61837.64" and sent[2]["quantity"] == "1.54748"
        # as the paper venue reports it: entered, then its fills, then the expiry
        assert [(u.status, u.filled_lots) for u in updates(ioc)] == [
            (OrderStatus.ACCEPTED, 0),
            (OrderStatus.EXPIRED, ask_lots),
        ]
        finals = check_ledger(env)
        assert [finals[f"agent-{i}"].status for i in range(1, 5)] == [
            OrderStatus.FILLED,
            OrderStatus.FILLED,
            OrderStatus.EXPIRED,
            OrderStatus.EXPIRED,
        ]

    run(shared_data, scenario)


@pytest.mark.parametrize("resting", [True, False])
def test_lookup_without_fetch_by_client_id_scans_open_then_closed_orders(
    shared_data: Path, resting: bool
) -> None:
    async def scenario(env: Env) -> None:
        env.gateway.exchange.has["fetchOrder"] = False  # a venue without order-by-client-id
        bid, ask = env.best()
        env.double.inject("POST", "order", Fault(kind=FaultKind.LOST_RESPONSE))
        price = bid - 500 if resting else ask
        reports = await env.submit(order(1, Side.BUY, price, 100))
        expected = [OrderStatus.ACCEPTED] + ([] if resting else [OrderStatus.FILLED])
        assert [u.status for u in updates(reports)] == expected
        assert env.double.count("POST", "order") == 1
        scanned = {r.path for r in env.double.requests if r.method == "GET"}
        assert "order" not in scanned
        assert ("allOrders" in scanned) is not resting
        if resting:
            await env.run(env.gateway.cancel(cancel(1)))
        check_ledger(env)

    run(shared_data, scenario)


def test_an_off_grid_filled_amount_is_booked_on_the_nearest_lot_not_raised() -> None:
    # a venue reporting a filled amount off the lot grid (a venue-side rounding) must not
    # raise out of reconcile, where it would stop this and every later order's reconcile
    from sapphire.adapters.ccxt_credentials import ApiCredentials
    from sapphire.adapters.ccxt_gateway import CcxtExchange, CcxtGatewayConfig
    from sapphire.model import Instrument
    from tests.exchange.ccxt_env import order

    class Venue:
        async def fetch_my_trades(
            self, symbol: str, limit: int, params: dict[str, str]
        ) -> list[object]:
            return []  # its trades are not out yet

    async def main() -> None:
        gw = CcxtExchange(CcxtGatewayConfig(), ApiCredentials("key", "secret"))
        try:
            inst = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001")
            gw.instruments = {"BTCUSDT": inst}
            gw._symbols = {"BTCUSDT": "BTC/USDT"}
            gw._codes = {"BTCUSDT": ("BTC", "USDT")}
            real, gw.exchange = gw.exchange, Venue()  # type: ignore[assignment]
            tracked = gw._new_tracked(order(1, Side.BUY, 600_000, 5))
            out: list[ExecutionReport] = []
            venue_order = {
                "id": "7",
                "clientOrderId": tracked.venue_cid,
                "symbol": "BTC/USDT",
                "side": "buy",
                "type": "limit",
                "price": 60_000.0,
                "amount": 0.005,
                "filled": 0.0015,  # off the 0.001 grid
                "status": "open",
                "trades": [],
            }
            await gw._apply(tracked, venue_order, out)
            assert tracked.venue_id == "7" and not tracked.status.is_final
        finally:
            gw.exchange = real
            await gw.close()

    asyncio.run(main())


def test_venue_trade_ids_name_a_fill_only_with_symbol_and_side() -> None:
    # Binance numbers trades per symbol, and a self-trade is one trade id on both of our
    # orders: the firm's journal drops a fill id it has seen, so a bare trade id lost the
    # second symbol's (or the other side's) fill on a live run
    from sapphire.adapters.ccxt_tracking import TrackedOrder
    from sapphire.coordination.journal import OrderJournal
    from sapphire.model import Instrument
    from tests.exchange.ccxt_env import order

    btc = order(1, Side.BUY, 600_000, 5)
    eth = msgspec.structs.replace(order(2, Side.BUY, 30_000, 5), symbol="ETHUSDT")
    btc_sell = order(3, Side.SELL, 600_000, 5)
    insts = {
        "BTCUSDT": Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001"),
        "ETHUSDT": Instrument(symbol="ETHUSDT", tick_size="0.1", lot_size="0.001"),
    }
    journal = OrderJournal()
    out: list[ExecutionReport] = []
    for submitted, price in ((btc, 60_000.0), (eth, 3_000.0), (btc_sell, 60_000.0)):
        assert journal.record_submit(submitted)
        trade = {"id": 77, "price": price, "amount": 0.005, "timestamp": 1_000}
        TrackedOrder(submitted).add_fill(insts[submitted.symbol], trade, out)
    fills = [r for r in out if isinstance(r, OrderFilled)]
    assert len({f.fill_id for f in fills}) == 3
    assert all("77" in f.fill_id for f in fills)  # the venue's trade id stays readable
    assert [journal.apply(f) for f in fills] == [True, True, True]
    assert not journal.apply(fills[0])  # the same trade of the same order: a duplicate


def test_an_order_with_more_trades_than_a_page_books_every_fill(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Binance answers an order's trades a page at a time (500 without a limit): a sweep of
    # 700 one-lot levels, its answer lost, was booked as 500 fills and never FILLED
    from sapphire.adapters import ccxt_gateway

    monkeypatch.setattr(ccxt_gateway, "_TRADE_PAGE", 250, raising=False)  # three pages

    async def scenario(env: Env) -> None:
        _, ask = env.best()
        for i in range(700):
            env.venue.set_level("BTCUSDT", Side.SELL, ask - 700 + i, 1)
        env.double.inject("POST", "order", Fault(kind=FaultKind.LOST_RESPONSE))
        reports = list(await env.submit(order(1, Side.BUY, None, 700)))
        fills = [r for r in reports if isinstance(r, OrderFilled)]
        assert len({f.fill_id for f in fills}) == 700 and sum(f.qty_lots for f in fills) == 700
        assert updates(reports)[-1].status is OrderStatus.FILLED
        assert env.double.count("GET", "myTrades") == 3
        assert final(env, 1).status is OrderStatus.FILLED

    run(shared_data, scenario)


def test_a_venue_ban_refuses_the_order_instead_of_stalling_the_step(shared_data: Path) -> None:
    # three 429s asking for two hours each: the step slept six hours, then sent an order
    # decided on a market six hours gone, while no cancel (not even the kill switch's) left
    async def scenario(env: Env) -> None:
        bid, ask = env.best()
        ban = Fault(kind=FaultKind.RATE_LIMIT, retry_after_s=7200)
        env.double.inject("POST", "order", ban)
        reports = await env.submit(order(1, Side.BUY, bid - 500, 300))
        [refused] = updates(reports)
        assert refused.status is OrderStatus.REJECTED and "Retry-After" in refused.message
        assert env.double.count("POST", "order") == 1 and sum(env.sleep.calls) < 30
        assert final(env, 1).status is OrderStatus.REJECTED  # the venue never had it
        # the ban holds: the next order is refused without a request
        [quiet] = updates(await env.submit(order(2, Side.SELL, ask + 1000, 100)))
        assert quiet.status is OrderStatus.REJECTED and "no request sent" in quiet.message
        assert env.double.count("POST", "order") == 1 and sum(env.sleep.calls) < 30

    run(shared_data, scenario)


def test_a_cancel_under_a_ban_is_not_confirmed_at_once(shared_data: Path) -> None:
    async def scenario(env: Env) -> None:
        _, ask = env.best()
        await env.submit(order(2, Side.SELL, ask + 1000, 100))
        ban = Fault(kind=FaultKind.RATE_LIMIT, retry_after_s=7200)
        env.double.inject("DELETE", "order", ban, times=3)
        unconfirmed = updates(await env.run(env.gateway.cancel(cancel(2))))
        assert unconfirmed and "not confirmed" in unconfirmed[-1].message
        assert env.double.count("DELETE", "order") == 1 and sum(env.sleep.calls) < 30
        # it still rests: the cancel never reached the venue, and the agent is told so
        assert (
            env.venue.final_status(env.gateway.venue_client_id("agent-2")) is OrderStatus.ACCEPTED
        )

    run(shared_data, scenario)


def test_a_quantity_off_the_lot_step_is_refused_before_the_venue(shared_data: Path) -> None:
    # the run's instrument may size the book on a finer grid than orders (size_increment):
    # ccxt cut 0.010003 BTC to 0.01, the venue accepted it, and the gateway, seeing another
    # amount than its intent's, reported it rejected and never tracked its fills
    async def scenario(env: Env) -> None:
        inst = env.gateway.instruments["BTCUSDT"]
        finer = msgspec.structs.replace(inst, size_increment="0.00000001")
        env.gateway.instruments["BTCUSDT"] = finer
        bid, _ = env.best()
        off_step = finer.lots_per_step * 1_000 + 300  # 0.010003 BTC
        [update] = updates(await env.submit(order(1, Side.BUY, bid - 500, off_step)))
        assert (update.status, update.reason) == (OrderStatus.REJECTED, RejectReason.INVALID_LOT)
        assert "not a multiple of the lot step" in update.message
        assert env.venue.orders == {}  # nothing placed

    run(shared_data, scenario)


def test_a_venue_ban_silences_every_request_until_it_ends(shared_data: Path) -> None:
    # a Retry-After longer than a step may wait gave up that one call; every step after it
    # went on sending reconciles, lookups and orders into the ban (Binance lengthens it,
    # 429 then 418, up to three days)
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        [placed] = updates(await env.submit(order(1, Side.BUY, bid - 5000, 100)))
        assert placed.status is OrderStatus.ACCEPTED
        ban = Fault(kind=FaultKind.RATE_LIMIT, retry_after_s=120)
        for method, endpoint in [("GET", "openOrders"), ("POST", "order"), ("DELETE", "order")]:
            env.double.inject(method, endpoint, ban, times=100)
        before = len(env.double.requests)
        [refused] = updates(await env.submit(order(2, Side.BUY, bid - 6000, 100)))
        assert refused.status is OrderStatus.REJECTED and "Retry-After" in refused.message
        sent = len(env.double.requests) - before
        assert sent >= 1  # the request that was answered with the ban
        for step in range(5):  # five more steps inside the two minutes
            await env.run(env.gateway.reconcile())
            [late] = updates(await env.submit(order(10 + step, Side.BUY, bid - 7000, 100)))
            assert late.status is OrderStatus.REJECTED and "no request sent" in late.message
            [kept] = updates(await env.gateway.cancel(cancel(1)))
            assert kept.status is OrderStatus.ACCEPTED and "cancel not sent" in kept.message
        assert len(env.double.requests) - before == sent  # nothing more reached the venue

    run(shared_data, scenario)


def test_a_timeout_after_a_ban_does_not_start_it_again(shared_data: Path) -> None:
    # ccxt keeps the last response's headers: a timeout (no response) read the ban's own
    # Retry-After again and started the ban anew, the order left with no report
    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        ban = Fault(kind=FaultKind.RATE_LIMIT, retry_after_s=120)
        env.double.inject("POST", "order", ban)
        await env.submit(order(1, Side.BUY, bid - 5000, 100))
        assert env.gateway.quiet_left() > 100
        env.gateway._quiet_until = 0.0  # two minutes later: the ban is over
        env.double.inject("POST", "order", Fault(kind=FaultKind.LOST_RESPONSE))
        [placed] = updates(await env.submit(order(2, Side.BUY, bid - 6000, 100)))
        assert placed.status is OrderStatus.ACCEPTED  # found by its client id, as before
        assert env.gateway.quiet_left() == 0

    run(shared_data, scenario)


def test_a_buy_charged_in_the_coin_books_the_coin_the_account_received(
    shared_data: Path,
) -> None:
    # Binance spot without BNB fees charges a buy's commission in the coin bought: the fill
    # was booked as its whole amount, the position above what the account held, and a
    # later sell of all of it was refused for insufficient balance
    from sapphire.risk.portfolio import Portfolio

    async def main() -> None:
        async with environment(shared_data, base_commission=True) as env:
            inst = env.gateway.instruments["BTCUSDT"]
            held = env.venue.paper.account.balance("BTC")
            reports: list[ExecutionReport] = []
            # 0.01 BTC pays 0.00001 BTC, one lot; 0.001 BTC a tenth of one, carried
            for seq, lots in enumerate([1000, 100, 100, 1000, 100, 100, 100, 100, 100], 1):
                reports += await env.submit(order(seq, Side.BUY, None, lots))
            reports += await env.gateway.reconcile()
            fills = [r for r in reports if isinstance(r, OrderFilled)]
            assert len(fills) == 9 and sum(f.fee_lots for f in fills) == 2
            received = env.venue.paper.account.balance("BTC") - held
            booked = sum(f.qty_lots - f.fee_lots for f in fills)
            # within a lot of the coin received (the carry: 0.000007 BTC of fees not booked)
            assert Decimal(0) <= inst.lots_to_qty(booked) - received < inst.lot
            portfolio = Portfolio({"BTCUSDT": inst})
            for f in fills:
                portfolio.apply_fill(f)
            assert portfolio.position_lots(fills[0].agent_id, "BTCUSDT") == booked

    asyncio.run(main())


def test_a_host_clock_off_the_venues_is_corrected_not_refused_for_ever(
    shared_data: Path,
) -> None:
    # the host's clock 5 s ahead of Binance's: every signed request was refused -1021
    # ("outside of the recvWindow"), retried with the same clock and refused again
    async def main() -> None:
        async with environment(shared_data, clock_offset_ms=-5_000) as env:
            await env.gateway.recover([], ["BTCUSDT"])
            bid, _ = env.best()
            placed = await env.submit(order(1, Side.BUY, bid - 500, 100))
            assert [u.status for u in updates(placed)] == [OrderStatus.ACCEPTED]
            assert env.gateway.clock_resyncs == 1
            refused = [r for r in env.double.requests if r.status == 400]
            assert len(refused) == 1 and refused[0].path == "account"

    asyncio.run(main())


def test_an_order_reports_to_its_agent_as_the_paper_venue_reports_it(shared_data: Path) -> None:
    """The same orders through the live gateway and the paper venue give an agent the same
    report sequence (it acts on them: an ACCEPTED resets its refusal wait): entered once,
    progress as fills only, an unfilled IOC or FOK with the paper venue's reason."""

    async def scenario(env: Env) -> None:
        bid, _ = env.best()
        ioc = await env.submit(order(1, Side.BUY, bid - 100, 100, tif=TimeInForce.IOC))
        assert [(u.status, u.reason) for u in updates(ioc)] == [
            (OrderStatus.ACCEPTED, None),
            (OrderStatus.EXPIRED, RejectReason.NO_LIQUIDITY),
        ]
        fok = await env.submit(order(2, Side.BUY, bid - 100, 100, tif=TimeInForce.FOK))
        assert [(u.status, u.reason) for u in updates(fok)] == [
            (OrderStatus.EXPIRED, RejectReason.FOK_NOT_FILLABLE)
        ]
        taken = await env.submit(order(3, Side.BUY, None, 100))  # a market order
        kinds = [type(r).__name__ for r in taken]
        assert kinds[0] == "OrderUpdate" and kinds[-1] == "OrderUpdate" and "OrderFilled" in kinds
        statuses = [u.status for u in updates(taken)]
        assert statuses[0] is OrderStatus.ACCEPTED and statuses[-1].is_final
        assert len(statuses) == 2  # entered, ended: no partial state between

    run(shared_data, scenario)


def test_a_self_trade_reaches_the_agent_with_the_paper_venues_reason(shared_data: Path) -> None:
    """A buy that walks into our own resting sell: Binance (the double) ends it
    EXPIRED_IN_MATCH, which ccxt unifies to "expired" like any IOC remainder. The agent must
    be told, as the paper venue tells it, that self-trade prevention ended it, not the
    market's depth (reason SELF_TRADE, after the fills the market gave it)."""

    async def scenario(env: Env) -> None:
        (ask, ask_lots), _ = env.venue.paper.book("BTCUSDT").levels(Side.SELL, 2)
        await env.submit(order(1, Side.SELL, ask, 20))  # ours, queued behind the market's
        taker = await env.submit(order(2, Side.BUY, ask, ask_lots + 10))
        ups = updates(taker)
        assert [(u.status, u.reason) for u in ups] == [
            (OrderStatus.ACCEPTED, None),
            (OrderStatus.EXPIRED, RejectReason.SELF_TRADE),
        ]
        # the market's size ahead of ours traded first; ours stopped the rest
        assert ups[-1].filled_lots == ask_lots
        assert sum(r.qty_lots for r in taker if isinstance(r, OrderFilled)) == ask_lots
        assert check_ledger(env)["agent-2"].reason is RejectReason.SELF_TRADE

    run(shared_data, scenario)
