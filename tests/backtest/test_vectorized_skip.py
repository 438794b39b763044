"""The vectorized engine visits only bars that can change the position; that must be exact.

Reference: the straightforward loop over every bar (the engine's former body), the same
rules from ``bar_policy`` and the same costs, compared fill for fill and mark for mark.
"""

from __future__ import annotations

from decimal import Decimal

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.agents.bar_policy import StakeConfig, entry_lots, next_state
from sapphire.backtest.bar_gateway import BarCosts
from sapphire.backtest.ledger import BacktestResult, Ledger
from sapphire.backtest.vectorized import run_signals
from sapphire.model import Instrument, Side

INST = Instrument(symbol="T", tick_size="0.01", lot_size="0.001")
SIGNALS = ("enter_long", "exit_long", "enter_short", "exit_short")


def every_bar(
    frame: pl.DataFrame,
    costs: BarCosts,
    stake: StakeConfig,
    startup: int,
    stoploss: float,
    can_short: bool,
) -> BacktestResult:
    ts = frame["ts_event_ns"].to_list()
    opens, closes = frame["open_ticks"].to_list(), frame["close_ticks"].to_list()
    flags = [frame[c].cast(pl.Boolean).to_list() for c in SIGNALS]
    ledger = Ledger(INST, stake.initial_cash)
    pending = entry = 0
    for i in range(len(ts)):
        if pending:
            side = Side.BUY if pending > 0 else Side.SELL
            before = ledger.position
            price = costs.fill_price_ticks(opens[i], side)
            fee = costs.fee_quote(INST, price, abs(pending))
            ledger.apply(ts[i], side, price, abs(pending), fee, is_maker=False, ref_ticks=opens[i])
            after = ledger.position
            if after != 0 and (before == 0 or (before > 0) != (after > 0)):
                entry = price
            pending = 0
        ledger.mark(ts[i], closes[i])
        if i < startup:
            continue
        pos = ledger.position
        state = (pos > 0) - (pos < 0)
        el, xl, es, xs = (f[i] for f in flags)
        new = next_state(state, entry, closes[i], el, xl, es, xs, stoploss, can_short)
        if new != state:
            target = 0
            if new != 0:
                target = new * entry_lots(stake, ledger.equity_at(closes[i]), closes[i], INST)
            pending = target - pos
    return ledger.result(closes[-1])


bar_lists = st.integers(min_value=2, max_value=120).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(9_000, 11_000), min_size=n, max_size=n),
        st.lists(st.integers(9_000, 11_000), min_size=n, max_size=n),
        *(st.lists(st.booleans(), min_size=n, max_size=n) for _ in SIGNALS),
    )
)


@settings(max_examples=150, deadline=None)
@given(
    bars=bar_lists,
    startup=st.integers(0, 10),
    stoploss=st.sampled_from([-1.0, -0.5, -0.05, -0.01]),
    can_short=st.booleans(),
    fraction=st.sampled_from([None, 0.3, 1.0]),
)
def test_skipping_quiet_bars_gives_the_every_bar_result(
    bars: tuple[list[int], ...],
    startup: int,
    stoploss: float,
    can_short: bool,
    fraction: float | None,
) -> None:
    opens, closes, *signals = bars
    frame = pl.DataFrame(
        {
            "ts_event_ns": [i * 60_000_000_000 for i in range(len(opens))],
            "open_ticks": opens,
            "close_ticks": closes,
            **{name: [int(v) for v in col] for name, col in zip(SIGNALS, signals, strict=True)},
        }
    )
    costs = BarCosts(fee_bps=Decimal(10), slippage_bps=Decimal(3))
    stake = (
        StakeConfig(stake_lots=1500, initial_cash=Decimal(1_000))
        if fraction is None
        else StakeConfig(stake_fraction=fraction, initial_cash=Decimal(1_000))
    )
    fast = run_signals(
        frame, INST, costs, stake, startup=startup, stoploss=stoploss, can_short=can_short
    )
    ref = every_bar(frame, costs, stake, startup, stoploss, can_short)
    assert fast.fills == ref.fills
    assert fast.equity == ref.equity
    assert fast.position == ref.position
    assert fast.equity_ts == ref.equity_ts
    assert fast.final_equity == ref.final_equity
    assert fast.orders_filled == len(ref.fills)


def test_stop_found_between_sparse_exit_signals() -> None:
    # long from bar 1; no exit signal at all; the close at bar 4 breaks the 5 % stop.
    closes = [10_000, 10_000, 10_100, 9_700, 9_400, 9_300, 9_200]
    frame = pl.DataFrame(
        {
            "ts_event_ns": list(range(7)),
            "open_ticks": closes,
            "close_ticks": closes,
            "enter_long": [1, 0, 0, 0, 0, 0, 0],
            "exit_long": [0] * 7,
            "enter_short": [0] * 7,
            "exit_short": [0] * 7,
        }
    )
    res = run_signals(frame, INST, BarCosts(), StakeConfig(stake_lots=1000), stoploss=-0.05)
    # entry at bar 1's open 10000; stop level 9500; close 9400 at bar 4 -> sell at bar 5 open
    assert [(f.ts_event_ns, f.side) for f in res.fills] == [(1, Side.BUY), (5, Side.SELL)]
    assert res.position == [0, 1000, 1000, 1000, 1000, 0, 0]
