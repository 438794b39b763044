"""Margin locks add up and release exactly: with leverage 3 (or an inverse contract) a lock is
a 28-digit Decimal, and releasing it from a running total left ~1E-25 locked with no order open,
which then refused an order needing the whole free balance."""

from __future__ import annotations

from decimal import Decimal

from sapphire.exchange.account import Account
from sapphire.exchange.config import PaperExchangeBuilder, SelfTradeMode
from sapphire.exchange.paper import PaperExchange
from sapphire.model.events import BookSnapshot, Side
from sapphire.model.instrument import Instrument, InstrumentKind
from sapphire.model.orders import (
    AmendOrder,
    CancelOrder,
    OrderType,
    RejectReason,
    SubmitOrder,
    TimeInForce,
)

INST = Instrument(
    symbol="BTCUSDT",
    kind=InstrumentKind.PERPETUAL,
    base="BTC",
    quote="USDT",
    tick_size="0.1",
    lot_size="0.001",
    maker_fee_bps="-1",
    taker_fee_bps="5",
)
PX = 599_990  # a buy resting under the 600,010 ask


def _exchange(
    balance: Decimal, ask: int = 600_010, stp: SelfTradeMode | None = None
) -> PaperExchange:
    builder = (
        PaperExchangeBuilder()
        .instrument(INST)
        .balance("USDT", balance)
        .constant_latency(entry_ns=1, response_ns=1)
        .leverage(3)
    )
    if stp is not None:
        builder = builder.self_trade(stp)
    ex = PaperExchange(builder.config())
    ex.on_market_event(
        BookSnapshot(
            ts_event_ns=1_000,
            symbol="BTCUSDT",
            bids=((599_980, 3),),
            asks=((ask, 3),),
            update_id=1,
        )
    )
    return ex


def _buy(ex: PaperExchange, cid: str, lots: int, t: int) -> None:
    ex.submit(
        SubmitOrder(
            ts_event_ns=t,
            client_order_id=cid,
            agent_id="a",
            symbol="BTCUSDT",
            side=Side.BUY,
            qty_lots=lots,
            limit_ticks=PX,
            order_type=OrderType.LIMIT,
            tif=TimeInForce.GTC,
        ),
        t,
    )
    ex.advance(t + 5)


def test_no_margin_left_locked_once_every_order_ended() -> None:
    ex = _exchange(Decimal(1_000_000))
    _buy(ex, "c1", 100, 2_000)
    _buy(ex, "c2", 7, 3_000)
    for n, cid in enumerate(("c1", "c2")):
        ex.cancel(
            CancelOrder(ts_event_ns=4_000 + n, client_order_id=cid, symbol="BTCUSDT"), 4_000 + n
        )
    ex.advance(10_000)
    assert not ex.open_orders()
    assert ex.account.locked("USDT") == 0  # was 3E-25


def test_the_residue_refuses_an_order_that_needs_the_whole_balance() -> None:
    need = Account({"BTCUSDT": INST}, {}, leverage=3).order_lock(INST, Side.BUY, PX, 7)[1]
    ex = _exchange(need)  # exactly the margin + fee of one 0.007-BTC buy
    for n, lots in enumerate((2, 1, 4)):  # the same 7 lots as three orders...
        _buy(ex, f"c{n}", lots, 2_000 + 100 * n)
    for n in range(3):  # ...all canceled
        ex.cancel(
            CancelOrder(ts_event_ns=4_000 + n, client_order_id=f"c{n}", symbol="BTCUSDT"), 4_000 + n
        )
    ex.advance(10_000)
    assert not ex.open_orders()
    _buy(ex, "c9", 7, 20_000)
    view = ex.order_state("c9")
    assert view is not None
    # was REJECTED insufficient_balance, 6E-26 locked with no order open
    assert view.reason is not RejectReason.INSUFFICIENT_BALANCE, ex.account.locked("USDT")


def test_a_lock_of_billions_of_units_is_booked_and_released() -> None:
    # a spot sell of 2e10 PEPE (~$200k) locks 2e10 base units: on the 1e-18 grid that needs
    # more than the default 28 digits, and the venue raised InvalidOperation
    pepe = Instrument(
        symbol="PEPEUSDT",
        kind=InstrumentKind.SPOT,
        base="PEPE",
        quote="USDT",
        tick_size="0.00000001",
        lot_size="1",
    )
    cfg = (
        PaperExchangeBuilder()
        .instrument(pepe)
        .balance("PEPE", Decimal("3e10"))
        .constant_latency(entry_ns=1, response_ns=1)
        .config()
    )
    ex = PaperExchange(cfg)
    ex.on_market_event(
        BookSnapshot(
            ts_event_ns=1_000,
            symbol="PEPEUSDT",
            bids=((1_000, 10**11),),
            asks=((1_001, 10**11),),
            update_id=1,
        )
    )
    sell = SubmitOrder(
        ts_event_ns=2_000,
        client_order_id="s1",
        agent_id="a",
        symbol="PEPEUSDT",
        side=Side.SELL,
        qty_lots=20_000_000_000,
        limit_ticks=1_002,
        order_type=OrderType.LIMIT,
        tif=TimeInForce.GTC,
    )
    ex.submit(sell, 2_000)
    ex.advance(3_000)
    assert ex.account.locked("PEPE") == Decimal("2e10")
    ex.cancel(CancelOrder(ts_event_ns=4_000, client_order_id="s1", symbol="PEPEUSDT"), 4_000)
    ex.advance(5_000)
    assert ex.account.locked("PEPE") == 0


def _order(
    ex: PaperExchange,
    cid: str,
    side: Side,
    lots: int,
    t: int,
    limit: int | None,
    *,
    kind: OrderType = OrderType.LIMIT,
    tif: TimeInForce = TimeInForce.GTC,
) -> None:
    order = SubmitOrder(
        ts_event_ns=t,
        client_order_id=cid,
        agent_id="a",
        symbol="BTCUSDT",
        side=side,
        qty_lots=lots,
        limit_ticks=limit,
        order_type=kind,
        tif=tif,
    )
    ex.submit(order, t)
    ex.advance(t + 5)


def _status(ex: PaperExchange, cid: str) -> tuple[str, RejectReason | None]:
    view = ex.order_state(cid)
    assert view is not None
    return str(view.status), view.reason


def test_a_sell_is_margined_at_the_prices_it_can_fill_at_not_its_limit() -> None:
    """A linear perpetual's sell limited at one tick fills from the best bid down: its
    margin at the limit was ~0, and 100 USDT opened 180 USDT of notional at leverage 3
    (here: 0.003 BTC at 59,998 needs ~60 USDT; 50 are not enough)."""
    ex = _exchange(Decimal(50))
    _order(ex, "s1", Side.SELL, 3, 2_000, 1, tif=TimeInForce.IOC)
    assert _status(ex, "s1") == ("rejected", RejectReason.INSUFFICIENT_BALANCE)
    _order(ex, "s2", Side.SELL, 3, 3_000, None, kind=OrderType.MARKET, tif=TimeInForce.IOC)
    assert _status(ex, "s2") == ("rejected", RejectReason.INSUFFICIENT_BALANCE)
    assert ex.account.position_state("BTCUSDT").qty_lots == 0


def test_an_amend_through_the_touch_is_margined_as_a_new_order() -> None:
    """A resting sell amended to one tick and three lots fills from the best bid down, as
    the direct sell above does: it reserved margin at its new limit (~0) and opened 0.003
    BTC at 59,998 on 50 USDT at leverage 3. It is refused as the direct one is."""
    ex = _exchange(Decimal(50))
    _order(ex, "s1", Side.SELL, 1, 2_000, 700_000)
    assert _status(ex, "s1") == ("accepted", None)
    ex.amend(
        AmendOrder(
            ts_event_ns=3_000,
            client_order_id="s1",
            symbol="BTCUSDT",
            new_limit_ticks=1,
            new_qty_lots=3,
        ),
        3_000,
    )
    ex.advance(3_005)
    assert ex.account.position_state("BTCUSDT").qty_lots == 0
    view = ex.order_state("s1")
    assert view is not None and view.limit_ticks == 700_000 and view.leaves_lots == 1
    # an amend that fits is still taken: the same three lots resting far above the bid
    ex.amend(
        AmendOrder(ts_event_ns=4_000, client_order_id="s1", symbol="BTCUSDT", new_qty_lots=2),
        4_000,
    )
    ex.advance(4_005)
    view = ex.order_state("s1")
    assert view is not None and view.leaves_lots == 2


def test_closing_a_position_needs_no_new_margin() -> None:
    """All of the balance in a position's margin: the order closing it was refused for
    margin (a reducing order locked a full new margin), and the position stayed open."""
    need = Account({"BTCUSDT": INST}, {}, leverage=3).order_lock(INST, Side.BUY, 600_010, 3)[1]
    ex = _exchange(need)
    _order(ex, "b1", Side.BUY, 3, 2_000, 600_010, tif=TimeInForce.IOC)
    assert ex.account.position_state("BTCUSDT").qty_lots == 3
    _order(ex, "s1", Side.SELL, 3, 3_000, 599_980, tif=TimeInForce.IOC)
    assert _status(ex, "s1")[0] == "filled"
    assert ex.account.position_state("BTCUSDT").qty_lots == 0


def test_a_market_order_never_rests_whatever_limit_it_carries() -> None:
    ex = _exchange(Decimal(1_000_000))
    # 3 lots offered at 600,010; a market buy of 5 protected at 600,010: 3 fill, 2 expire
    _order(ex, "m1", Side.BUY, 5, 2_000, 600_010, kind=OrderType.MARKET, tif=TimeInForce.GTC)
    assert _status(ex, "m1")[0] == "expired"
    assert not ex.open_orders()
    assert ex.account.position_state("BTCUSDT").qty_lots == 3


def test_self_trade_prevention_cancels_nothing_for_an_order_refused_anyway() -> None:
    ex = _exchange(Decimal(1_000_000), ask=600_020, stp=SelfTradeMode.EXPIRE_MAKER)
    _order(ex, "ask", Side.SELL, 1, 2_000, 600_010)  # ours, resting under the book's ask
    # a FOK buy of 50 cannot fill: expired, and our resting ask stays
    _order(ex, "fok", Side.BUY, 50, 3_000, 600_020, tif=TimeInForce.FOK)
    assert _status(ex, "fok") == ("expired", RejectReason.FOK_NOT_FILLABLE)
    assert _status(ex, "ask")[0] == "accepted"


def test_a_crossed_snapshot_leaves_the_book_as_it_was() -> None:
    ex = _exchange(Decimal(1_000_000))
    before = ex.ignored_events
    ex.on_market_event(
        BookSnapshot(
            ts_event_ns=2_000,
            symbol="BTCUSDT",
            bids=((600_020, 1),),
            asks=((600_010, 1),),
            update_id=2,
        )
    )  # raised out of the venue, ending the run
    assert ex.ignored_events == before + 1
    assert ex.book("BTCUSDT").best_bid() == (599_980, 3)


def test_with_a_recorded_latency_a_cancel_never_overtakes_its_submit() -> None:
    """One connection delivers in order: the lag fell from 20 ms to 1 ms between a submit
    and its cancel, and the cancel arrived first (rejected: the order was still unknown),
    then the order was accepted and rested for ever."""
    from sapphire.model.events import Trade

    cfg = (
        PaperExchangeBuilder()
        .instrument(INST)
        .balance("USDT", Decimal(1_000_000))
        .recorded_latency()
        .leverage(3)
        .config()
    )
    ex = PaperExchange(cfg)
    snap = BookSnapshot(
        ts_event_ns=1_000_000,
        ts_recv_ns=21_000_000,  # 20 ms behind the venue
        symbol="BTCUSDT",
        bids=((599_980, 3),),
        asks=((600_010, 3),),
        update_id=1,
    )
    ex.on_market_event(snap)
    ex.submit(
        SubmitOrder(
            ts_event_ns=2_000_000,
            client_order_id="b1",
            agent_id="a",
            symbol="BTCUSDT",
            side=Side.BUY,
            qty_lots=1,
            limit_ticks=PX,
            order_type=OrderType.LIMIT,
            tif=TimeInForce.GTC,
        ),
        2_000_000,
    )
    ex.on_market_event(  # now 1 ms behind
        Trade(
            ts_event_ns=2_500_000,
            ts_recv_ns=3_500_000,
            symbol="BTCUSDT",
            price_ticks=600_010,
            qty_lots=1,
            taker_side=Side.BUY,
        )
    )
    ex.cancel(CancelOrder(ts_event_ns=3_000_000, client_order_id="b1", symbol="BTCUSDT"), 3_000_000)
    ex.advance(100_000_000)
    assert _status(ex, "b1")[0] == "canceled"
    reports = ex.poll(10**9)
    assert [r.ts_event_ns for r in reports] == sorted(r.ts_event_ns for r in reports)
    assert not ex.open_orders()


def test_an_unrealized_loss_backs_no_new_order() -> None:
    """A position under water left every new order as backed as before it: the loss at the
    mark is taken from what is available (a gain backs nothing until realized)."""
    need = Account({"BTCUSDT": INST}, {}, leverage=3).order_lock(INST, Side.BUY, 600_010, 3)[1]
    ex = _exchange(need * 2)  # room for the position and the same again
    _order(ex, "b1", Side.BUY, 3, 2_000, 600_010, tif=TimeInForce.IOC)

    def loss() -> Decimal:
        return -ex.account.unrealized_quote("BTCUSDT", ex.mark_ticks("BTCUSDT") or 0)

    before, lost_before = ex.account.available("USDT"), loss()
    ex.on_market_event(  # the market falls 10 %
        BookSnapshot(
            ts_event_ns=3_000,
            symbol="BTCUSDT",
            bids=((539_980, 3),),
            asks=((540_010, 3),),
            update_id=2,
        )
    )
    assert loss() - lost_before > Decimal(17)  # 0.003 BTC x ~6,000 USDT
    assert ex.account.available("USDT") == before - (loss() - lost_before)
    # a gain backs nothing new
    ex.on_market_event(
        BookSnapshot(
            ts_event_ns=4_000,
            symbol="BTCUSDT",
            bids=((659_980, 3),),
            asks=((660_010, 3),),
            update_id=3,
        )
    )
    assert ex.account.available("USDT") == before + lost_before


def test_a_loss_past_the_margin_is_reported_not_hidden() -> None:
    """XBTUSD at leverage 100 on 0.01 BTC: 1,000 contracts bought at 10,000 USD, and the
    book gone until it comes back at 5,000: the venue liquidates at that first mark, far
    past bankruptcy, which loses ~0.1 BTC, more than the balance. That is counted (the
    negative balance showed nowhere but in later refusals)."""
    xbt = Instrument(
        symbol="XBTUSD",
        kind=InstrumentKind.INVERSE_PERPETUAL,
        base="BTC",
        quote="USD",
        tick_size="0.5",
        lot_size="100",
        maker_fee_bps="-2.5",
        taker_fee_bps="7.5",
    )
    ex = PaperExchange(
        PaperExchangeBuilder().instrument(xbt).balance("BTC", "0.01").leverage(100).config()
    )
    t = 0

    def market(side: Side, lots: int, cid: str, bid: int, ask: int) -> None:
        nonlocal t
        for level_side, price in ((Side.BUY, bid), (Side.SELL, ask)):
            t += 1_000_000
            ex.set_level("XBTUSD", level_side, price, 1000, t)
        t += 1_000_000
        order = SubmitOrder(
            ts_event_ns=t,
            client_order_id=cid,
            agent_id="a",
            symbol="XBTUSD",
            side=side,
            qty_lots=lots,
            order_type=OrderType.MARKET,
            tif=TimeInForce.IOC,
        )
        ex.submit(order, t)
        ex.advance(t)

    market(Side.BUY, 10, "o1", 19_999, 20_000)
    assert ex.book_health()["balances_below_zero"] == 0
    for side, price in ((Side.BUY, 19_999), (Side.SELL, 20_000)):
        t += 1_000_000
        ex.set_level("XBTUSD", side, price, 0, t)
    market(Side.SELL, 10, "o2", 9_999, 10_000)
    assert ex.account.balance("BTC") < 0
    assert ex.book_health()["balances_below_zero"] == 1
    assert ex.book_health()["liquidations"] == 1
    (close,) = [f for f in ex.fills if f.liquidation]
    assert (close.side, close.qty_lots, close.price_ticks) == (Side.SELL, 10, 9_999)
