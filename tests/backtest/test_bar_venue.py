"""The bar venue on the trading kernel: an order trades at the open of the bar that was
forming when it reached the venue, whatever windows the run is cut into."""

from __future__ import annotations

from decimal import Decimal

from sapphire.backtest.bar_gateway import BarCosts, BarGateway
from sapphire.kernel.timing import Window
from sapphire.kernel.venue import VenueStage
from sapphire.model.events import Bar, Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    CancelOrder,
    OrderFilled,
    OrderStatus,
    OrderType,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
)

INST = Instrument(symbol="X", tick_size="1", lot_size="1")
MIN, MS = 60_000_000_000, 1_000_000
C1, C2 = 2 * MIN, 3 * MIN  # the closes of bar 1 (open at MIN) and bar 2


def bar(close_ns: int, open_ticks: int) -> Bar:
    return Bar(
        ts_event_ns=close_ns,
        symbol="X",
        interval_ns=MIN,
        open_ticks=open_ticks,
        high_ticks=open_ticks + 5,
        low_ticks=open_ticks - 5,
        close_ticks=open_ticks + 1,
        volume_lots=1,
    )


def market(cid: str, decided_ns: int) -> SubmitOrder:
    return SubmitOrder(
        ts_event_ns=decided_ns,
        client_order_id=cid,
        agent_id="g",
        symbol="X",
        side=Side.BUY,
        qty_lots=1,
        order_type=OrderType.MARKET,
    )


def venue() -> VenueStage:
    return VenueStage(BarGateway(INST, BarCosts(fee_bps=Decimal(0)), entry_ns=MS))


def fills(reports: list[object]) -> list[tuple[int, int]]:
    return [(r.price_ticks, r.ts_event_ns) for r in reports if isinstance(r, OrderFilled)]


def test_an_order_arriving_after_a_bar_closed_trades_at_the_next_open_in_any_windows() -> None:
    # decided 0.5 ms before bar 1 closes, it reaches the venue 0.5 ms after: bar 2's open.
    # It filled at bar 1's open when its window came before the one holding bar 1's close
    order = market("a", C1 - MS // 2)
    early = venue()
    got = early.step(
        Window(step=1, start_ns=C1 - MS // 5, end_ns=C1 + 4 * MS // 5), [bar(C1, 100)], [order]
    )
    got += early.step(Window(step=2, start_ns=C2, end_ns=C2 + MS), [bar(C2, 200)], [])
    same = venue()
    got_same = same.step(
        Window(step=1, start_ns=C1 - 9 * MS // 10, end_ns=C1 + MS // 10), [bar(C1, 100)], []
    )
    got_same += same.step(
        Window(step=2, start_ns=C1 + MS // 10, end_ns=C1 + 11 * MS // 10), [], [order]
    )
    got_same += same.step(Window(step=3, start_ns=C2, end_ns=C2 + MS), [bar(C2, 200)], [])
    assert fills(list(got)) == fills(list(got_same)) == [(200, C1 + MS // 2)]


def test_a_cancel_after_the_order_arrived_is_too_late() -> None:
    # the order trades at the open of the bar forming when it arrived; a cancel half a minute
    # later used to take the fill back, which no bar engine can do
    gateway = BarGateway(INST, BarCosts(fee_bps=Decimal(0)), entry_ns=MS)
    gateway.submit(market("b", C1 + 2 * MS), C1 + 2 * MS)
    late = C1 + 30_000 * MS
    gateway.cancel(CancelOrder(ts_event_ns=late, client_order_id="b", symbol="X"), late)
    gateway.on_market_event(bar(C2, 200))
    assert fills(list(gateway.poll(C2))) == [(200, C1 + 3 * MS)]
    # with no latency (the bar engines) a cancel in the same instant still takes it back
    quick = BarGateway(INST, BarCosts(fee_bps=Decimal(0)))
    quick.submit(market("c", C1), C1)
    quick.cancel(CancelOrder(ts_event_ns=C1, client_order_id="c", symbol="X"), C1)
    quick.on_market_event(bar(C2, 200))
    [update] = [r for r in quick.poll(C2) if not isinstance(r, OrderFilled)][-1:]
    assert update.status is OrderStatus.CANCELED


def test_a_cancel_before_the_next_bar_opens_binds_across_a_gap() -> None:
    # no bar for an hour after bar 1: a cancel 10 minutes on reaches the venue before the bar
    # that would fill the order opens, so the order never trades
    gateway = BarGateway(INST, BarCosts(fee_bps=Decimal(0)), entry_ns=MS)
    gateway.on_market_event(bar(C1, 100))
    gateway.submit(market("b", C1 + MS), C1 + MS)
    cancel_at = C1 + 10 * MIN
    gateway.cancel(CancelOrder(ts_event_ns=cancel_at, client_order_id="b", symbol="X"), cancel_at)
    gateway.on_market_event(bar(C1 + 61 * MIN, 300))
    reports = list(gateway.poll(C1 + 61 * MIN))
    assert fills(reports) == []
    assert reports[-1].status is OrderStatus.CANCELED and reports[-1].ts_event_ns == cancel_at + MS


def test_every_cancel_is_answered_too_late_ones_and_unknown_ids_included() -> None:
    # a cancel the bar's fill beat, and one for an order the venue finished or never had,
    # get the paper venue's answer (the order's state, unknown_order) instead of silence
    gateway = BarGateway(INST, BarCosts(fee_bps=Decimal(0)), entry_ns=MS)
    gateway.submit(market("b", C1 + 2 * MS), C1 + 2 * MS)
    late = C1 + 30_000 * MS
    gateway.cancel(CancelOrder(ts_event_ns=late, client_order_id="b", symbol="X"), late)
    gateway.on_market_event(bar(C2, 200))
    reports = list(gateway.poll(C2))
    assert fills(reports) == [(200, C1 + 3 * MS)]
    answer = reports[-1]
    assert isinstance(answer, OrderUpdate) and answer.reason is RejectReason.UNKNOWN_ORDER
    assert (answer.status, answer.filled_lots, answer.agent_id) == (OrderStatus.FILLED, 1, "g")
    assert answer.ts_event_ns == late + MS  # when the cancel arrived, after the fill
    again = C2 + MS
    gateway.cancel(CancelOrder(ts_event_ns=again, client_order_id="b", symbol="X"), again)
    gateway.cancel(CancelOrder(ts_event_ns=again, client_order_id="zz", symbol="X"), again)
    filled, unknown = gateway.poll(again)
    assert isinstance(filled, OrderUpdate) and filled.status is OrderStatus.FILLED
    assert isinstance(unknown, OrderUpdate) and unknown.status is OrderStatus.REJECTED
    assert unknown.reason is RejectReason.UNKNOWN_ORDER and unknown.agent_id == ""
