"""Performance statistics of a :class:`~sapphire.backtest.ledger.BacktestResult`.

Conventions (stated once):

* Returns are simple returns of the equity curve between consecutive marks.
* Sharpe = mean / std (ddof=1) of those returns x sqrt(periods per year); Sortino uses the
  downside deviation sqrt(mean(min(r, 0)^2)) instead of the std. Risk-free rate 0. Years
  are 365.25 days (crypto trades every day). ``periods_per_year`` is the bar rate for bar
  backtests and the mean marking rate for event backtests.
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


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    initial_equity: float
    final_equity: float
    total_return: float
    sharpe: float
    sortino: float
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


def returns(equity: list[float]) -> npt.NDArray[np.float64]:
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size < 2:
        return np.zeros(0)
    prev = eq[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev != 0, np.diff(eq) / prev, 0.0)
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
    r = returns(result.equity)
    initial = float(result.initial_cash)
    final = float(result.final_equity)
    traded = sum(float(inst.notional_quote(f.price_ticks, f.qty_lots)) for f in result.fills)
    mean_equity = float(np.mean(result.equity)) if result.equity else initial
    trips = round_trip_pnls(result, inst)
    maker = [f for f in result.fills if f.is_maker and f.ref_ticks > 0]
    captured = [int(f.side) * (f.ref_ticks - f.price_ticks) / f.ref_ticks * 1e4 for f in maker]
    inv = np.asarray(result.position, dtype=np.float64)
    return Summary(
        initial_equity=initial,
        final_equity=final,
        total_return=final / initial - 1.0 if initial else 0.0,
        sharpe=sharpe(r, result.periods_per_year),
        sortino=sortino(r, result.periods_per_year),
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
    )
