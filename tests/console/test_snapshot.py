"""The console's pure parts: the thinned equity curve, totals per settlement unit, run mode."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal

import msgspec
import pytest

from sapphire.console.snapshot import AgentRow, EquityCurve, EquityPoint, run_mode, unit_totals


def test_equity_curve_keeps_the_whole_run_in_bounded_points_and_ends_at_now() -> None:
    curve = EquityCurve(max_points=10)
    asked: list[int] = []

    def pnl_at(t: int) -> Callable[[], Decimal]:
        return lambda: asked.append(t) or Decimal(t) / 4

    for t in range(1, 1001):
        curve.add(t, pnl_at(t))
    points = curve.view(Decimal(1000) / 4)
    assert len(points) <= 11
    assert points[0] == EquityPoint(1, "0.25000000"), "the start of the run is kept"
    assert points[-1] == EquityPoint(1000, "250.00000000"), "the curve ends at the last step"
    times = [p.ts_ns for p in points]
    assert times == sorted(set(times))
    gaps = {b - a for a, b in itertools.pairwise(times[:-1])}
    assert len(gaps) == 1, "kept points are evenly spaced"
    # the PnL is computed for the points kept at the time, not for every step
    assert set(times[:-1]) <= set(asked) and 1000 not in asked
    assert len(asked) < 50  # of 1,000 steps (10 kept, each thinning keeps 5 more)
    assert {p.pnl for p in points[:-1]} == {f"{Decimal(t) / 4:.8f}" for t in times[:-1]}


def test_equity_curve_ignores_a_replayed_step() -> None:
    curve = EquityCurve(max_points=4)
    curve.add(5, lambda: Decimal(1))
    curve.add(5, lambda: Decimal(2))  # the same step again, after a restart
    curve.add(3, lambda: Decimal(3))
    assert curve.view(Decimal(7)) == [EquityPoint(5, "1.00000000")]
    for t in (6, 7, 8, 9):  # five points in four: every other one is kept from here
        curve.add(t, lambda: Decimal(9))
    curve.add(10, lambda: Decimal(9))  # not kept: the view still ends at it, at now's PnL
    assert curve.view(Decimal(8))[-2:] == [
        EquityPoint(9, "9.00000000"),
        EquityPoint(10, "8.00000000"),
    ]
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


def test_a_perps_funding_is_a_column_and_the_columns_add_up_to_its_pnl() -> None:
    """Funding is part of an agent's PnL: the console showed realised, unrealised and fees
    only, so a perp's row did not add up to its PnL (the run summary had the funding)."""
    from sapphire.console.snapshot import KillSwitchView, build_snapshot
    from sapphire.coordination.core import CoordinatorCore
    from sapphire.kernel.coordinator import CoordinatorStage
    from sapphire.kernel.rows import StepRows
    from sapphire.kernel.timing import Timing
    from sapphire.model import Instrument, Side
    from sapphire.model.events import FundingRate
    from sapphire.model.instrument import InstrumentKind
    from sapphire.model.orders import SubmitOrder
    from sapphire.risk.limits import RiskLimits
    from tests.coordination.test_core import QUOTE, buy, filled

    perp = Instrument(
        symbol="BTCUSDT", kind=InstrumentKind.PERPETUAL, tick_size="0.1", lot_size="0.001"
    )
    core = CoordinatorCore(
        {"BTCUSDT": perp}, RiskLimits(), Decimal("1000000"), {"a": 1.0, "b": 1.0}
    )
    long_ = core.step([QUOTE], [], {"a": [buy("a", 1, qty=5)]}, 2).commands[0]
    sell = msgspec.structs.replace(buy("b", 1, qty=2), side=Side.SELL, limit_ticks=600_010)
    short = core.step([], [], {"b": [sell]}, 3).commands[0]
    assert isinstance(long_, SubmitOrder) and isinstance(short, SubmitOrder)
    core.step([], [filled(long_, 599_990, "x1"), filled(short, 600_010, "x2")], {}, 4)
    core.step([FundingRate(ts_event_ns=10, symbol="BTCUSDT", rate="0.01")], [], {}, 10)
    stage = CoordinatorStage(core, Timing(), StepRows("r", "p", instruments={"BTCUSDT": perp}))
    switch = KillSwitchView(run_tripped=False)
    snap = build_snapshot(
        stage, run_id="r", mode="replay", step=1, market_ns=10, done=True,
        capital_quote="1000000", equity=EquityCurve(), kill_switch=switch,
    )  # fmt: skip
    rows = {r.agent_id: r for r in snap.agents}
    assert rows["a"].funding == "-3.00000000" and rows["b"].funding == "1.20000000"
    for row in [*snap.agents, *snap.totals]:
        parts = Decimal(row.realized) + Decimal(row.unrealized) - Decimal(row.fees)
        assert parts + Decimal(row.funding) == Decimal(row.pnl), row
    assert snap.totals[0].funding == "-1.80000000"
