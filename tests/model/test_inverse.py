"""Inverse (coin-margined) contracts: the money rule of ``Instrument`` and every book that
uses it (portfolio, venue account, agent cash, risk caps) in the settlement coin.

The reference figures here are computed with Fractions straight from the contract's
definition, ``PnL = contracts x size x (1/entry - 1/exit)`` coin, never with Instrument."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.data.instruments import load_instrument_file
from sapphire.exchange.account import Account
from sapphire.model import Instrument, InstrumentKind, OrderFilled, OrderIntent, OrderType, Side
from sapphire.model.orders import RejectReason
from sapphire.risk.engine import RiskEngine
from sapphire.risk.limits import AgentLimits, RiskLimits
from sapphire.risk.portfolio import Portfolio

ROOT = Path(__file__).resolve().parents[2]

# Binance COIN-M BTCUSD_PERP: 100 USD per contract, tick 0.1 USD, fees 1 / 5 bps
COINM = Instrument(
    symbol="BTCUSD_PERP",
    venue="BINANCE_COINM",
    kind=InstrumentKind.INVERSE_PERPETUAL,
    base="BTC",
    quote="USD",
    tick_size="0.1",
    lot_size="1",
    contract_size="100",
    maker_fee_bps="1",
    taker_fee_bps="5",
)
SIZE = Fraction(100)
TICK = Fraction(1, 10)
# at 28 significant digits, a few hundred operations on values below 1,000 BTC
TOL = Decimal("1e-18")


def price(ticks: int) -> Fraction:
    return ticks * TICK


def fill(side: Side, price_ticks: int, qty_lots: int, n: int, fee: Decimal) -> OrderFilled:
    return OrderFilled(
        ts_event_ns=n,
        client_order_id=f"a-{n}",
        agent_id="a",
        symbol=COINM.symbol,
        side=side,
        price_ticks=price_ticks,
        qty_lots=qty_lots,
        fee_quote=fee,
        is_maker=False,
        fill_id=f"f{n}",
    )


def close(value: Decimal, exact: Fraction) -> bool:
    return abs(Fraction(value) - exact) <= Fraction(TOL)


# -- the instrument ---------------------------------------------------------------------------


def test_existing_instrument_files_stay_linear() -> None:
    inst = load_instrument_file(ROOT / "configs/instruments/binance-spot-BTCUSDT.json")
    assert inst.kind is InstrumentKind.SPOT and not inst.inverse
    assert inst.settle_asset == "USDT" and inst.contract_size == "1"
    # linear money is unchanged: notional = price x qty, and pnl_value is the notional
    assert inst.notional_quote(6_000_000, 100) == Decimal("60.00000")
    assert inst.pnl_value(6_000_000, 100) == inst.notional_quote(6_000_000, 100)


def test_inverse_instrument_file_loads() -> None:
    inst = load_instrument_file(ROOT / "configs/instruments/bybit-inverse-BTCUSD.json")
    assert inst.inverse and inst.settle_asset == "BTC" and inst.quote == "USD"
    # 1-USD contracts: 61,000 contracts at 61,000 USD are 1 BTC
    assert inst.notional_quote(122_000, 61_000) == Decimal(1)


def test_the_issue_figures_are_in_coin() -> None:
    # 10 contracts of 100 USD at 61,000 USD: 1,000 USD = 0.016393... BTC, not 610,000 "USD"
    notional = COINM.notional_quote(610_000, 10)
    assert close(notional, Fraction(1000, 61_000))
    assert close(COINM.fee_quote(610_000, 10, maker=False), Fraction(1000, 61_000) * 5 / 10_000)
    # a long of 10 contracts from 61,000 to 60,000 loses 1000 x (1/60000 - 1/61000) BTC
    pnl = COINM.pnl_value(600_000, 10) - COINM.pnl_value(610_000, 10)
    assert close(pnl, -1000 * (Fraction(1, 60_000) - Fraction(1, 61_000)))
    assert COINM.quote_value(Decimal("-0.0000522"), 617_000) == Decimal("-3.22074")


def test_inverse_needs_a_coin_and_a_positive_contract_size() -> None:
    with pytest.raises(ValueError, match="contract_size"):
        Instrument(symbol="X", kind=InstrumentKind.INVERSE_PERPETUAL, base="BTC",
                   tick_size="1", lot_size="1", contract_size="0")  # fmt: skip
    with pytest.raises(ValueError, match="base or settle"):
        Instrument(symbol="X", kind=InstrumentKind.INVERSE_PERPETUAL, tick_size="1", lot_size="1")


# -- property: PnL in coin equals contracts x size x (1/entry - 1/exit) -----------------------

prices = st.integers(min_value=100_000, max_value=1_500_000)  # 10,000 .. 150,000 USD
lots = st.integers(min_value=1, max_value=5_000)


@settings(max_examples=200, deadline=None)
@given(entry=prices, exit_=prices, qty=lots, long=st.booleans())
def test_round_trip_pnl_in_coin(entry: int, exit_: int, qty: int, long: bool) -> None:
    side, back = (Side.BUY, Side.SELL) if long else (Side.SELL, Side.BUY)
    direction = 1 if long else -1
    want = direction * qty * SIZE * (1 / price(entry) - 1 / price(exit_))

    pf = Portfolio({COINM.symbol: COINM})
    pf.apply_fill(fill(side, entry, qty, 1, Decimal(0)))
    assert close(pf.unrealized_quote("a", COINM.symbol, float(exit_)), want)
    state = pf.apply_fill(fill(back, exit_, qty, 2, Decimal(0)))
    assert state.qty_lots == 0 and close(state.realized_pnl_quote, want)

    account = Account({COINM.symbol: COINM}, {"BTC": Decimal(10)})
    account.apply_fill(COINM, side, entry, qty, Decimal(0))
    assert close(account.unrealized_quote(COINM.symbol, exit_), want)
    realized = account.apply_fill(COINM, back, exit_, qty, Decimal(0))
    assert close(realized, want)
    assert close(account.balance("BTC"), 10 + want)
    assert account.balance("USD") == 0  # an inverse fill moves no quote


fills_st = st.lists(
    st.tuples(st.sampled_from([Side.BUY, Side.SELL]), prices, lots), min_size=1, max_size=25
)


@settings(max_examples=200, deadline=None)
@given(fills=fills_st, mark=prices)
def test_settlement_coin_is_conserved(fills: list[tuple[Side, int, int]], mark: int) -> None:
    """Over any fills: the books' realized + unrealized - fees equals the coin cash flows of
    the fills (a buy of n contracts at p receives n x size / p coin of 'cash', a sell pays it)
    plus the open position valued at the mark, and the venue's coin balance moves by
    exactly its realized PnL less fees (no coin is created or lost)."""
    pf = Portfolio({COINM.symbol: COINM})
    account = Account({COINM.symbol: COINM}, {"BTC": Decimal(10)}, leverage=5)
    cash = Fraction(0)
    fees = Fraction(0)
    position = 0
    realized_venue = Decimal(0)
    for n, (side, px, qty) in enumerate(fills):
        fee = COINM.fee_quote(px, qty, maker=False)
        assert close(fee, qty * SIZE / price(px) * 5 / 10_000)
        pf.apply_fill(fill(side, px, qty, n, fee))
        realized_venue += account.apply_fill(COINM, side, px, qty, fee)
        cash += int(side) * qty * SIZE / price(px)
        fees += Fraction(fee)
        position += int(side) * qty
    want = cash - position * SIZE / price(mark) - fees
    state = pf.positions[("a", COINM.symbol)]
    assert state.qty_lots == position
    assert close(pf.total_pnl_quote("a", {COINM.symbol: float(mark)}), want)
    venue_total = account.balance("BTC") - 10 + account.unrealized_quote(COINM.symbol, mark)
    assert close(venue_total, want)
    assert close(account.balance("BTC") - 10, Fraction(realized_venue) - fees)
    if position:
        # margin in coin: |position| x size / entry / leverage, entry the harmonic mean
        entry = state.avg_entry_ticks(COINM)
        margin = account.position_margin(COINM.symbol)
        assert close(margin, abs(position) * SIZE / price(Fraction(entry)) / 5)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(fills=fills_st, mark=prices)
def test_linear_books_are_unchanged(fills: list[tuple[Side, int, int]], mark: int) -> None:
    """The same fills on a linear contract: PnL = sum of -side x qty x price."""
    linear = Instrument(symbol="BTCUSD_PERP", kind=InstrumentKind.PERPETUAL, base="BTC",
                        quote="USDT", tick_size="0.1", lot_size="0.001")  # fmt: skip
    pf = Portfolio({linear.symbol: linear})
    cash, position = Fraction(0), 0
    for n, (side, px, qty) in enumerate(fills):
        pf.apply_fill(fill(side, px, qty, n, Decimal(0)))
        cash -= int(side) * qty * price(px) / 1000
        position += int(side) * qty
    want = cash + position * price(mark) / 1000
    # exact but for the 28-digit Decimal of a Fraction average entry (as before inverse)
    assert close(pf.total_pnl_quote("a", {linear.symbol: float(mark)}), want)


# -- risk: the notional cap of an inverse contract is in its settlement coin ------------------


def coin_intent(qty: int, limit: int | None) -> OrderIntent:
    return OrderIntent(
        ts_event_ns=1,
        agent_id="a",
        seq=1,
        symbol=COINM.symbol,
        side=Side.BUY,
        qty_lots=qty,
        limit_ticks=limit,
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
    )


def coin_engine(cap: str) -> RiskEngine:
    limits = RiskLimits(price_band_bps=100, default_agent=AgentLimits(max_notional_quote=cap))
    eng = RiskEngine(limits, {COINM.symbol: COINM}, Portfolio({COINM.symbol: COINM}))
    eng.update_mark(COINM.symbol, 500_000.0)  # 50,000 USD
    return eng


def test_inverse_notional_cap_is_in_coin() -> None:
    # 10 contracts of 100 USD at 50,000 USD = 0.02 BTC: a 0.03 BTC cap passes, 0.015 does not
    assert coin_engine("0.03").check(coin_intent(10, 500_000), 0, 1).accepted
    denied = coin_engine("0.015").check(coin_intent(10, 500_000), 0, 1)
    assert denied.reason is RejectReason.RISK_MAX_NOTIONAL
    # a linear reading (contracts x price x tick x lot = 500,000) would deny a 1 BTC cap
    assert coin_engine("1").check(coin_intent(10, 500_000), 0, 1).accepted


def test_inverse_market_order_is_valued_at_the_low_end_of_the_band() -> None:
    # at the band's low end (49,500 USD) 10 contracts are 1000/49500 = 0.020202 BTC
    assert coin_engine("0.0203").check(coin_intent(10, None), 0, 1).accepted
    denied = coin_engine("0.0201").check(coin_intent(10, None), 0, 1)
    assert denied.reason is RejectReason.RISK_MAX_NOTIONAL


def test_inverse_orders_lock_coin_margin() -> None:
    account = Account({COINM.symbol: COINM}, {"BTC": Decimal(1)}, leverage=2)
    asset, amount = account.order_lock(COINM, Side.BUY, 500_000, 10)
    assert asset == "BTC"
    assert close(amount, Fraction(2, 100) / 2 + Fraction(2, 100) * 5 / 10_000)


def test_the_ccxt_path_refuses_inverse_swaps_rather_than_book_them_linear() -> None:
    from sapphire.exchange.ccxt_convert import (
        ConversionError,
        check_live_tradeable,
        instrument_from_market,
    )

    market = {"id": "BTCUSD", "symbol": "BTC/USD:BTC", "swap": True, "inverse": True,
              "base": "BTC", "quote": "USD", "settle": "BTC",
              "precision": {"price": 0.5, "amount": 1}}  # fmt: skip
    inverse = instrument_from_market(market)  # the same Instrument replay makes
    assert inverse.kind is InstrumentKind.INVERSE_PERPETUAL
    with pytest.raises(ConversionError, match="inverse"):
        check_live_tradeable(inverse)
    linear = instrument_from_market(market | {"inverse": False, "linear": True, "settle": "USD"})
    assert linear.kind is InstrumentKind.PERPETUAL
    check_live_tradeable(linear)
