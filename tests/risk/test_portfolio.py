from decimal import Decimal

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from sapphire.model import Instrument, OrderFilled, Side
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
