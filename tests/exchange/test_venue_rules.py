"""The paper venue's rules where Binance documents them (a review against Binance's docs and
the Binance double): self-trade prevention in matching, amends Binance cancels, the queue
rule of an amend per market, the fee's scale, and the price filters."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.adapters.binance_venue import BinanceVenue, VenueError
from sapphire.exchange.config import PaperExchangeBuilder, PaperExchangeConfig, SelfTradeMode
from sapphire.exchange.paper import PaperExchange
from sapphire.model.events import BookSnapshot, Side
from sapphire.model.instrument import Instrument, InstrumentKind
from sapphire.model.orders import (
    OrderFilled,
    OrderStatus,
    OrderType,
    RejectReason,
    SubmitOrder,
    TimeInForce,
)

SPOT = Instrument(
    symbol="BTCUSDT",
    kind=InstrumentKind.SPOT,
    base="BTC",
    quote="USDT",
    tick_size="0.01",
    lot_size="0.00001",
    maker_fee_bps="10",
    taker_fee_bps="10",
)
T0 = 1_000_000
# the reviewer's book: 60000.00 x 100 bid; 60001.00 x 100, 60002.00 x 200 offered
BIDS = ((6_000_000, 100),)
ASKS = ((6_000_100, 100), (6_000_200, 200))


def _config(
    stp: SelfTradeMode = SelfTradeMode.EXPIRE_TAKER, inst: Instrument = SPOT
) -> PaperExchangeConfig:
    return (
        PaperExchangeBuilder()
        .instrument(inst)
        .balance("USDT", "1000000")
        .balance("BTC", "10")
        .constant_latency(entry_ns=0, response_ns=0)
        .self_trade(stp)
        .config()
    )


def _paper(
    stp: SelfTradeMode = SelfTradeMode.EXPIRE_TAKER, inst: Instrument = SPOT
) -> PaperExchange:
    ex = PaperExchange(_config(stp, inst))
    ex.on_market_event(
        BookSnapshot(ts_event_ns=T0, symbol=inst.symbol, bids=BIDS, asks=ASKS, update_id=1)
    )
    return ex


def _submit(
    ex: PaperExchange,
    cid: str,
    side: Side,
    lots: int,
    price: int | None,
    tif: TimeInForce = TimeInForce.GTC,
) -> None:
    ex.submit(
        SubmitOrder(
            ts_event_ns=T0,
            client_order_id=cid,
            agent_id="a",
            symbol=ex.config.instruments[0].symbol,
            side=side,
            qty_lots=lots,
            limit_ticks=price,
            order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
            tif=tif,
        ),
        T0 + 10,
    )
    ex.advance(T0 + 10)


def _fills(ex: PaperExchange, cid: str) -> list[tuple[int, int]]:
    return [(f.price_ticks, f.qty_lots) for f in ex.fills if f.client_order_id == cid]


def _state(ex: PaperExchange, cid: str) -> tuple[OrderStatus, RejectReason | None]:
    view = ex.order_state(cid)
    assert view is not None
    return view.status, view.reason


# -- 1. self-trade prevention in matching ------------------------------------------------------


@pytest.mark.parametrize("mode", list(SelfTradeMode))
def test_an_order_the_market_fills_before_our_own_ask_is_no_self_trade(mode: SelfTradeMode) -> None:
    # the market's ask at 60001 fills the buy whole: it never reaches our ask at 60003
    # (it was refused, and under EXPIRE_MAKER our ask canceled, before matching)
    ex = _paper(mode)
    _submit(ex, "own", Side.SELL, 50, 6_000_300)
    _submit(ex, "buy", Side.BUY, 50, 6_000_300)
    assert _fills(ex, "buy") == [(6_000_100, 50)]
    assert _state(ex, "buy") == (OrderStatus.FILLED, None)
    assert _state(ex, "own") == (OrderStatus.ACCEPTED, None)


@pytest.mark.parametrize("mode", list(SelfTradeMode))
def test_self_trade_prevention_expires_the_side_its_mode_names_where_the_walk_meets_ours(
    mode: SelfTradeMode,
) -> None:
    ex = _paper(mode)
    _submit(ex, "own", Side.SELL, 50, 6_000_300)
    _submit(ex, "buy", Side.BUY, 350, 6_000_300)
    # the market's 300 lots within the limit trade first, in every mode
    assert _fills(ex, "buy") == [(6_000_100, 100), (6_000_200, 200)]
    taker_expired = mode is not SelfTradeMode.EXPIRE_MAKER
    maker_expired = mode is not SelfTradeMode.EXPIRE_TAKER
    own = (OrderStatus.EXPIRED, RejectReason.SELF_TRADE)
    assert (_state(ex, "own") == own) == maker_expired
    assert (_state(ex, "buy") == own) == taker_expired
    buy = ex.order_state("buy")
    assert buy is not None and buy.filled_lots == 300
    if not taker_expired:  # the taker goes on: its 50 left rest at its limit
        assert buy.status is OrderStatus.PARTIALLY_FILLED
        assert [o.client_order_id for o in ex.open_orders()] == ["buy"]
    # nothing stays locked for an order that ended
    open_ids = {o.client_order_id for o in ex.open_orders()}
    if not open_ids:
        assert ex.account.locked("USDT") == 0 and ex.account.locked("BTC") == 0


@pytest.mark.parametrize(("lots", "met"), [(300, False), (301, True)])
def test_at_our_price_the_market_size_queued_ahead_of_ours_trades_first(
    lots: int, met: bool
) -> None:
    ex = _paper()
    _submit(ex, "own", Side.SELL, 50, 6_000_200)  # behind the 200 lots recorded there
    _submit(ex, "buy", Side.BUY, lots, 6_000_200)
    assert _fills(ex, "buy") == [(6_000_100, 100), (6_000_200, 200)]
    taker = (OrderStatus.EXPIRED, RejectReason.SELF_TRADE) if met else (OrderStatus.FILLED, None)
    assert _state(ex, "buy") == taker
    assert _state(ex, "own") == (OrderStatus.ACCEPTED, None)


def test_an_order_crossing_only_our_own_order_meets_it() -> None:
    # no recorded size within the limit: it still met our bid (it rested crossed before)
    ex = _paper(SelfTradeMode.EXPIRE_BOTH)
    _submit(ex, "own", Side.BUY, 10, 6_000_050)
    _submit(ex, "sell", Side.SELL, 10, 6_000_050)
    assert _state(ex, "own") == (OrderStatus.EXPIRED, RejectReason.SELF_TRADE)
    assert _state(ex, "sell") == (OrderStatus.EXPIRED, RejectReason.SELF_TRADE)
    assert not ex.open_orders() and ex.account.locked("BTC") == 0


def test_a_post_only_order_crossing_our_own_order_is_refused() -> None:
    ex = _paper()
    _submit(ex, "own", Side.BUY, 10, 6_000_050)
    _submit(ex, "maker", Side.SELL, 10, 6_000_050, TimeInForce.POST_ONLY)
    assert _state(ex, "maker") == (OrderStatus.REJECTED, RejectReason.POST_ONLY_WOULD_TAKE)
    assert _state(ex, "own") == (OrderStatus.ACCEPTED, None)


def _venue(stp: SelfTradeMode = SelfTradeMode.EXPIRE_TAKER) -> BinanceVenue:
    venue = BinanceVenue(_config(stp), {})
    venue.feed([BookSnapshot(ts_event_ns=T0, symbol="BTCUSDT", bids=BIDS, asks=ASKS, update_id=1)])
    return venue


def _limit(side: str, qty: str, price: str, cid: str) -> dict[str, str]:
    return {
        "symbol": "BTCUSDT",
        "side": side,
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": qty,
        "price": price,
        "newClientOrderId": cid,
    }


def test_the_double_answers_a_self_trade_as_binance_expired_in_match() -> None:
    venue = _venue(SelfTradeMode.EXPIRE_BOTH)
    own = venue.new_order(_limit("SELL", "0.0005", "60003", "own"))
    assert own["selfTradePreventionMode"] == "EXPIRE_BOTH"
    body = venue.new_order(_limit("BUY", "0.0035", "60003", "buy"))  # 200, not -2010
    assert body["status"] == "EXPIRED_IN_MATCH"
    assert body["executedQty"] == "0.00300000" and len(body["fills"]) == 2
    mine = venue.query_order({"symbol": "BTCUSDT", "origClientOrderId": "own"})
    assert mine["status"] == "EXPIRED_IN_MATCH"


# -- 2, 3. amends ---------------------------------------------------------------------------

PERP = Instrument(
    symbol="BTCUSDT",
    kind=InstrumentKind.PERPETUAL,
    base="BTC",
    quote="USDT",
    tick_size="0.01",
    lot_size="0.00001",
    maker_fee_bps="2",
    taker_fee_bps="4",
)


def _amend(ex: PaperExchange, cid: str, price: int | None = None, lots: int | None = None) -> None:
    from sapphire.model.orders import AmendOrder

    ex.amend(
        AmendOrder(
            ts_event_ns=T0,
            client_order_id=cid,
            symbol="BTCUSDT",
            new_limit_ticks=price,
            new_qty_lots=lots,
        ),
        T0 + 20,
    )
    ex.advance(T0 + 20)


@pytest.mark.parametrize("lots", [3, 4])
def test_an_amend_to_no_more_than_the_filled_quantity_cancels_the_order(lots: int) -> None:
    ex = _paper()
    _submit(ex, "bid", Side.BUY, 10, 5_999_900)
    ex.set_level("BTCUSDT", Side.SELL, 5_999_900, 4, T0 + 15)  # 4 lots would trade with us
    assert _fills(ex, "bid") == [(5_999_900, 4)]
    _amend(ex, "bid", lots=lots)
    assert _state(ex, "bid") == (OrderStatus.CANCELED, RejectReason.INVALID_LOT)
    assert not ex.open_orders() and ex.account.locked("USDT") == 0


def test_a_post_only_amend_through_the_book_cancels_the_order() -> None:
    ex = _paper()
    _submit(ex, "bid", Side.BUY, 10, 5_999_900, TimeInForce.POST_ONLY)
    _amend(ex, "bid", price=6_000_100)  # at the ask: it would take
    assert _state(ex, "bid") == (OrderStatus.CANCELED, RejectReason.POST_ONLY_WOULD_TAKE)
    assert not ex.open_orders() and ex.account.locked("USDT") == 0
    assert not _fills(ex, "bid")


@pytest.mark.parametrize(("inst", "keeps"), [(SPOT, True), (PERP, False)])
def test_a_size_down_amend_keeps_its_place_on_spot_only(inst: Instrument, keeps: bool) -> None:
    ex = _paper(inst=inst)
    _submit(ex, "first", Side.BUY, 10, 5_999_900)
    _submit(ex, "second", Side.BUY, 10, 5_999_900)
    _amend(ex, "first", lots=5)
    level = ex.engine("BTCUSDT").resting(Side.BUY)[5_999_900]
    order = ["first", "second"] if keeps else ["second", "first"]
    assert [o.client_order_id for o in level] == order
    assert _state(ex, "first") == (OrderStatus.ACCEPTED, None)


# -- 4. the fee's scale ---------------------------------------------------------------------


def test_a_fill_debits_the_account_the_fee_it_reports_at_the_stored_scale() -> None:
    ex = PaperExchange(_config())
    ex.on_market_event(
        BookSnapshot(
            ts_event_ns=T0, symbol="BTCUSDT", bids=BIDS, asks=((6_000_101, 100),), update_id=1
        )
    )
    _submit(ex, "buy", Side.BUY, 17, 6_000_101)
    (fill,) = [f for f in ex.fills if f.client_order_id == "buy"]
    # 0.00017 BTC x 60001.01 x 10 bps = 0.0102001717: Binance charges 0.01020017
    assert fill.fee_quote == Decimal("0.01020017")
    notional = SPOT.notional_quote(6_000_101, 17)
    assert ex.account.balances()["USDT"] == Decimal(1_000_000) - notional - fill.fee_quote


@given(
    price=st.integers(min_value=1, max_value=10_000_000_000),
    lots=st.integers(min_value=1, max_value=100_000),
    bps=st.sampled_from(["10", "7.5", "2", "-1.25"]),
)
@settings(max_examples=60, deadline=None)
def test_every_fill_fee_is_at_the_settlement_scale_and_is_what_the_account_paid(
    price: int, lots: int, bps: str
) -> None:
    inst = msgspec.structs.replace(SPOT, taker_fee_bps=bps, min_notional="0")
    cfg = (
        PaperExchangeBuilder()
        .instrument(inst)
        .balance("USDT", "1000000000000000")
        .constant_latency(entry_ns=0, response_ns=0)
        .config()
    )
    ex = PaperExchange(cfg)
    ex.on_market_event(
        BookSnapshot(ts_event_ns=T0, symbol="BTCUSDT", bids=(), asks=((price, lots),), update_id=1)
    )
    _submit(ex, "buy", Side.BUY, lots, price)
    reports = [r for r in ex.poll(1 << 62) if isinstance(r, OrderFilled)]
    assert [r.qty_lots for r in reports] == [lots]
    fee = reports[0].fee_quote
    assert fee == fee.quantize(Decimal("1e-8"))
    assert abs(fee - inst.fee_quote(price, lots, maker=False)) <= Decimal("0.000000005")
    spent = Decimal("1000000000000000") - ex.account.balances()["USDT"]
    assert spent == inst.notional_quote(price, lots) + fee


# -- 6. the double's error codes ------------------------------------------------------------


def test_the_double_refuses_a_filter_failure_with_1013_and_the_symbols_filter_name(
    shared_data: Path,
) -> None:
    info = json.loads(
        (shared_data / "exchange" / "basana_binance_exchangeInfo_BTCUSDT.json").read_text()
    )
    inst = msgspec.structs.replace(SPOT, min_notional="10")
    cfg = PaperExchangeBuilder().instrument(inst).balance("USDT", "1000").config()
    venue = BinanceVenue(cfg, info)
    venue.feed([BookSnapshot(ts_event_ns=T0, symbol="BTCUSDT", bids=BIDS, asks=ASKS, update_id=1)])
    with pytest.raises(VenueError) as small:  # 0.0001 x 50000 = 5 USDT < 10
        venue.new_order(_limit("BUY", "0.0001", "50000", "small"))
    # this symbol's exchangeInfo has MIN_NOTIONAL (newer symbols: NOTIONAL)
    assert (small.value.code, small.value.msg) == (-1013, "Filter failure: MIN_NOTIONAL")
    with pytest.raises(VenueError) as poor:  # a balance refusal stays -2010
        venue.new_order(_limit("BUY", "1", "50000", "poor"))
    assert poor.value.code == -2010


def test_the_double_answers_a_cancel_of_an_unknown_order_with_2011() -> None:
    venue = _venue()
    with pytest.raises(VenueError) as cancel:
        venue.cancel_order({"symbol": "BTCUSDT", "origClientOrderId": "nobody"})
    assert (cancel.value.code, cancel.value.msg) == (-2011, "Unknown order sent.")
    with pytest.raises(VenueError) as query:  # a query's answer is -2013
        venue.query_order({"symbol": "BTCUSDT", "origClientOrderId": "nobody"})
    assert query.value.code == -2013
