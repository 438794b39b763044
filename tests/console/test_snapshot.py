"""The console's pure parts: the thinned equity curve, totals per settlement unit, run mode."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from sapphire.console.snapshot import AgentRow, EquityCurve, EquityPoint, run_mode, unit_totals


def test_equity_curve_keeps_the_whole_run_in_bounded_points_and_ends_at_now() -> None:
    curve = EquityCurve(max_points=10)
    for t in range(1, 1001):
        curve.add(t, Decimal(t) / 4)
    points = curve.view()
    assert len(points) <= 11
    assert points[0] == EquityPoint(1, "0.25000000"), "the start of the run is kept"
    assert points[-1] == EquityPoint(1000, "250.00000000"), "the curve ends at the last step"
    times = [p.ts_ns for p in points]
    assert times == sorted(set(times))
    gaps = {b - a for a, b in itertools.pairwise(times[:-1])}
    assert len(gaps) == 1, "kept points are evenly spaced"


def test_equity_curve_ignores_a_replayed_step() -> None:
    curve = EquityCurve(max_points=4)
    curve.add(5, Decimal(1))
    curve.add(5, Decimal(2))  # the same step again, after a restart
    curve.add(3, Decimal(3))
    assert curve.view() == [EquityPoint(5, "1.00000000")]
    with pytest.raises(ValueError):
        EquityCurve(max_points=1)


def _row(key: str, unit: str, pnl: str, open_orders: int = 0) -> AgentRow:
    agent, symbol = key.split("/")
    return AgentRow(
        key=key,
        agent_id=agent,
        symbol=symbol,
        unit=unit,
        position_lots=1,
        traded_lots=1,
        open_orders=open_orders,
        open_lots=open_orders,
        filled_orders=1,
        realized=pnl,
        unrealized="0.1",
        fees="0.00000001",
        pnl=pnl,
    )


def test_totals_are_exact_and_per_settlement_unit() -> None:
    rows = [
        _row("a/BTCUSDT", "USDT", "0.1", 2),
        _row("b/BTCUSDT", "USDT", "0.2", 1),
        _row("c/BTCUSD_PERP", "BTC", "-0.00000003"),
    ]
    totals = {t.unit: t for t in unit_totals(rows)}
    assert set(totals) == {"USDT", "BTC"}, "a coin and a quote are never added up"
    assert totals["USDT"].pnl == "0.30000000"  # Decimal: no 0.30000000000000004
    assert totals["USDT"].fees == "0.00000002"
    assert totals["USDT"].open_orders == 3
    assert totals["BTC"].pnl == "-0.00000003"


def test_run_mode() -> None:
    assert run_mode("paper", "sample") == "replay"
    assert run_mode("paper", "files") == "replay"
    assert run_mode("paper", "ccxt") == "paper"
    assert run_mode("ccxt", "ccxt") == "live"
    assert run_mode("ccxt", "sample", custom_venue=True) == "replay"
