"""Scenarios on the real USDT-M BTCUSDT 2024-08-08 recording: every order type, partial fills."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from sapphire.data.instruments import known_instrument
from sapphire.exchange.config import PaperExchangeBuilder, SelfTradeMode
from sapphire.exchange.paper import PaperExchange
from sapphire.model.events import AnyMarketEvent, FundingRate, Side
from sapphire.model.orders import (
    AmendOrder,
    CancelOrder,
    OrderFilled,
    OrderStatus,
    OrderType,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
    TimeInForce,
)
from tests.exchange.recorded import SYMBOL, load_events

INST = known_instrument("binance-usdm", "BTCUSDT")
assert INST is not None
WARMUP = 2000  # events replayed before we trade: the book is synced by then


@pytest.fixture(scope="module")
def events(shared_data: Path) -> tuple[AnyMarketEvent, ...]:
    return load_events(shared_data, 20.0)


def _exchange(**kw: object) -> PaperExchange:
    b = PaperExchangeBuilder().instrument(INST).balance("USDT", "1000000").leverage(10)  # type: ignore[arg-type]
    b.constant_latency(
        entry_ns=int(kw.pop("entry_ns", 0)), response_ns=int(kw.pop("response_ns", 0))
    )  # type: ignore[call-overload]
    if kw.pop("prob", False):
        b.power_prob_queue(2.0)
    if kw.pop("impact", False):
        b.market_impact(1_000_000_000)
    if "stp" in kw:
        b.self_trade(kw.pop("stp"))  # type: ignore[arg-type]
    if "balance" in kw:
        b.balance("USDT", str(kw.pop("balance")))
    assert not kw
    return PaperExchange(b.config())


def _warm(ex: PaperExchange, events: Sequence[AnyMarketEvent], n: int = WARMUP) -> int:
    for e in events[:n]:
        ex.on_market_event(e)
    assert ex.book(SYMBOL).is_synced
    return events[n - 1].ts_event_ns


def _order(
    cid: str,
    side: Side,
    qty: int,
    limit: int | None = None,
    tif: TimeInForce = TimeInForce.GTC,
    ts: int = 0,
) -> SubmitOrder:
    return SubmitOrder(
        ts_event_ns=ts,
        client_order_id=cid,
        agent_id="t",
        symbol=SYMBOL,
        side=side,
        qty_lots=qty,
        limit_ticks=limit,
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        tif=tif,
    )


def _now(ex: PaperExchange, order: SubmitOrder, now: int) -> None:
    ex.submit(order, now)
    ex.advance(now)


def _fills(ex: PaperExchange, cid: str) -> list[OrderFilled]:
    return [f for f in ex.fills if f.client_order_id == cid]


def test_market_order_walks_the_recorded_levels(events: Sequence[AnyMarketEvent]) -> None:
    ex = _exchange()
    now = _warm(ex, events)
    asks = ex.book(SYMBOL).levels(Side.SELL, 3)
    qty = asks[0][1] + asks[1][1] + 1
    _now(ex, _order("m-1", Side.BUY, qty), now)
    fills = _fills(ex, "m-1")
    assert [(f.price_ticks, f.qty_lots) for f in fills] == [asks[0], asks[1], (asks[2][0], 1)]
    assert all(not f.is_maker for f in fills)
    assert fills[0].fee_quote == INST.fee_quote(asks[0][0], asks[0][1], maker=False)
    assert ex.order_state("m-1").status is OrderStatus.FILLED  # type: ignore[union-attr]
    assert ex.account.position(SYMBOL, now).qty_lots == qty


def test_ioc_fills_what_it_can_and_expires_the_rest(events: Sequence[AnyMarketEvent]) -> None:
    ex = _exchange()
    now = _warm(ex, events)
    (p0, q0), (p1, q1) = ex.book(SYMBOL).levels(Side.BUY, 2)
    _now(ex, _order("i-1", Side.SELL, q0 + q1 + 50, p1, TimeInForce.IOC), now)
    assert [(f.price_ticks, f.qty_lots) for f in _fills(ex, "i-1")] == [(p0, q0), (p1, q1)]
    view = ex.order_state("i-1")
    assert view is not None and view.status is OrderStatus.EXPIRED and view.filled_lots == q0 + q1


def test_fok_is_all_or_nothing(events: Sequence[AnyMarketEvent]) -> None:
    ex = _exchange()
    now = _warm(ex, events)
    (_p0, q0), (p1, q1) = ex.book(SYMBOL).levels(Side.SELL, 2)
    _now(ex, _order("f-1", Side.BUY, q0 + q1 + 1, p1, TimeInForce.FOK), now)
    view = ex.order_state("f-1")
    assert view is not None and view.status is OrderStatus.EXPIRED
    assert view.reason is RejectReason.FOK_NOT_FILLABLE and not _fills(ex, "f-1")
    _now(ex, _order("f-2", Side.BUY, q0 + q1, p1, TimeInForce.FOK), now)
    assert ex.order_state("f-2").status is OrderStatus.FILLED  # type: ignore[union-attr]
    assert sum(f.qty_lots for f in _fills(ex, "f-2")) == q0 + q1


def test_post_only_rejects_when_it_would_take_and_rests_otherwise(
    events: Sequence[AnyMarketEvent],
) -> None:
    ex = _exchange()
    now = _warm(ex, events)
    ask = ex.book(SYMBOL).best_ask()
    bid = ex.book(SYMBOL).best_bid()
    assert ask and bid
    _now(ex, _order("p-1", Side.BUY, 5, ask[0], TimeInForce.POST_ONLY), now)
    assert ex.order_state("p-1").reason is RejectReason.POST_ONLY_WOULD_TAKE  # type: ignore[union-attr]
    _now(ex, _order("p-2", Side.BUY, 5, bid[0], TimeInForce.POST_ONLY), now)
    assert [o.client_order_id for o in ex.open_orders()] == ["p-2"]
    assert ex.engine(SYMBOL).resting(Side.BUY)[bid[0]][0].ahead == bid[1]


def _first_fill_ns(prob: bool, events: Sequence[AnyMarketEvent]) -> tuple[int | None, int, int]:
    # The market rises in this window: a sell at the best ask is worked through its queue.
    ex = _exchange(prob=prob)
    now = _warm(ex, events)
    ask = ex.book(SYMBOL).best_ask()
    assert ask
    _now(ex, _order("g-1", Side.SELL, 6000, ask[0]), now)
    for e in events[WARMUP:]:
        ex.on_market_event(e)
    fills = _fills(ex, "g-1")
    assert all(f.is_maker and f.price_ticks == ask[0] for f in fills)
    first = fills[0].ts_event_ns if fills else None
    return first, sum(f.qty_lots for f in fills), len(fills)


def test_resting_limit_fills_partially_and_prob_queue_fills_no_later_than_conservative(
    events: Sequence[AnyMarketEvent],
) -> None:
    cons_first, cons_lots, cons_n = _first_fill_ns(False, events)
    prob_first, prob_lots, prob_n = _first_fill_ns(True, events)
    assert prob_first is not None and cons_first is not None
    assert prob_first <= cons_first
    assert prob_lots >= cons_lots > 0
    # several partial fills of a large order, all as maker at our price
    assert cons_n >= 2 and prob_n >= cons_n


def test_cancel_stops_fills_and_releases_margin(events: Sequence[AnyMarketEvent]) -> None:
    ex = _exchange()
    now = _warm(ex, events)
    bid = ex.book(SYMBOL).best_bid()
    assert bid
    _now(ex, _order("c-1", Side.BUY, 3000, bid[0]), now)
    assert ex.account.locked("USDT") > 0
    ex.cancel(CancelOrder(ts_event_ns=now, client_order_id="c-1", symbol=SYMBOL), now)
    ex.advance(now)
    for e in events[WARMUP:]:
        ex.on_market_event(e)
    assert ex.order_state("c-1").status is OrderStatus.CANCELED  # type: ignore[union-attr]
    assert not _fills(ex, "c-1") and ex.account.locked("USDT") == 0
    ex.cancel(CancelOrder(ts_event_ns=now, client_order_id="c-1", symbol=SYMBOL), now)
    ex.advance(now + 1)
    last = ex.poll(now + 10**12)[-1]
    assert isinstance(last, OrderUpdate) and last.reason is RejectReason.UNKNOWN_ORDER
    assert last.status is OrderStatus.CANCELED


def test_every_amend_of_a_perpetual_loses_priority(
    events: Sequence[AnyMarketEvent],
) -> None:
    # Binance USD-M: "modified orders will be reordered in the match queue", a size down
    # too (spot keeps it: tests/exchange/test_venue_rules.py)
    assert INST.derivative
    ex = _exchange()
    now = _warm(ex, events)
    (p0, q0), (p1, q1) = ex.book(SYMBOL).levels(Side.BUY, 2)
    _now(ex, _order("a-1", Side.BUY, 200, p1), now)
    order = ex.engine(SYMBOL).resting(Side.BUY)[p1][0]
    order.ahead = 1.0  # as if we had worked our way to the front
    ex.amend(
        AmendOrder(ts_event_ns=now, client_order_id="a-1", symbol=SYMBOL, new_qty_lots=150), now
    )
    ex.advance(now)
    assert order.ahead == q1 and ex.order_state("a-1").qty_lots == 150  # type: ignore[union-attr]
    order.ahead = 1.0
    ex.amend(
        AmendOrder(ts_event_ns=now, client_order_id="a-1", symbol=SYMBOL, new_qty_lots=180), now
    )
    ex.advance(now)
    assert order.ahead == q1
    ex.amend(
        AmendOrder(ts_event_ns=now, client_order_id="a-1", symbol=SYMBOL, new_limit_ticks=p0), now
    )
    ex.advance(now)
    assert order.limit_ticks == p0 and order.ahead == q0
    assert p1 not in ex.engine(SYMBOL).resting(Side.BUY)


def test_duplicate_client_order_id_is_rejected_without_a_second_order(
    events: Sequence[AnyMarketEvent],
) -> None:
    ex = _exchange(entry_ns=1_000_000, response_ns=500_000)
    now = _warm(ex, events)
    bid = ex.book(SYMBOL).best_bid()
    assert bid
    ex.submit(_order("d-1", Side.BUY, 100, bid[0] - 50), now)
    ex.submit(_order("d-1", Side.BUY, 100, bid[0] - 50), now)
    assert ex.poll(now + 1_499_999) == []  # nothing before entry + response latency
    ex.advance(now + 1_000_000)
    reports = ex.poll(now + 1_500_000)
    assert [(r.status, r.reason) for r in reports if isinstance(r, OrderUpdate)] == [
        (OrderStatus.REJECTED, RejectReason.DUPLICATE_CLIENT_ORDER_ID),
        (OrderStatus.ACCEPTED, None),
    ]
    assert len(ex.open_orders()) == 1 and ex.order_state("d-1").status is OrderStatus.ACCEPTED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("qty", "limit_offset", "balance", "reason"),
    [
        (1, -10, "1000000", RejectReason.MIN_NOTIONAL),
        (0, -10, "1000000", RejectReason.INVALID_LOT),
        (10, None, "1000000", RejectReason.INVALID_TICK),
        (2_000_000, -10, "1000000", RejectReason.MAX_QTY),
        (500, -10, "100", RejectReason.INSUFFICIENT_BALANCE),
    ],
)
def test_filter_and_balance_rejects(
    events: Sequence[AnyMarketEvent],
    qty: int,
    limit_offset: int | None,
    balance: str,
    reason: RejectReason,
) -> None:
    ex = _exchange(balance=balance)
    now = _warm(ex, events)
    bid = ex.book(SYMBOL).best_bid()
    assert bid
    limit = 0 if limit_offset is None else bid[0] + limit_offset
    _now(ex, _order("r-1", Side.BUY, qty, limit), now)
    view = ex.order_state("r-1")
    assert view is not None and view.status is OrderStatus.REJECTED and view.reason is reason
    assert ex.account.locked("USDT") == 0


@pytest.mark.parametrize("mode", list(SelfTradeMode))
def test_self_trade_prevention(events: Sequence[AnyMarketEvent], mode: SelfTradeMode) -> None:
    ex = _exchange(stp=mode)
    now = _warm(ex, events)
    ask = ex.book(SYMBOL).best_ask()
    assert ask
    limit = ask[0] + 5
    _now(ex, _order("s-1", Side.SELL, 100, limit), now)
    # the recorded size within the limit (at our price: queued ahead of ours) trades first,
    # then the walk meets our ask: the mode decides who expires, in matching
    recorded = sum(q for _, q in ex.engine(SYMBOL).fillable(Side.BUY, limit, now))
    _now(ex, _order("s-2", Side.BUY, recorded + 100, limit, TimeInForce.IOC), now)
    resting, incoming = ex.order_state("s-1"), ex.order_state("s-2")
    assert resting is not None and incoming is not None
    taker_expired = mode is not SelfTradeMode.EXPIRE_MAKER
    maker_expired = mode is not SelfTradeMode.EXPIRE_TAKER
    assert incoming.status is OrderStatus.EXPIRED  # IOC: its remainder expires either way
    assert (incoming.reason is RejectReason.SELF_TRADE) == taker_expired
    assert (resting.status is OrderStatus.EXPIRED) == maker_expired
    assert (resting.reason is RejectReason.SELF_TRADE) == maker_expired
    assert sum(f.qty_lots for f in _fills(ex, "s-2")) == recorded


def test_a_market_order_the_book_fills_before_our_own_quote_is_no_self_trade(
    events: Sequence[AnyMarketEvent],
) -> None:
    # a market maker quoting far on the other side may still send a market order: it fills
    # from the book and never reaches our quote (it was refused as a self-trade)
    ex = _exchange()
    now = _warm(ex, events)
    ask = ex.book(SYMBOL).best_ask()
    assert ask
    _now(ex, _order("q-1", Side.SELL, 10, ask[0] + 500), now)
    lots = min(ask[1], 5)  # within the best ask: the book fills it whole
    _now(ex, _order("m-1", Side.BUY, max(lots, 2)), now)
    taker = ex.order_state("m-1")
    assert taker is not None and taker.reason is None, taker
    assert {f.price_ticks for f in _fills(ex, "m-1")} <= {ask[0], ask[0] + 1}
    resting = ex.order_state("q-1")
    assert resting is not None and resting.status is OrderStatus.ACCEPTED


@pytest.mark.parametrize("impact", [False, True])
def test_market_impact_hides_volume_we_already_took(
    events: Sequence[AnyMarketEvent], impact: bool
) -> None:
    ex = _exchange(impact=impact)
    now = _warm(ex, events)
    best = ex.book(SYMBOL).best_ask()
    assert best
    _now(ex, _order("x-1", Side.BUY, best[1]), now)
    _now(ex, _order("x-2", Side.BUY, best[1]), now)
    second = _fills(ex, "x-2")
    if impact:
        assert second[0].price_ticks > best[0]
    else:
        assert [(f.price_ticks, f.qty_lots) for f in second] == [best]


def test_recorded_latency_delays_arrival_and_reports(events: Sequence[AnyMarketEvent]) -> None:
    b = PaperExchangeBuilder().instrument(INST).balance("USDT", "1000000")  # type: ignore[arg-type]
    ex = PaperExchange(b.recorded_latency(floor_ns=2_000_000, entry_scale=2.0).config())
    now = _warm(ex, events)
    # the recorder's clock is behind Binance's here (recv < event): the floor applies
    assert events[WARMUP - 1].ts_recv_ns < events[WARMUP - 1].ts_event_ns
    _now(ex, _order("l-1", Side.BUY, 10), now)
    assert ex.order_state("l-1").status is OrderStatus.PENDING  # type: ignore[union-attr]
    for e in events[WARMUP:]:
        ex.on_market_event(e)
        if ex.fills:
            break
    assert ex.fills[0].ts_event_ns == now + 4_000_000
    assert ex.poll(now + 5_999_999) == []
    assert ex.poll(now + 6_000_000)


def test_funding_payment_from_recorded_rate(
    shared_data: Path, events: Sequence[AnyMarketEvent]
) -> None:
    with gzip.open(
        shared_data / "ohlcv" / "freqtrade_binance_XRP-USDT-USDT_8h-funding_rate_2021-11.csv.gz",
        "rt",
    ) as fh:
        rows = [line.strip().split(",") for line in fh][1:]
    rate = next(r[1] for r in rows if Decimal(r[1]) != 0)
    ex = _exchange()
    now = _warm(ex, events)
    _now(ex, _order("u-1", Side.BUY, 200), now)
    before = ex.account.balance("USDT")
    mid = ex.book(SYMBOL).mid_ticks()
    assert mid is not None
    ex.on_market_event(FundingRate(ts_event_ns=now + 1, symbol=SYMBOL, rate=rate))
    # at the exact mid (x.5 ticks with an odd spread: int() cut it)
    expected = -INST.position_value(Decimal(repr(mid)), 200) * Decimal(rate)
    assert ex.account.balance("USDT") - before == expected != 0


def test_feed_latency_constant_and_recorded(events: Sequence[AnyMarketEvent]) -> None:
    e = events[WARMUP]
    const = _exchange()
    assert const.visible_at_ns(e) == e.ts_event_ns
    b = PaperExchangeBuilder().instrument(INST).balance("USDT", "1")  # type: ignore[arg-type]
    b.constant_latency(feed_ns=7)
    assert PaperExchange(b.config()).visible_at_ns(e) == e.ts_event_ns + 7
    rec = PaperExchange(b.recorded_latency(floor_ns=3).config())
    lag = e.ts_recv_ns - e.ts_event_ns
    assert rec.visible_at_ns(e) == e.ts_event_ns + max(3, lag)
