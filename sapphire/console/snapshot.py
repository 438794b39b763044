"""What the live console shows, built from the coordinator stage's own state.

Nothing here keeps books of its own: every figure is read from the stage's summary and its
order journal at the moment of the request, so the page and ``sapphire run``'s end-of-run
summary are the same numbers. The equity curve is the one exception that needs history; it is
a thinned sample of the firm PnL the stage reports after each step (for display only; the
stored ``pnl`` table remains the record).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import msgspec

from sapphire.kernel.coordinator import CoordinatorStage, money


class AgentRow(msgspec.Struct, frozen=True, kw_only=True):
    """One agent on one symbol; money in ``unit`` (the instrument's settlement asset)."""

    key: str  # "agent/symbol", as in the run summary
    agent_id: str
    symbol: str
    unit: str
    position_lots: int
    traded_lots: int
    open_orders: int
    open_lots: int  # leaves of the open orders
    filled_orders: int  # orders with at least one fill
    realized: str
    unrealized: str
    fees: str
    pnl: str
    pnl_at_mark: str = ""  # an inverse contract's coin PnL valued in its quote
    # funding received (+) or paid (-): part of pnl, so realized + unrealized - fees +
    # funding = pnl (without it a perp's columns did not add up to its PnL)
    funding: str = "0"
    quarantined: str = ""


class UnitTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Firm totals in one settlement unit (rows in different units are never added up)."""

    unit: str
    open_orders: int
    realized: str
    unrealized: str
    fees: str
    pnl: str
    funding: str = "0"


class KillSwitchView(msgspec.Struct, frozen=True, kw_only=True):
    """The run's switch (the risk engine's) and the firm's (the store root's, shared by runs)."""

    run_tripped: bool
    run_reason: str = ""
    requested: str = ""  # asked for; takes effect at the start of the next step
    firm_tripped: bool = False
    firm_reason: str = ""
    firm_by: str = ""
    firm_ts_ns: int = 0
    # this run's own stop request (``sapphire stop RUN_ID``): a console reset does not lift
    # it (its operator command does), and while it stands the run halts again
    stop_reason: str = ""


class EquityPoint(msgspec.Struct, frozen=True, array_like=True):
    ts_ns: int
    pnl: str


class ConsoleSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    mode: str  # replay | paper | live
    step: int  # the last step run (-1: none yet)
    market_ns: int  # the end of that step's window on the run's clock
    done: bool
    failure: str
    capital_quote: str
    firm_pnl_quote: str  # in firm_pnl_asset, each settlement asset converted at its mark
    fills: int
    orders: int
    open_orders: int
    orders_by_status: dict[str, int]
    risk_denials: dict[str, int]  # pre-trade risk refusals, by reason
    venue_rejections: dict[str, int]  # the venue's refusals, by reason
    agents: list[AgentRow]
    totals: list[UnitTotals]
    kill_switch: KillSwitchView
    equity: list[EquityPoint]
    firm_pnl_asset: str = ""  # the firm's reporting currency (the asset of capital_quote)
    # settlement assets left out of firm_pnl_quote: no conversion mark yet (empty: complete)
    firm_pnl_missing: list[str] = msgspec.field(default_factory=list)


class EquityCurve:
    """At most ``max_points`` (time, firm PnL) points over the whole run: when full, every
    other point is dropped and the spacing doubles, so a long run keeps its whole shape in
    bounded memory and a bounded page. A step's PnL is computed only for a point kept, and
    the latest step's when the curve is viewed: the firm's PnL (every position marked, in
    Decimal) cost the Ray coordinator ~54 us a step on 2 cores, for 1 step in ``stride``."""

    def __init__(self, max_points: int = 1000) -> None:
        if max_points < 2:
            raise ValueError("an equity curve needs at least 2 points")
        self.max_points = max_points
        self.points: list[EquityPoint] = []
        self._stride = 1
        self._seen = 0
        self._last_ns: int | None = None  # the latest step's time, kept or not

    def add(self, ts_ns: int, pnl: Callable[[], Decimal]) -> None:
        """The step ending at ``ts_ns``; ``pnl()`` is the firm's PnL then, asked only for a
        point kept (the state it reads is the step's own while this runs)."""
        if self._last_ns is not None and ts_ns <= self._last_ns:
            return  # a replayed step (a restart): time only moves on
        self._seen += 1
        self._last_ns = ts_ns
        if (self._seen - 1) % self._stride:
            return
        self.points.append(EquityPoint(ts_ns, money(pnl())))
        if len(self.points) > self.max_points:
            self.points = self.points[::2]
            self._stride *= 2

    def view(self, pnl_now: Decimal) -> list[EquityPoint]:
        """The kept points and the latest step's, at ``pnl_now`` (the firm's PnL as the
        view is taken: the curve always ends at now, at the figure the console shows)."""
        last = self._last_ns
        if last is not None and (not self.points or last > self.points[-1].ts_ns):
            return [*self.points, EquityPoint(last, money(pnl_now))]
        return list(self.points)


def run_mode(exchange_kind: str, data_source: str, custom_venue: bool = False) -> str:
    """replay: recorded data into the paper venue; paper: live data, paper venue; live: a real
    venue through ccxt (a custom gateway factory counts as a simulated venue)."""
    if exchange_kind == "ccxt" and not custom_venue:
        return "live"
    return "paper" if data_source == "ccxt" else "replay"


def build_snapshot(
    stage: CoordinatorStage,
    *,
    run_id: str,
    mode: str,
    step: int,
    market_ns: int,
    done: bool,
    capital_quote: str,
    equity: EquityCurve,
    kill_switch: KillSwitchView,
    quarantined: Mapping[str, str] | None = None,
    failure: str = "",
) -> ConsoleSnapshot:
    summary = stage.summary()
    quarantined = quarantined or {}
    journal = stage.core.journal
    open_by: dict[tuple[str, str], list[int]] = {}
    # counted as fills come (the journal forgets old orders): every order with a fill
    filled_by = journal.filled_orders
    for entry in journal.open_orders():
        key = (entry.agent_id, entry.symbol)
        slot = open_by.setdefault(key, [0, 0])
        slot[0] += 1
        slot[1] += entry.leaves_lots
    rows = [
        _agent_row(key, fig, open_by, filled_by, quarantined)
        for key, fig in sorted(summary["agents"].items())
    ]
    by_status: dict[str, int] = summary["orders_by_status"]
    return ConsoleSnapshot(
        run_id=run_id,
        mode=mode,
        step=step,
        market_ns=market_ns,
        done=done,
        failure=failure,
        capital_quote=capital_quote,
        firm_pnl_quote=summary["firm_pnl_quote"],
        fills=int(summary["fills"]),
        orders=sum(by_status.values()),
        open_orders=sum(n for n, _ in open_by.values()),
        orders_by_status=dict(sorted(by_status.items())),
        risk_denials=dict(summary["risk_rejections"]),
        venue_rejections=dict(summary["venue_rejections"]),
        agents=rows,
        totals=unit_totals(rows),
        kill_switch=kill_switch,
        equity=equity.view(stage.firm_pnl_quote()),
        firm_pnl_asset=str(summary.get("firm_pnl", {}).get("asset", "")),
        firm_pnl_missing=list(summary.get("firm_pnl", {}).get("missing", [])),
    )


def _agent_row(
    key: str,
    fig: Mapping[str, Any],
    open_by: Mapping[tuple[str, str], list[int]],
    filled_by: Mapping[tuple[str, str], int],
    quarantined: Mapping[str, str],
) -> AgentRow:
    agent_id, _, symbol = key.partition("/")
    n_open, open_lots = open_by.get((agent_id, symbol), (0, 0))
    return AgentRow(
        key=key,
        agent_id=agent_id,
        symbol=symbol,
        unit=str(fig.get("unit", "")),
        position_lots=int(fig["position_lots"]),
        traded_lots=int(fig["traded_lots"]),
        open_orders=n_open,
        open_lots=open_lots,
        filled_orders=filled_by.get((agent_id, symbol), 0),
        realized=fig["realized_quote"],
        unrealized=fig["unrealized_quote"],
        fees=fig["fees_quote"],
        pnl=fig["pnl_quote"],
        funding=str(fig.get("funding_quote", "0")),
        pnl_at_mark=str(fig.get("pnl_at_mark", "")),
        quarantined=quarantined.get(agent_id, ""),
    )


def unit_totals(rows: list[AgentRow]) -> list[UnitTotals]:
    """Sums per settlement unit (Decimal, from the rows' exact strings)."""
    sums: dict[str, list[Decimal]] = {}
    open_orders: dict[str, int] = {}
    for row in rows:
        s = sums.setdefault(row.unit, [Decimal(0)] * 5)
        for i, value in enumerate((row.realized, row.unrealized, row.fees, row.pnl, row.funding)):
            s[i] += Decimal(value)
        open_orders[row.unit] = open_orders.get(row.unit, 0) + row.open_orders
    return [
        UnitTotals(
            unit=unit,
            open_orders=open_orders[unit],
            realized=money(s[0]),
            unrealized=money(s[1]),
            fees=money(s[2]),
            pnl=money(s[3]),
            funding=money(s[4]),
        )
        for unit, s in sorted(sums.items())
    ]
