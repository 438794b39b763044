"""Vectorized bar backtest: whole-frame signals, then one pass that turns them into fills.

Indicators and signals are computed on the whole polars frame at once. Turning signals into
positions is inherently sequential (the stop-loss depends on the entry price, sizing on
equity), so it is one tight loop over numpy arrays calling the rules of
:mod:`sapphire.agents.bar_policy`; cash is Decimal and exact. A signal read at bar ``i``'s
close executes at bar ``i + 1``'s open through :class:`~sapphire.backtest.bar_gateway.BarCosts`,
exactly like the event-driven bar path, so the two engines agree fill for fill.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from sapphire.agents.bar_policy import StakeConfig, entry_lots, next_state
from sapphire.agents.indicator import IndicatorStrategy, compute_signals
from sapphire.backtest.bar_gateway import BarCosts
from sapphire.backtest.ledger import BacktestResult, Ledger
from sapphire.model.events import Side
from sapphire.model.instrument import Instrument

NS_PER_YEAR = 365.25 * 24 * 3600 * 1e9


def run_vectorized(
    strategy: IndicatorStrategy,
    bars: pl.DataFrame,
    instrument: Instrument,
    costs: BarCosts,
    stake: StakeConfig,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Backtest ``strategy`` on a tick frame (see ``_loaders.tick_frame``)."""
    return run_signals(
        compute_signals(strategy, bars),
        instrument,
        costs,
        stake,
        startup=strategy.startup_candle_count,
        stoploss=strategy.stoploss,
        can_short=strategy.can_short,
        progress=progress,
    )


def run_signals(
    signals: pl.DataFrame,
    instrument: Instrument,
    costs: BarCosts,
    stake: StakeConfig,
    *,
    startup: int = 0,
    stoploss: float = -1.0,
    can_short: bool = False,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Signals (``enter_long``... columns next to ``*_ticks``) -> fills and equity curve."""
    ts = signals["ts_event_ns"].to_list()
    opens = signals["open_ticks"].to_list()
    closes = signals["close_ticks"].to_list()
    el = signals["enter_long"].cast(pl.Boolean).to_list()
    xl = signals["exit_long"].cast(pl.Boolean).to_list()
    es = signals["enter_short"].cast(pl.Boolean).to_list()
    xs = signals["exit_short"].cast(pl.Boolean).to_list()
    ledger = Ledger(instrument, stake.initial_cash)
    pending = 0  # signed lots to execute at the next open
    entry = 0
    n = len(ts)
    for i in range(n):
        if pending:
            side = Side.BUY if pending > 0 else Side.SELL
            before = ledger.position
            price = costs.fill_price_ticks(opens[i], side)
            fee = costs.fee_quote(instrument, price, abs(pending))
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
        new = next_state(state, entry, closes[i], el[i], xl[i], es[i], xs[i], stoploss, can_short)
        if new != state:
            target = 0
            if new != 0:
                equity = ledger.equity_at(closes[i])
                target = new * entry_lots(stake, equity, closes[i], instrument)
            pending = target - pos
        if progress is not None and i % 4096 == 0:
            progress(i)
    periods = 0.0
    if n > 1:
        periods = NS_PER_YEAR / ((ts[-1] - ts[0]) / (n - 1))
    orders = sum(1 for _ in ledger.fills) + (1 if pending else 0)
    return ledger.result(
        closes[-1] if n else 0,
        orders_submitted=orders,
        orders_filled=len(ledger.fills),
        events=n,
        periods_per_year=periods,
    )
