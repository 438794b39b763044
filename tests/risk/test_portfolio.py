from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.model import Instrument, OrderFilled, Side
from sapphire.model.instrument import InstrumentKind
from sapphire.risk.portfolio import Portfolio

BTC = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001", maker_fee_bps="0")


def fill(side: Side, price_ticks: int, qty_lots: int, n: int, fee: str = "0") -> OrderFilled:
    return OrderFilled(
        ts_event_ns=n,
        client_order_id=f"a-{n}",
        agent_id="a",
        symbol="BTCUSDT",
        side=side,
        price_ticks=price_ticks,
        qty_lots=qty_lots,
        fee_quote=Decimal(fee),
        is_maker=True,
        fill_id=f"f{n}",
    )


def test_round_trip_realizes_exact_pnl_in_quote() -> None:
    pf = Portfolio({"BTCUSDT": BTC})
    pf.apply_fill(fill(Side.BUY, 600_000, 10, 1))  # 0.010 BTC at 60000.0
    pf.apply_fill(fill(Side.SELL, 600_100, 4, 2))  # sell 0.004 at 60010.0
    state = pf.positions[("a", "BTCUSDT")]
    assert state.qty_lots == 6
    assert state.realized_pnl_quote == Decimal("0.04")  # 10 USDT x 0.004
    pf.apply_fill(fill(Side.SELL, 599_900, 10, 3))  # closes 6 at -10, flips short 4
    assert state.qty_lots == -4
    assert state.realized_pnl_quote == Decimal("0.04") - Decimal("0.06")
    assert state.avg_entry_ticks() == 599_900


def test_unrealized_marks_to_mid() -> None:
    pf = Portfolio({"BTCUSDT": BTC})
    pf.apply_fill(fill(Side.BUY, 600_000, 10, 1, fee="0.01"))
    assert pf.unrealized_quote("a", "BTCUSDT", 600_050.0) == Decimal("0.05")
    assert pf.total_pnl_quote("a", {"BTCUSDT": 600_050.0}) == Decimal("0.04")


@given(
    st.lists(
        st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 50), st.integers(1, 9)),
        min_size=1,
        max_size=40,
    )
)
def test_flat_book_pnl_equals_cash_flow(trades: list[tuple[Side, int, int]]) -> None:
    """Invariant: realized + unrealized at any mark equals the cash spent, marked to market."""
    pf = Portfolio({"BTCUSDT": BTC})
    cash_ticklots = 0
    qty = 0
    for n, (side, price, lots) in enumerate(trades):
        pf.apply_fill(fill(side, price, lots, n))
        cash_ticklots -= int(side) * price * lots
        qty += int(side) * lots
    mark = 25
    expected = (cash_ticklots + qty * mark) * BTC.tick * BTC.lot
    got = pf.total_pnl_quote("a", {"BTCUSDT": float(mark)})
    assert abs(got - expected) < Decimal("1e-9")
    assert pf.position_lots("a", "BTCUSDT") == qty


@given(
    st.lists(
        st.tuples(
            st.sampled_from([Side.BUY, Side.SELL]),
            st.integers(1, 50),
            st.integers(1, 9),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_fees_kept_in_the_coin_leave_the_position_and_the_pnl_is_the_accounts(
    trades: list[tuple[Side, int, int, int]],
) -> None:
    """A buy whose fee the venue kept in lots of the coin (Binance spot): the position is
    the coin the account holds, and PnL at any mark is the account's cash and coin marked
    to market, the fee counted once (fee_quote, its value at the fill price)."""
    pf = Portfolio({"BTCUSDT": BTC})
    cash_ticklots = 0
    coin = 0
    for n, (side, price, lots, fee_lots) in enumerate(trades):
        kept = fee_lots if side is Side.BUY else 0
        value = BTC.notional_quote(price, kept)
        pf.apply_fill(
            msgspec.structs.replace(fill(side, price, lots, n), fee_lots=kept, fee_quote=value)
        )
        cash_ticklots -= int(side) * price * lots
        coin += int(side) * lots - kept
    mark = 25
    expected = (cash_ticklots + coin * mark) * BTC.tick * BTC.lot
    got = pf.total_pnl_quote("a", {"BTCUSDT": float(mark)})
    assert abs(got - expected) < Decimal("1e-9")
    assert pf.position_lots("a", "BTCUSDT") == coin


INVERSE = Instrument(
    symbol="BTCUSD_PERP",
    venue="BINANCE_COINM",
    kind=InstrumentKind.INVERSE_PERPETUAL,
    base="BTC",
    quote="USD",
    tick_size="0.5",
    lot_size="1",
    contract_size="100",
    maker_fee_bps="0",
)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([1, -1]), st.integers(1, 7), st.integers(-3, 3)),
        min_size=50,
        max_size=400,
    ),
    st.booleans(),
)
def test_a_position_never_flat_keeps_a_bounded_cost_and_its_exact_pnl(
    moves: list[tuple[int, int, int]], inverse: bool
) -> None:
    """A maker holding inventory through many partial closes: the position's cost stays on
    its grid (an exact Fraction grew without bound: a fill or a mark cost milliseconds
    after 100k fills), and realized plus unrealized PnL is what exact arithmetic gives, to
    far below any figure's last digit."""
    from fractions import Fraction

    from sapphire.risk import portfolio as pf_module

    inst = INVERSE if inverse else BTC
    pf = Portfolio({inst.symbol: inst})
    qty, cost, realized = 0, Fraction(0), Fraction(0)
    price = 120_000 if inverse else 600_000
    for n, (side, lots, step) in enumerate(moves):
        price += step
        # a long inventory of 20-40 lots, never flat: only partial closes and adds
        side = 1 if qty < 20 else (-1 if qty > 40 else side)
        pf.apply_fill(msgspec.structs.replace(fill(Side(side), price, lots, n), symbol=inst.symbol))
        units = inst.price_units(price)
        if qty == 0 or (qty > 0) == (side > 0):
            cost += side * lots * units
        else:
            avg = cost / qty
            realized += (units - avg) * lots
            cost = avg * (qty - lots)
        qty += side * lots
    state = pf.positions[("a", inst.symbol)]
    assert state.qty_lots == qty
    assert pf_module._COST_GRID % state.cost_ticklots.denominator == 0

    def dec(x: Fraction) -> Decimal:
        return Decimal(x.numerator) / Decimal(x.denominator)

    mark = float(price)
    exact = inst.money(dec(realized)) + inst.money(
        inst.price_units_dec(Decimal(repr(mark))) * qty - dec(cost)
    )
    got = pf.total_pnl_quote("a", {inst.symbol: mark})
    assert abs(got - exact) < Decimal("1e-18")
