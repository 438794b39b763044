"""The paper venue's exchange filters beyond the grids, as Binance documents them: PRICE_FILTER
bounds, MARKET_LOT_SIZE, PERCENT_PRICE(_BY_SIDE) around its reference, MAX_NUM_ORDERS; and a
fill-or-kill order under self-trade prevention, all or nothing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.exchange.config import PaperExchangeBuilder, SelfTradeMode
from sapphire.exchange.paper import PaperExchange
from sapphire.exchange.validation import TradeAverage, check_filters
from sapphire.model.events import BookSnapshot, Side, Trade
from sapphire.model.instrument import Instrument, InstrumentKind, PriceBandReference
from sapphire.model.orders import (
    AmendOrder,
    CancelOrder,
    OrderStatus,
    OrderType,
    OrderUpdate,
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
)
T0 = 1_000_000_000
MINUTE = 60 * 1_000_000_000
# 60000.00 x 100 bid; 60001.00 x 100 and 60002.00 x 200 offered (lots of 0.00001 BTC)
BIDS = ((6_000_000, 100),)
ASKS = ((6_000_100, 100), (6_000_200, 200))
MID = Fraction(6_000_000 + 6_000_100, 2)


def _paper(
    inst: Instrument, stp: SelfTradeMode = SelfTradeMode.EXPIRE_TAKER, *, book: bool = True
) -> PaperExchange:
    ex = PaperExchange(
        PaperExchangeBuilder()
        .instrument(inst)
        .balance("USDT", "100000000")
        .balance("BTC", "1000")
        .constant_latency(entry_ns=0, response_ns=0)
        .self_trade(stp)
        .config()
    )
    if book:
        ex.on_market_event(
            BookSnapshot(ts_event_ns=T0, symbol=inst.symbol, bids=BIDS, asks=ASKS, update_id=1)
        )
    return ex


def _trade(ex: PaperExchange, ts: int, price: int, lots: int) -> None:
    ex.on_market_event(
        Trade(
            ts_event_ns=ts,
            symbol=ex.config.instruments[0].symbol,
            price_ticks=price,
            qty_lots=lots,
            taker_side=Side.SELL,
        )
    )


def _submit(
    ex: PaperExchange,
    cid: str,
    side: Side,
    lots: int,
    price: int | None,
    tif: TimeInForce = TimeInForce.GTC,
    now: int = T0 + 10,
) -> tuple[OrderStatus, RejectReason | None, str]:
    """Send an order; its first answer (status, reason, message)."""
    ex.submit(
        SubmitOrder(
            ts_event_ns=now,
            client_order_id=cid,
            agent_id="a",
            symbol=ex.config.instruments[0].symbol,
            side=side,
            qty_lots=lots,
            limit_ticks=price,
            order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
            tif=tif,
        ),
        now,
    )
    ex.advance(now)
    first = next(r for r in ex.poll(now) if isinstance(r, OrderUpdate) and r.client_order_id == cid)
    return first.status, first.reason, first.message


def _amend(
    ex: PaperExchange, cid: str, price: int | None, lots: int | None = None, now: int = T0 + 20
) -> OrderUpdate:
    ex.amend(
        AmendOrder(
            ts_event_ns=now,
            client_order_id=cid,
            symbol=ex.config.instruments[0].symbol,
            new_limit_ticks=price,
            new_qty_lots=lots,
        ),
        now,
    )
    ex.advance(now)
    return [r for r in ex.poll(now) if isinstance(r, OrderUpdate)][-1]


def _fills(ex: PaperExchange, cid: str) -> list[tuple[int, int]]:
    return [(f.price_ticks, f.qty_lots) for f in ex.fills if f.client_order_id == cid]


def _refused(answer: tuple[OrderStatus, RejectReason | None, str], reason: RejectReason) -> str:
    status, got, message = answer
    assert (status, got) == (OrderStatus.REJECTED, reason), answer
    return message


# -- PRICE_FILTER -------------------------------------------------------------------------------

BOUNDED = msgspec.structs.replace(SPOT, min_price="59000", max_price="61000")


def test_a_limit_price_just_inside_the_price_filter_passes_and_just_outside_is_refused() -> None:
    ex = _paper(BOUNDED)
    low, high = 5_900_000, 6_100_000  # 59000.00 and 61000.00 in 0.01 ticks
    assert _submit(ex, "low", Side.BUY, 10, low)[0] is OrderStatus.ACCEPTED
    assert _submit(ex, "high", Side.SELL, 10, high)[0] is OrderStatus.ACCEPTED
    below = _refused(_submit(ex, "below", Side.BUY, 10, low - 1), RejectReason.PRICE_FILTER)
    above = _refused(_submit(ex, "above", Side.SELL, 10, high + 1), RejectReason.PRICE_FILTER)
    assert below == "PRICE_FILTER: price 58999.99 < minPrice 59000"
    assert above == "PRICE_FILTER: price 61000.01 > maxPrice 61000"
    assert {o.client_order_id for o in ex.open_orders()} == {"low", "high"}


def test_a_bound_off_the_tick_grid_admits_the_first_tick_inside_it() -> None:
    # price >= 59000.005 on a 0.01 grid: 59000.01 is the lowest price that passes
    inst = msgspec.structs.replace(SPOT, min_price="59000.005", max_price="60999.995")
    assert check_filters(inst, OrderType.LIMIT, 5_900_001, 10, 0) is None
    bad = check_filters(inst, OrderType.LIMIT, 5_900_000, 10, 0)
    assert bad is not None and bad[0] is RejectReason.PRICE_FILTER
    assert check_filters(inst, OrderType.LIMIT, 6_099_999, 10, 0) is None
    bad = check_filters(inst, OrderType.LIMIT, 6_100_000, 10, 0)
    assert bad is not None and bad[0] is RejectReason.PRICE_FILTER


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(1, 10**7),
    span=st.integers(0, 10**6),
    price=st.integers(1, 2 * 10**7),
)
def test_the_price_filter_refuses_exactly_the_prices_outside_its_range(
    low: int, span: int, price: int
) -> None:
    inst = msgspec.structs.replace(
        SPOT,
        min_price=str(SPOT.ticks_to_price(low)),
        max_price=str(SPOT.ticks_to_price(low + span)),
    )
    bad = check_filters(inst, OrderType.LIMIT, price, 10, 0)
    outside = not low <= price <= low + span
    assert (bad is not None and bad[0] is RejectReason.PRICE_FILTER) == outside
    # a market order carries no price: the filter never applies to it
    assert check_filters(inst, OrderType.MARKET, None, 10, price) is None


def test_an_amend_to_a_price_outside_the_price_filter_is_refused_and_the_order_kept() -> None:
    ex = _paper(BOUNDED)
    assert _submit(ex, "bid", Side.BUY, 10, 5_950_000)[0] is OrderStatus.ACCEPTED
    refused = _amend(ex, "bid", 5_899_999)
    assert refused.reason is RejectReason.PRICE_FILTER
    assert refused.message == "amend rejected: PRICE_FILTER: price 58999.99 < minPrice 59000"
    view = ex.order_state("bid")
    assert view is not None and view.status is OrderStatus.ACCEPTED
    assert view.limit_ticks == 5_950_000
    moved = _amend(ex, "bid", 5_900_000, now=T0 + 30)
    assert (moved.reason, moved.message) == (None, "amended")
    view = ex.order_state("bid")
    assert view is not None and view.limit_ticks == 5_900_000


# -- MARKET_LOT_SIZE ----------------------------------------------------------------------------

MARKET_CAPPED = msgspec.structs.replace(SPOT, market_min_qty="0.0001", market_max_qty="0.002")


def test_a_market_order_beyond_market_lot_size_is_refused_a_limit_one_is_not() -> None:
    ex = _paper(MARKET_CAPPED)
    # 0.002 BTC = 200 lots: the most a market order may hold; the book offers 300
    assert _submit(ex, "max", Side.BUY, 200, None)[0] is OrderStatus.ACCEPTED
    assert sum(q for _, q in _fills(ex, "max")) == 200
    over = _refused(_submit(ex, "over", Side.BUY, 201, None), RejectReason.MARKET_LOT_SIZE)
    assert over == "MARKET_LOT_SIZE: market quantity 0.00201 > maxQty 0.002"
    under = _refused(_submit(ex, "under", Side.SELL, 9, None), RejectReason.MARKET_LOT_SIZE)
    assert under == "MARKET_LOT_SIZE: market quantity 0.00009 < minQty 0.0001"
    assert _submit(ex, "min", Side.SELL, 10, None)[0] is OrderStatus.ACCEPTED
    assert _fills(ex, "min") == [(6_000_000, 10)]
    # a limit order of the same size is LOT_SIZE's business only
    assert _submit(ex, "limit", Side.BUY, 5_000, 5_000_000)[0] is OrderStatus.ACCEPTED
    assert not _fills(ex, "over") and not _fills(ex, "under")


# -- PERCENT_PRICE_BY_SIDE (spot: around the average trade price) ------------------------------

BAND = msgspec.structs.replace(
    SPOT,
    bid_multiplier_up="1.05",
    bid_multiplier_down="0.8",
    ask_multiplier_up="1.2",
    ask_multiplier_down="0.95",
    avg_price_mins=5,
)


def _band(inst: Instrument, buy: bool, reference: Fraction) -> tuple[int, int]:
    """The band the rule documents: the highest tick <= reference x up, the lowest tick >=
    reference x down (Fraction: exact)."""
    up, down = (
        (inst.bid_multiplier_up, inst.bid_multiplier_down)
        if buy
        else (inst.ask_multiplier_up, inst.ask_multiplier_down)
    )
    high = reference * Fraction(up)
    low = reference * Fraction(down)
    return -(-low.numerator // low.denominator), high.numerator // high.denominator


def test_the_band_is_drawn_around_the_volume_weighted_average_of_the_window() -> None:
    ex = _paper(BAND)
    now = T0 + 10
    prints = [(T0 + 1, 6_000_000, 100), (T0 + 2, 6_100_000, 300)]
    for ts, price, lots in prints:
        _trade(ex, ts, price, lots)
    average = Fraction(sum(p * q for _, p, q in prints), sum(q for _, _, q in prints))
    assert average == 6_075_000  # (60000 x 1 + 61000 x 3) / 4, not the mid 60000.50
    assert ex.band_reference("BTCUSDT", now) == average
    buy_low, buy_high = _band(BAND, True, average)
    sell_low, sell_high = _band(BAND, False, average)
    assert _submit(ex, "b-low", Side.BUY, 10, buy_low, now=now)[0] is OrderStatus.ACCEPTED
    assert _submit(ex, "s-high", Side.SELL, 10, sell_high, now=now)[0] is OrderStatus.ACCEPTED
    # a buy at its ceiling and a sell at its floor trade through the book: inside the band
    assert _submit(ex, "b-high", Side.BUY, 10, buy_high, now=now)[0] is OrderStatus.ACCEPTED
    assert _submit(ex, "s-low", Side.SELL, 10, sell_low, now=now)[0] is OrderStatus.ACCEPTED
    under = _submit(ex, "s-under", Side.SELL, 10, sell_low - 1, now=now)
    assert "askMultiplierDown 0.95" in _refused(under, RejectReason.PERCENT_PRICE)
    below = _refused(
        _submit(ex, "b-below", Side.BUY, 10, buy_low - 1, now=now), RejectReason.PERCENT_PRICE
    )
    assert below == (
        f"PERCENT_PRICE: buy price {SPOT.ticks_to_price(buy_low - 1)} < "
        f"{SPOT.ticks_to_price(buy_low)} (bidMultiplierDown 0.8 x reference 60750.0000)"
    )
    above = _refused(
        _submit(ex, "b-above", Side.BUY, 10, buy_high + 1, now=now), RejectReason.PERCENT_PRICE
    )
    assert "bidMultiplierUp 1.05" in above and str(SPOT.ticks_to_price(buy_high)) in above
    sell = _refused(
        _submit(ex, "s-above", Side.SELL, 10, sell_high + 1, now=now), RejectReason.PERCENT_PRICE
    )
    assert "askMultiplierUp 1.2" in sell


def test_trades_older_than_avg_price_mins_leave_the_average() -> None:
    ex = _paper(BAND)
    _trade(ex, T0, 3_000_000, 1_000)  # 30000.00, heavy, and 5 minutes old at the order
    _trade(ex, T0 + 5 * MINUTE + 1, 6_000_000, 100)
    now = T0 + 5 * MINUTE + 10
    assert ex.band_reference("BTCUSDT", now) == 6_000_000
    # 0.8 x 60000 = 48000.00; with the old print still in, the floor was ~26181
    assert _submit(ex, "in", Side.BUY, 10, 4_800_000, now=now)[0] is OrderStatus.ACCEPTED
    out = _submit(ex, "out", Side.BUY, 10, 4_799_999, now=now)
    assert out[1] is RejectReason.PERCENT_PRICE


def test_a_restored_venue_draws_the_band_around_the_same_window() -> None:
    """The trade window is part of the venue's snapshot: restored without it, the band was
    drawn around the last trade alone until the window filled again (other refusals than
    a run that never stopped)."""
    ex = _paper(BAND)
    prints = [(T0 + 1, 6_000_000, 100), (T0 + 2, 6_100_000, 300), (T0 + 3, 5_900_000, 50)]
    for ts, price, lots in prints:
        _trade(ex, ts, price, lots)
    now = T0 + MINUTE
    before = ex.band_reference("BTCUSDT", now)
    assert before is not None and before != 5_900_000  # the average, not the last print
    again = PaperExchange.restore(ex.snapshot())
    assert again.band_reference("BTCUSDT", now) == before
    # and it goes on the same: a later print and the window's end move both alike
    for venue in (ex, again):
        _trade(venue, T0 + 2 * MINUTE, 6_050_000, 10)
    later = T0 + 5 * MINUTE + 2
    assert again.band_reference("BTCUSDT", later) == ex.band_reference("BTCUSDT", later)


def test_prints_of_one_instant_are_one_entry_of_the_window() -> None:
    """A checkpoint holds the window's entries: a busy second's prints at one time stamp
    are kept as one (their sums), and the average is what one entry a print gives."""
    average = TradeAverage(5)
    prints = [(T0, 6_000_000, 3), (T0, 6_000_100, 1), (T0, 6_000_200, 4), (T0 + 1, 6_000_000, 2)]
    for ts, price, lots in prints:
        average.add(ts, price, lots)
    last, entries = average.state()
    assert last == 6_000_000 and len(entries) == 2
    value = sum(p * q for _, p, q in prints)
    assert average.price(T0 + 2) == Fraction(value, sum(q for _, _, q in prints))
    # and leaves the window as one: the four prints' instant, then the last alone
    assert average.price(T0 + 5 * MINUTE + 1) == 6_000_000


def test_a_quiet_window_keeps_the_last_trade_and_no_trade_yet_uses_the_mid() -> None:
    average = TradeAverage(5)
    assert average.price(T0) is None
    average.add(T0, 6_000_000, 100)
    assert average.price(T0 + 10 * MINUTE) == 6_000_000  # the window is empty, the print stays
    last = TradeAverage(0)  # avgPriceMins 0: the last price
    last.add(T0, 6_000_000, 100)
    last.add(T0 + 1, 6_100_000, 1)
    assert last.price(T0 + 2) == 6_100_000
    ex = _paper(BAND)
    assert ex.band_reference("BTCUSDT", T0 + 10) == MID
    low, _ = _band(BAND, True, MID)
    assert _submit(ex, "in", Side.BUY, 10, low)[0] is OrderStatus.ACCEPTED
    assert _submit(ex, "out", Side.BUY, 10, low - 1)[1] is RejectReason.PERCENT_PRICE


def test_without_any_price_yet_the_band_refuses_nothing() -> None:
    ex = _paper(BAND, book=False)
    assert ex.band_reference("BTCUSDT", T0 + 10) is None
    assert _submit(ex, "far", Side.BUY, 10, 1)[0] is OrderStatus.ACCEPTED


def test_an_amend_outside_the_band_is_refused_one_of_quantity_only_is_not() -> None:
    ex = _paper(BAND)
    low, _ = _band(BAND, True, MID)
    assert _submit(ex, "bid", Side.BUY, 20, low)[0] is OrderStatus.ACCEPTED
    refused = _amend(ex, "bid", low - 1)
    assert refused.reason is RejectReason.PERCENT_PRICE
    assert refused.message.startswith("amend rejected: PERCENT_PRICE: buy price")
    view = ex.order_state("bid")
    assert view is not None and view.limit_ticks == low and view.status is OrderStatus.ACCEPTED
    # the market moves up: the order's own price is now under the band, but an amend that
    # keeps it is measured by nothing new
    _trade(ex, T0 + 25, 7_000_000, 100)
    smaller = _amend(ex, "bid", None, 10, now=T0 + 30)
    assert (smaller.reason, smaller.message) == (None, "amended")


# -- PERCENT_PRICE (futures: around the mark, one bound a side) ---------------------------------

FUTURES_BAND = Instrument(
    symbol="BTCUSDT",
    venue="BINANCE_USDM",
    kind=InstrumentKind.PERPETUAL,
    base="BTC",
    quote="USDT",
    tick_size="0.01",
    lot_size="0.00001",
    bid_multiplier_up="1.15",
    ask_multiplier_down="0.85",
    price_band_reference=PriceBandReference.MARK,
)


def test_the_futures_band_is_around_the_mark_a_buy_has_no_floor_a_sell_no_ceiling() -> None:
    ex = _paper(FUTURES_BAND)
    _trade(ex, T0 + 1, 3_000_000, 10_000)  # trades do not move the mark: the book does
    assert ex.band_reference("BTCUSDT", T0 + 10) == MID
    _, buy_high = _band(FUTURES_BAND, True, MID)
    sell_low = -(-(MID * Fraction("0.85")).numerator // (MID * Fraction("0.85")).denominator)
    assert buy_high == 6_900_057  # 60000.50 x 1.15 = 69000.575: the tick at or under it
    assert sell_low == 5_100_043  # 60000.50 x 0.85 = 51000.425: the tick at or over it
    assert _submit(ex, "b-top", Side.BUY, 10, buy_high)[0] is OrderStatus.ACCEPTED
    assert _submit(ex, "b-over", Side.BUY, 10, buy_high + 1)[1] is RejectReason.PERCENT_PRICE
    assert _submit(ex, "s-floor", Side.SELL, 10, sell_low)[0] is OrderStatus.ACCEPTED
    assert _submit(ex, "s-under", Side.SELL, 10, sell_low - 1)[1] is RejectReason.PERCENT_PRICE
    assert _submit(ex, "b-deep", Side.BUY, 10, 1)[0] is OrderStatus.ACCEPTED
    assert _submit(ex, "s-far", Side.SELL, 10, 100 * 6_000_000)[0] is OrderStatus.ACCEPTED


# -- MAX_NUM_ORDERS -----------------------------------------------------------------------------


def test_the_201st_open_order_is_refused_until_one_closes() -> None:
    ex = _paper(msgspec.structs.replace(SPOT, max_num_orders=200))
    for i in range(100):  # both sides count
        assert _submit(ex, f"b{i}", Side.BUY, 10, 5_000_000 - i)[0] is OrderStatus.ACCEPTED
        assert _submit(ex, f"s{i}", Side.SELL, 10, 7_000_000 + i)[0] is OrderStatus.ACCEPTED
    assert len(ex.open_orders()) == 200
    message = _refused(_submit(ex, "201", Side.BUY, 10, 4_000_000), RejectReason.MAX_NUM_ORDERS)
    assert message == "MAX_NUM_ORDERS: 200 orders open on BTCUSDT, maxNumOrders 200"
    # Binance filters the incoming order, whatever its type: a market one too
    assert _submit(ex, "mkt", Side.BUY, 10, None)[1] is RejectReason.MAX_NUM_ORDERS
    ex.cancel(CancelOrder(ts_event_ns=T0 + 20, client_order_id="b0", symbol="BTCUSDT"), T0 + 20)
    ex.advance(T0 + 20)
    assert _submit(ex, "again", Side.BUY, 10, 4_000_000, now=T0 + 30)[0] is OrderStatus.ACCEPTED


# -- fill-or-kill under self-trade prevention --------------------------------------------------


@pytest.mark.parametrize("mode", [SelfTradeMode.EXPIRE_TAKER, SelfTradeMode.EXPIRE_BOTH])
def test_a_fok_that_would_meet_our_own_order_before_filling_expires_with_no_fill(
    mode: SelfTradeMode,
) -> None:
    ex = _paper(SPOT, mode)
    # our ask at 60001.50, between the market's 60001 (100) and 60002 (200)
    assert _submit(ex, "own", Side.SELL, 50, 6_000_150)[0] is OrderStatus.ACCEPTED
    # 250 lots: the market holds 300 within the limit, but the walk meets ours after 100
    status, reason, message = _submit(ex, "fok", Side.BUY, 250, 6_000_200, TimeInForce.FOK)
    assert (status, reason) == (OrderStatus.EXPIRED, RejectReason.SELF_TRADE)
    assert message.startswith(f"self-trade: {mode.value}")
    assert _fills(ex, "fok") == []
    own = ex.order_state("own")
    assert own is not None and own.status is OrderStatus.ACCEPTED
    # what lies before our order fills a FOK whole
    assert _submit(ex, "fits", Side.BUY, 100, 6_000_200, TimeInForce.FOK)[0] is (
        OrderStatus.ACCEPTED
    )
    assert _fills(ex, "fits") == [(6_000_100, 100)]


def test_a_fok_counts_the_size_ahead_of_our_order_at_its_price() -> None:
    ex = _paper(SPOT)
    # our ask joins 60002 behind the market's 200 there (conservative queue: all ahead)
    assert _submit(ex, "own", Side.SELL, 50, 6_000_200)[0] is OrderStatus.ACCEPTED
    assert _submit(ex, "fok", Side.BUY, 250, 6_000_200, TimeInForce.FOK)[0] is (
        OrderStatus.ACCEPTED
    )
    assert _fills(ex, "fok") == [(6_000_100, 100), (6_000_200, 150)]
    over = _submit(ex, "over", Side.BUY, 301, 6_000_200, TimeInForce.FOK)
    assert over[:2] == (OrderStatus.EXPIRED, RejectReason.FOK_NOT_FILLABLE)


def test_under_expire_maker_a_fok_fills_through_our_expired_order() -> None:
    ex = _paper(SPOT, SelfTradeMode.EXPIRE_MAKER)
    _submit(ex, "own", Side.SELL, 50, 6_000_150)
    assert _submit(ex, "fok", Side.BUY, 250, 6_000_200, TimeInForce.FOK)[0] is (
        OrderStatus.ACCEPTED
    )
    assert _fills(ex, "fok") == [(6_000_100, 100), (6_000_200, 150)]
    own = ex.order_state("own")
    assert own is not None and (own.status, own.reason) == (
        OrderStatus.EXPIRED,
        RejectReason.SELF_TRADE,
    )


@settings(max_examples=120, deadline=None)
@given(
    mode=st.sampled_from(list(SelfTradeMode)),
    own_price=st.integers(6_000_050, 6_000_300),
    own_lots=st.integers(1, 100),
    limit=st.integers(6_000_000, 6_000_300),
    lots=st.integers(1, 400),
    side=st.sampled_from([Side.BUY, Side.SELL]),
)
def test_a_fok_is_all_or_nothing_whatever_our_own_orders(
    mode: SelfTradeMode, own_price: int, own_lots: int, limit: int, lots: int, side: Side
) -> None:
    ex = _paper(SPOT, mode)
    # our order on the side the FOK takes from, anywhere around the market
    own_side = side.opposite
    own_at = own_price if own_side is Side.SELL else own_price - 300
    _submit(ex, "own", own_side, own_lots, own_at)
    fok_at = limit if side is Side.BUY else limit - 200
    _submit(ex, "fok", side, lots, fok_at, TimeInForce.FOK)
    view = ex.order_state("fok")
    assert view is not None
    filled = sum(q for _, q in _fills(ex, "fok"))
    assert view.status in (OrderStatus.FILLED, OrderStatus.EXPIRED)
    assert filled == (lots if view.status is OrderStatus.FILLED else 0)
    assert view.filled_lots == filled
    assert "fok" not in {o.client_order_id for o in ex.open_orders()}


def test_a_hyperliquid_price_keeps_to_five_significant_figures_whole_prices_always_pass(
    shared_data: Path,
) -> None:
    """Hyperliquid's grid (6 - szDecimals decimals: 0.1 for BTC) admits 30123.4, which the
    venue refuses: at most 5 significant figures, a whole price always allowed. The paper
    venue took it, and a maker captured a spread the venue would not have let it quote."""
    from sapphire.adapters.venue_instruments import load_venue_instruments

    meta = shared_data / "exchange/hyperliquid-sdk_hyperliquid_meta_2023-07-17.json"
    btc = load_venue_instruments(meta).instruments["BTC"]
    assert btc.price_sig_figs == 5 and btc.tick_size == "0.1"
    cases = {
        301234: False,  # 30123.4: six figures
        301230: True,  # 30123.0: whole
        30123: True,  # 3012.3: five
        123456789: False,  # 12345678.9: nine, not whole
        123456780: True,  # 12345678: whole, however many figures
    }
    assert {t: btc.sig_figs_ok(t) for t in cases} == cases
    bad = check_filters(btc, OrderType.LIMIT, 301234, 1000, 301234)
    assert bad is not None and bad[0] is RejectReason.INVALID_TICK
    assert (
        bad[1]
        == "price 30123.4 has more than 5 significant figures (a whole price is always allowed)"
    )
    assert check_filters(btc, OrderType.LIMIT, 301230, 1000, 301230) is None
    assert SPOT.price_sig_figs == 0 and SPOT.sig_figs_ok(123456789)  # no rule elsewhere
