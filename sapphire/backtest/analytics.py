"""Performance statistics of a :class:`~sapphire.backtest.ledger.BacktestResult`.

Conventions (stated once):

* Returns are simple returns of the equity curve between consecutive marks.
* Sharpe = mean / std (ddof=1) of those returns x sqrt(periods per year); Sortino uses the
  downside deviation sqrt(mean(min(r, 0)^2)) instead of the std. Risk-free rate 0. Years
  are 365.25 days (crypto trades every day). ``periods_per_year`` is the bar rate for bar
  backtests and the mean marking rate for event backtests.
* Annualised ratios are only reported where the equity curve spans at least
  ``MIN_RATIO_SPAN_NS`` (one day) with ``MIN_RATIO_RETURNS`` returns: a two-minute window
  scaled to a year reads in the thousands and says nothing. Otherwise they are ``None``
  and ``ratio_note`` gives the reason (reports print "n/a" with it).
* Max drawdown is the largest peak-to-trough fall of equity, as a positive fraction.
* Turnover is traded notional / mean equity. Hit rate is the share of round trips (a
  position returning to flat or flipping) with positive PnL net of fees.
* Fill ratio is completely filled orders / orders submitted. Spread captured (bps) is, over
  maker fills, the mean of ``side * (ref - price) / ref`` with ``ref`` the mid at the fill.
"""

from __future__ import annotations

import math
from decimal import Decimal

import msgspec
import numpy as np
import numpy.typing as npt

from sapphire.backtest.ledger import BacktestResult
from sapphire.model.instrument import Instrument

# Below these an annualised Sharpe/Sortino is noise scaled by sqrt(periods per year).
MIN_RATIO_SPAN_NS = 86_400 * 10**9
MIN_RATIO_RETURNS = 30
NS_PER_YEAR = 365.25 * 86_400 * 1e9


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    initial_equity: float
    final_equity: float
    total_return: float
    sharpe: float | None  # None: the window is too short to annualise (ratio_note says why)
    sortino: float | None
    max_drawdown: float
    fills: int
    round_trips: int
    hit_rate: float
    turnover: float
    fill_ratio: float
    fees: float
    maker_fills: int
    spread_captured_bps: float
    inventory_mean: float
    inventory_abs_max: int
    inventory_std: float
    orders_submitted: int
    orders_rejected: int
    events: int
    span_ns: int = 0  # first to last equity mark
    ratio_note: str = ""


def ratio_note(equity_ts: list[int], n_returns: int) -> str:
    """Why annualised ratios of this curve are not meaningful ("" when they are)."""
    n = len(equity_ts)
    # first to last mark plus one mean period: a day of 1-minute bars covers a day
    span = (equity_ts[-1] - equity_ts[0]) * n // (n - 1) if n >= 2 else 0
    if span >= MIN_RATIO_SPAN_NS and n_returns >= MIN_RATIO_RETURNS:
        return ""
    return (
        f"n/a: {format_span(span)} of equity, {n_returns} returns "
        f"(annualising needs >= {format_span(MIN_RATIO_SPAN_NS)} and {MIN_RATIO_RETURNS})"
    )


def format_span(ns: int) -> str:
    s = ns / 1e9
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 86_400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86_400:.1f} days"


def returns(equity: list[float]) -> npt.NDArray[np.float64]:
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size < 2:
        return np.zeros(0)
    prev = eq[:-1]
    # over |previous equity|: below zero (a ruined account) a further loss stays a negative
    # return (dividing by the negative equity turned every loss into a gain)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev != 0, np.diff(eq) / np.abs(prev), 0.0)
    return np.nan_to_num(r)


def sharpe(r: npt.NDArray[np.float64], periods_per_year: float) -> float:
    if r.size < 2:
        return 0.0
    std = float(r.std(ddof=1))
    return 0.0 if std == 0 else float(r.mean()) / std * math.sqrt(periods_per_year)


def sortino(r: npt.NDArray[np.float64], periods_per_year: float) -> float:
    if r.size < 2:
        return 0.0
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    return 0.0 if downside == 0 else float(r.mean()) / downside * math.sqrt(periods_per_year)


CALMAR_DRAWDOWN_FLOOR = 1e-6
"""The drawdown a Calmar ratio divides by at least (a millionth of the peak)."""


def calmar(total_return: float, max_drawdown: float) -> float:
    """A window's return over its maximum drawdown (both fractions; not annualised: tune
    windows are minutes to days). A gain with no drawdown divides by the floor, so it ranks
    above every gain that dipped instead of tying with not trading (it scored 0)."""
    return total_return / max(max_drawdown, CALMAR_DRAWDOWN_FLOOR)


def max_drawdown(equity: list[float]) -> float:
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size == 0:
        return 0.0
    peak = np.maximum.accumulate(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, (peak - eq) / peak, 0.0)
    return float(dd.max())


def round_trip_pnls(result: BacktestResult, inst: Instrument) -> list[Decimal]:
    """Net PnL of each round trip (flat -> flat, a flip closes one and opens the next)."""
    pnls: list[Decimal] = []
    cash = Decimal(0)
    position = 0
    for fill in result.fills:
        before = position
        notional = inst.notional_quote(fill.price_ticks, fill.qty_lots)
        signed = int(fill.side) * fill.qty_lots
        after = before + signed
        if before != 0 and (after == 0 or (after > 0) != (before > 0)):
            # Split a flip: the closing part ends this round trip at the fill price.
            close_part = abs(before)
            frac = Decimal(close_part) / Decimal(fill.qty_lots)
            cash += (-notional if signed > 0 else notional) * frac - fill.fee_quote * frac
            pnls.append(cash)
            cash = (-notional if signed > 0 else notional) * (1 - frac) - fill.fee_quote * (
                1 - frac
            )
        else:
            cash += (-notional if signed > 0 else notional) - fill.fee_quote
        position = after
    return pnls


def summarize(result: BacktestResult, inst: Instrument) -> Summary:
    start = min(result.scored_from, max(len(result.equity) - 1, 0))
    scored, scored_ts = result.equity[start:], result.equity_ts[start:]
    r = returns(scored)
    initial = float(result.initial_cash)
    final = float(result.final_equity)
    traded = sum(float(inst.notional_quote(f.price_ticks, f.qty_lots)) for f in result.fills)
    mean_equity = float(np.mean(result.equity)) if result.equity else initial
    trips = round_trip_pnls(result, inst)
    maker = [f for f in result.fills if f.is_maker and f.ref_ticks > 0]
    captured = [int(f.side) * (f.ref_ticks - f.price_ticks) / f.ref_ticks * 1e4 for f in maker]
    inv = np.asarray(result.position, dtype=np.float64)
    note = ratio_note(scored_ts, int(r.size))
    return Summary(
        initial_equity=initial,
        final_equity=final,
        total_return=final / initial - 1.0 if initial else 0.0,
        sharpe=None if note else sharpe(r, result.periods_per_year),
        sortino=None if note else sortino(r, result.periods_per_year),
        max_drawdown=max_drawdown(result.equity),
        fills=len(result.fills),
        round_trips=len(trips),
        hit_rate=sum(1 for p in trips if p > 0) / len(trips) if trips else 0.0,
        turnover=traded / mean_equity if mean_equity else 0.0,
        fill_ratio=(
            result.orders_filled / result.orders_submitted if result.orders_submitted else 0.0
        ),
        fees=float(sum((f.fee_quote for f in result.fills), Decimal(0))),
        maker_fills=len(maker),
        spread_captured_bps=float(np.mean(captured)) if captured else 0.0,
        inventory_mean=float(inv.mean()) if inv.size else 0.0,
        inventory_abs_max=int(np.abs(inv).max()) if inv.size else 0,
        inventory_std=float(inv.std()) if inv.size else 0.0,
        orders_submitted=result.orders_submitted,
        orders_rejected=result.orders_rejected,
        events=result.events,
        span_ns=result.equity_ts[-1] - result.equity_ts[0] if result.equity_ts else 0,
        ratio_note=note,
    )
