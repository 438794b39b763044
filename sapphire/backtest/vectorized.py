"""Vectorized bar backtest: whole-frame signals, then one pass that turns them into fills.

Indicators and signals are computed on the whole polars frame at once. Turning signals into
positions is inherently sequential (the stop-loss depends on the entry price, sizing on
equity), so it is one loop calling the rules of :mod:`sapphire.agents.bar_policy`; it jumps
from one bar that can change the position to the next (entry signals when flat, exit signals
or the stop when in a position) and builds the equity curve in bulk afterwards, so its cost
grows with the number of trades rather than bars. Cash is Decimal and exact. A signal read at
bar ``i``'s close executes at bar ``i + 1``'s open through
:class:`~sapphire.backtest.bar_gateway.BarCosts`, exactly like the event-driven bar path, so
the two engines agree fill for fill.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
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
    """Signals (``enter_long``... columns next to ``*_ticks``) -> fills and equity curve.

    Only bars where :func:`next_state` can change the position are visited in Python: from
    flat, bars with an entry signal; in a position, the next exit signal or the first close
    through the stop (found with numpy). Every other bar keeps the state, so skipping it is
    exact. The equity curve is then built in bulk from the fills.
    """
    n = signals.height
    ts = signals["ts_event_ns"].to_numpy()
    opens_np = signals["open_ticks"].to_numpy()
    closes_np = signals["close_ticks"].to_numpy()
    flags = {c: signals[c].cast(pl.Boolean).fill_null(False).to_numpy() for c in _SIGNALS}
    el, xl, es, xs = (flags[c] for c in _SIGNALS)
    entries = el & ~xl
    if can_short:
        entries = entries | (es & ~xs)
    entry_bars: list[int] = np.flatnonzero(entries).tolist()
    exit_bars = {1: np.flatnonzero(xl).tolist(), -1: np.flatnonzero(xs).tolist()}
    closes_range = (int(closes_np.min()), int(closes_np.max())) if n else (0, 0)
    ledger = Ledger(instrument, stake.initial_cash)
    fill_bars: list[int] = []
    cash_after: list[float] = []
    orders = 0
    entry = 0
    state = 0
    i = startup
    next_progress = 0
    while i < n:
        j = _next_active(
            state, i, n, entry, stoploss, closes_np, closes_range, entry_bars, exit_bars
        )
        if j >= n:
            break
        if progress is not None and j >= next_progress:
            progress(j)
            next_progress = j + 4096
        close = int(closes_np[j])
        new = next_state(
            state,
            entry,
            close,
            bool(el[j]),
            bool(xl[j]),
            bool(es[j]),
            bool(xs[j]),
            stoploss,
            can_short,
        )
        i = j + 1
        if new == state:
            continue
        pos = ledger.position
        target = 0
        if new != 0:
            target = new * entry_lots(stake, ledger.equity_at(close), close, instrument)
        pending = target - pos
        if not pending:
            continue
        orders += 1
        if i >= n:
            break  # decided on the last bar: never executes
        side = Side.BUY if pending > 0 else Side.SELL
        open_ticks = int(opens_np[i])
        price = costs.fill_price_ticks(open_ticks, side)
        fee = costs.fee_quote(instrument, price, abs(pending))
        ledger.apply(
            int(ts[i]), side, price, abs(pending), fee, is_maker=False, ref_ticks=open_ticks
        )
        fill_bars.append(i)
        cash_after.append(ledger.cash_float)
        after = ledger.position
        if after != 0 and (pos == 0 or (pos > 0) != (after > 0)):
            entry = price
        state = (after > 0) - (after < 0)
    # each point marks a bar's close, when it is known (the event engine and the kernel mark
    # it then too); the fills above stay at the next bar's open, as traded
    closed = ts + signals["interval_ns"].to_numpy() if "interval_ns" in signals.columns else ts
    _equity_curve(ledger, closed, closes_np, fill_bars, cash_after)
    periods = 0.0
    interval = int(signals["interval_ns"][-1]) if n and "interval_ns" in signals.columns else 0
    if interval > 0:
        # the bar rate, as the event engine (missing candles do not stretch a bar: the
        # mean spacing did, and the two engines gave the same trades different Sharpes)
        periods = NS_PER_YEAR / interval
    elif n > 1:
        periods = NS_PER_YEAR / ((int(ts[-1]) - int(ts[0])) / (n - 1))
    return ledger.result(
        int(closes_np[-1]) if n else 0,
        orders_submitted=orders,
        orders_filled=len(ledger.fills),
        events=n,
        periods_per_year=periods,
    )


_SIGNALS = ("enter_long", "exit_long", "enter_short", "exit_short")


def _next_active(
    state: int,
    start: int,
    n: int,
    entry: int,
    stoploss: float,
    closes: npt.NDArray[np.int64],
    closes_range: tuple[int, int],
    entry_bars: list[int],
    exit_bars: dict[int, list[int]],
) -> int:
    """First bar >= ``start`` where ``next_state`` may leave ``state`` (``n`` if none)."""
    if state == 0:
        k = bisect_left(entry_bars, start)
        return entry_bars[k] if k < len(entry_bars) else n
    exits = exit_bars[state]
    k = bisect_left(exits, start)
    end = exits[k] if k < len(exits) else n
    # The same comparisons as next_state: an int close against a float level (exact for
    # ticks below 2**53, which numpy's int64 -> float64 keeps).
    if state == 1:
        level = entry * (1.0 + stoploss)
        if closes_range[0] > level:
            return end
        hit = closes[start:end] <= level
    else:
        level = entry * (1.0 - stoploss)
        if closes_range[1] < level:
            return end
        hit = closes[start:end] >= level
    first = int(np.argmax(hit)) if hit.size else 0
    return start + first if hit.size and hit[first] else end


def _equity_curve(
    ledger: Ledger,
    ts: npt.NDArray[np.int64],
    closes: npt.NDArray[np.int64],
    fill_bars: list[int],
    cash_after: list[float],
) -> None:
    """Mark every close at once, the same float formula as ``Ledger.equity_float``."""
    n = ts.size
    bounds = np.asarray([0, *fill_bars, n], dtype=np.int64)
    lengths = np.diff(bounds)
    positions = np.repeat(
        np.asarray([0, *(f.position_after for f in ledger.fills)], dtype=np.int64), lengths
    )
    cash = np.asarray([float(ledger.initial_cash), *cash_after], dtype=np.float64)
    cash_arr = np.repeat(cash, lengths)
    peak = int(np.abs(closes).max(initial=0)) * int(np.abs(positions).max(initial=0))
    if peak < 2**62:
        equity = cash_arr + (closes * positions).astype(np.float64) * ledger.unit_float
        equity_list: list[float] = equity.tolist()
    else:  # products past int64: Python ints, as Ledger.equity_float does
        unit = ledger.unit_float
        equity_list = [
            c if not p else c + float(int(x) * int(p)) * unit
            for c, x, p in zip(cash_arr.tolist(), closes.tolist(), positions.tolist(), strict=True)
        ]
    ledger.equity_ts = ts.tolist()
    ledger.equity = equity_list
    ledger.positions = positions.tolist()
