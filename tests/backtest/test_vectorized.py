from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.agents.bar_policy import StakeConfig, entry_lots, next_state
from sapphire.backtest.bar_gateway import BarCosts
from sapphire.backtest.vectorized import run_signals
from sapphire.model import Instrument, Side

INST = Instrument(symbol="T", tick_size="0.01", lot_size="0.001")


def frame(opens: list[int], closes: list[int], enter: list[int], exit_: list[int]) -> pl.DataFrame:
    n = len(opens)
    return pl.DataFrame(
        {
            "ts_event_ns": [i * 60_000_000_000 for i in range(n)],
            "open_ticks": opens,
            "close_ticks": closes,
            "enter_long": enter,
            "exit_long": exit_,
            "enter_short": [0] * n,
            "exit_short": [0] * n,
        }
    )


def test_signals_execute_next_open_with_slippage_and_fees_worked_by_hand() -> None:
    # enter on bar 0's close, exit on bar 2's close; 1000 lots = 1 unit.
    bars = frame(
        [10_000, 10_100, 10_200, 10_300],
        [10_050, 10_150, 10_250, 10_350],
        [1, 0, 0, 0],
        [0, 0, 1, 0],
    )
    costs = BarCosts(fee_bps=Decimal(10), slippage_bps=Decimal(5))
    res = run_signals(bars, INST, costs, StakeConfig(stake_lots=1000, initial_cash=Decimal(10_000)))
    # buy at 10100 * 1.0005 = 10105.05 -> 10106 ticks (rounded against us) = 101.06
    # sell at 10300 * 0.9995 = 10294.85 -> 10294 ticks = 102.94
    assert [(f.side, f.price_ticks, f.qty_lots) for f in res.fills] == [
        (Side.BUY, 10_106, 1000),
        (Side.SELL, 10_294, 1000),
    ]
    # fees 10 bps: 0.10106 + 0.10294; PnL 102.94 - 101.06 = 1.88
    assert res.fills[0].fee_quote == Decimal("0.10106")
    assert res.final_equity == Decimal("10001.676")
    # marked at each close: bar 1 long 1 unit at 101.50 -> 10000 - 101.06 - 0.10106 + 101.50
    assert res.equity[1] == pytest.approx(10_000.33894)


def test_stoploss_exits_on_close_below_entry_and_does_not_reenter_same_bar() -> None:
    assert next_state(1, 10_000, 8_999, True, False, False, False, -0.10, False) == 0
    assert next_state(1, 10_000, 9_001, True, False, False, False, -0.10, False) == 1
    assert next_state(0, 0, 9_001, True, True, False, False, -0.10, False) == 0
    assert next_state(1, 10_000, 10_000, False, True, True, False, -0.10, True) == -1


def test_entry_lots_with_fraction_floors_to_whole_lots() -> None:
    stake = StakeConfig(stake_fraction=0.5, initial_cash=Decimal(1000))
    # 1000 * 0.5 = 500 quote; one lot at 123.45 costs 0.12345 -> 4050.2 -> 4050 lots
    assert entry_lots(stake, Decimal(1000), 12_345, INST) == 4050
    with pytest.raises(ValueError, match="exactly one"):
        StakeConfig(stake_lots=1, stake_fraction=0.5)


@given(
    state=st.sampled_from([-1, 0, 1]),
    entry=st.integers(1, 10**6),
    close=st.integers(1, 10**6),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    stoploss=st.floats(-1.0, -0.001),
    can_short=st.booleans(),
)
def test_next_state_stays_in_range_and_respects_can_short(
    state: int,
    entry: int,
    close: int,
    flags: tuple[bool, bool, bool, bool],
    stoploss: float,
    can_short: bool,
) -> None:
    new = next_state(state, entry, close, *flags, stoploss, can_short)
    assert new in (-1, 0, 1)
    if new == -1 and state != -1:
        assert can_short and flags[2] and not flags[3]
    if new == 1 and state != 1:
        assert flags[0] and not flags[1]
