from __future__ import annotations

import math
import statistics
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.backtest import analytics
from sapphire.backtest.ledger import BacktestResult, Fill
from sapphire.model import Instrument, Side

INST = Instrument(symbol="T", tick_size="1", lot_size="1")


def test_sharpe_sortino_and_drawdown_match_hand_values() -> None:
    equity = [100.0, 110.0, 99.0, 121.0]
    r = analytics.returns(equity)  # 0.1, -0.1, 0.2222
    assert list(r) == pytest.approx([0.1, -0.1, 22 / 99])
    mean = (0.1 - 0.1 + 22 / 99) / 3
    std = statistics.stdev([0.1, -0.1, 22 / 99])
    assert analytics.sharpe(r, 365.0) == pytest.approx(mean / std * math.sqrt(365))
    downside = math.sqrt(0.01 / 3)  # only -0.1 counts
    assert analytics.sortino(r, 365.0) == pytest.approx(mean / downside * math.sqrt(365))
    assert analytics.max_drawdown(equity) == pytest.approx(0.1)  # 110 -> 99


def fill(side: Side, price: int, qty: int, maker: bool = False, ref: float = 0.0) -> Fill:
    return Fill(
        ts_event_ns=0,
        side=side,
        price_ticks=price,
        qty_lots=qty,
        fee_quote=Decimal(1),
        is_maker=maker,
        ref_ticks=ref,
        position_after=0,
    )


def test_summary_counts_round_trips_hit_rate_and_spread_captured() -> None:
    fills = [
        fill(Side.BUY, 100, 2, True, 101.0),  # bought 1 tick below mid: +99.0 bps
        fill(Side.SELL, 110, 4, True, 109.0),  # closes +20 - 2 fees = 18; opens short 2
        fill(Side.BUY, 115, 2),  # closes the short at a loss
    ]
    res = BacktestResult(
        symbol="T",
        initial_cash=Decimal(1000),
        final_equity=Decimal(1003),
        fills=fills,
        equity_ts=[0, 1],
        equity=[1000.0, 1003.0],
        position=[0, 2],
        orders_submitted=4,
        orders_filled=3,
    )
    s = analytics.summarize(res, INST)
    assert s.round_trips == 2
    assert s.hit_rate == 0.5
    assert s.fill_ratio == 0.75
    assert s.maker_fills == 2
    assert s.spread_captured_bps == pytest.approx((1 / 101 + 1 / 109) / 2 * 1e4)
    pnls = analytics.round_trip_pnls(res, INST)
    assert pnls == [Decimal(20) - Decimal("1.5"), Decimal(-10) - Decimal("1.5")]


@given(st.lists(st.floats(1, 1e6), min_size=1, max_size=60))
def test_max_drawdown_is_a_fraction_between_zero_and_one(equity: list[float]) -> None:
    dd = analytics.max_drawdown(equity)
    assert 0.0 <= dd < 1.0
    if equity == sorted(equity):
        assert dd == 0.0


def _curve(n: int, step_ns: int) -> BacktestResult:
    equity = [1000.0 + (i % 7) - 3 * (i % 3) for i in range(n)]
    return BacktestResult(
        symbol="T",
        initial_cash=Decimal(1000),
        final_equity=Decimal(str(equity[-1])),
        fills=[],
        equity_ts=[i * step_ns for i in range(n)],
        equity=equity,
        position=[0] * n,
        periods_per_year=365.25 * 86_400e9 / step_ns,
    )


def test_ratios_of_a_short_window_are_na_with_the_reason() -> None:
    """Two minutes annualised read in the thousands: not reported, and the reason given."""
    short = analytics.summarize(_curve(120, 10**9), INST)
    assert short.sharpe is None and short.sortino is None
    assert short.ratio_note.startswith("n/a: 2 min of equity")
    curve = _curve(1440, 60 * 10**9)  # a day of 1-minute marks
    day = analytics.summarize(curve, INST)
    assert day.ratio_note == ""
    r = analytics.returns(curve.equity)
    assert day.sharpe == pytest.approx(analytics.sharpe(r, 365.25 * 1440))


def test_losses_below_zero_equity_stay_losses() -> None:
    """A ruined account's further losses are negative returns (dividing by the negative
    equity made them gains: a run at -377 % scored Sharpe +7.5)."""
    r = analytics.returns([100.0, 50.0, -50.0, -100.0, -150.0])
    assert list(r) == [-0.5, -2.0, -1.0, -0.5]
    assert analytics.sharpe(r, 365.0) < 0


def test_a_fixed_stake_the_equity_cannot_pay_is_no_trade() -> None:
    from sapphire.agents.bar_policy import StakeConfig, entry_lots

    stake = StakeConfig(stake_lots=10, initial_cash=Decimal(1000))
    assert entry_lots(stake, Decimal(1000), 100, INST) == 10  # 1,000 of notional: paid
    assert entry_lots(stake, Decimal(999), 100, INST) == 0  # short of it: no trade
    assert entry_lots(stake, Decimal(-5), 1, INST) == 0  # ruined
