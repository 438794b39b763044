"""Tuning a system config: every trial window is a run of the trading kernel.

The tune config names a system config (the file ``sapphire run`` and ``sapphire backtest``
read) and one of its agents; a trial swaps that agent's params, and each walk-forward window
is that system run on the data slice ``[start_ns, end_ns)`` (``data.start_ns``/``end_ns``: the
book is built from the data before the slice, nobody trades on it). What a window scores is
therefore exactly what ``sapphire run`` gives on the exported window config: same loader,
same risk, same venue, same timing.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import polars as pl

from sapphire.backtest import analytics
from sapphire.config.system import ConfigError, SystemConfig, parse_config
from sapphire.kernel import assembly, builders
from sapphire.kernel.runner import InProcessKernel
from sapphire.kernel.timing import Clock
from sapphire.kernel.windows import horizon_ns
from sapphire.model.events import AnyMarketEvent, rows_in
from sapphire.research.space import apply_params
from sapphire.research.walkforward import Window
from sapphire.risk.allocation import allocate_capital

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[AnyMarketEvent])
NS_PER_YEAR = 365.25 * 24 * 3600 * 1e9


class SystemTuneError(ValueError):
    """A system config or agent that cannot be tuned (the message says why)."""


@dataclass
class SystemDataset:
    """The system config's market data, read once by the product's loader and shipped to the
    trials as one msgpack blob."""

    raw: dict[str, Any]  # the system config as written (exported with the tuned params)
    run_raw: dict[str, Any]  # the same with absolute data paths (trials run elsewhere)
    agent_id: str
    blob: bytes
    start: int  # the tuned span on the run's clock (data.start_ns/end_ns, else all of it)
    end: int
    _events: list[AnyMarketEvent] | None = field(default=None, repr=False)

    @property
    def span(self) -> Window:
        return Window(self.start, self.end)

    def events(self) -> list[AnyMarketEvent]:
        if self._events is None:
            self._events = _DECODER.decode(self.blob)
        return self._events

    @property
    def base_params(self) -> dict[str, Any]:
        return dict(_agent_spec(self.raw, self.agent_id).get("params", {}))

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_events": None}


def _agent_spec(raw: dict[str, Any], agent_id: str) -> dict[str, Any]:
    for spec in raw.get("agents", []):
        if spec.get("id") == agent_id:
            return dict(spec)
    raise SystemTuneError(f"agent {agent_id!r} is not in the system config's agents")


def tuned_agent_id(raw: dict[str, Any], agent_id: str) -> str:
    """The agent named in the tune config, or the system's only agent."""
    if agent_id:
        _agent_spec(raw, agent_id)
        return agent_id
    agents = raw.get("agents", [])
    if len(agents) != 1:
        raise SystemTuneError("the system config has several agents: name one in 'agent'")
    return str(agents[0].get("id"))


def system_dict(
    raw: dict[str, Any],
    agent_id: str,
    params: dict[str, Any],
    window: Window | None = None,
) -> dict[str, Any]:
    """The system config with ``params`` swapped into the agent's (and, for a window, the data
    slice set): the config a trial runs, and the one ``sapphire tune`` exports."""
    out = copy.deepcopy(raw)
    for spec in out.get("agents", []):
        if spec.get("id") == agent_id:
            spec["params"] = apply_params(dict(spec.get("params", {})), params)
    if window is not None:
        out.setdefault("data", {})
        out["data"] = {**out["data"], "start_ns": window.start, "end_ns": window.end}
    return out


def parse_system(raw: dict[str, Any], origin: str) -> SystemConfig:
    try:
        return parse_config(raw, origin)
    except ConfigError as exc:
        raise SystemTuneError(str(exc)) from None


def load_system(raw: dict[str, Any], agent_id: str) -> SystemDataset:
    config = parse_system(raw, "tune config 'system'")
    agent_id = tuned_agent_id(raw, agent_id)
    try:
        instruments = assembly.load_instruments(config.data)
    except builders.WiringError as exc:
        # the field is the tune config's ``system.data...``: said as ``data...`` alone, a
        # reader looked for it at the top of the tune file
        raise SystemTuneError(f"system.{exc}") from None
    replayed = assembly.replay_opener(config.data, instruments)()
    if config.data.max_events is None:
        events = list(replayed)
    else:
        # the cap counts recorded rows (a depth message its levels), as every runner's does:
        # cut by events, the tune's folds spanned data the backtest of the same config never
        # reaches. Read no further than it: read whole first, a session gap after the cap
        # (data.max_session_gap_s) refused a config `sapphire backtest` runs
        events = []
        rows = 0
        while rows < config.data.max_events:
            event = next(replayed, None)
            if event is None:
                break
            events.append(event)
            rows += rows_in((event,))
    if not events:
        raise SystemTuneError("the system config's data produced no market events")
    clock = Clock(config.data.clock)
    ts = [clock.time_of(e) for e in events]
    # the span ends where every runner's does (the cutter's horizon): when the last event
    # read becomes visible, within data.end_ns
    limit, last_t = config.data.end_ns, ts[0]
    for t in ts:
        if limit is not None and t >= limit:
            break
        last_t = max(last_t, t)  # the cutter never runs time backwards
    end = horizon_ns(last_t, assembly.timing(config).feed_ns, limit)
    # the events up to the span's end; those before its start build the book of each window
    events = [e for e, t in zip(events, ts, strict=True) if t < end]
    inside = [t for t in ts if t < end and (config.data.start_ns or t) <= t]
    if not inside:
        raise SystemTuneError("no market events between data.start_ns and data.end_ns")
    data = dict(raw.get("data", {}))
    for key in ("files", "instrument_files"):
        if key in data:
            data[key] = [str(assembly.data_path(str(p)).resolve()) for p in data[key]]
    run_raw = {**raw, "data": data}
    blob = _ENCODER.encode(events)
    return SystemDataset(raw, run_raw, agent_id, blob, inside[0], end, events)


@dataclass
class KernelWindow:
    """One window's outcome for the tuned agent."""

    pnl_quote: Decimal
    equity: list[float]
    fills: int
    capital: Decimal
    # the PnL rows' spacing (storage.pnl_interval_s): the ratios' periods per year
    interval_ns: int = 1_000_000_000


def run_window(dataset: SystemDataset, params: dict[str, Any], window: Window) -> KernelWindow:
    raw = system_dict(dataset.run_raw, dataset.agent_id, params, window)
    config = parse_system(raw, "tuned system")
    kernel = InProcessKernel(config, "tune", events=iter(dataset.events()))
    kernel.run()
    agent = dataset.agent_id
    # the agent's PnL in the firm's currency, the one its capital is in: a leg settled in
    # another asset (a basis agent's inverse BTC leg beside a USDT one) converted at its
    # mark, as the run's "firm PnL" is; added as it was, 0.000002 BTC read as USDT
    core = kernel.coordinator.core
    marks = core.marks.marks
    portfolio = core.portfolio
    firm = portfolio.convert(portfolio.pnl_by_asset(agent, marks), marks)
    if firm.missing:
        raise ConfigError(
            f"agent {agent}: its PnL in {', '.join(firm.missing)} has no price in "
            f"{firm.asset} in this window's data, so it cannot be scored against its capital"
        )
    pnl = firm.total
    capital = allocate_capital(
        Decimal(config.capital_quote), {a.id: a.weight for a in config.agents}
    )[agent]
    rows = kernel.coordinator.rows.take_new()
    equity = [float(capital)]
    interval_ns = int(config.storage.pnl_interval_s * 1e9)
    if "pnl" in rows:
        # each row in its leg's settlement asset, converted as above (the rows carry no
        # mark: a leg in another asset is converted at the window's last rate, its Sharpe
        # exact only in the firm's own currency)
        settle = {s: i.settle_asset for s, i in kernel.instruments.items()}
        rate = {a: float(r) for a, r in firm.rates.items()} | {firm.asset: 1.0}
        curve = (
            rows["pnl"]
            .filter(pl.col("agent_id") == agent)
            .with_columns(
                (
                    pl.col("equity_quote").cast(pl.Float64)
                    * pl.col("symbol").replace_strict(
                        {s: rate.get(a, 1.0) for s, a in settle.items()},
                        default=1.0,
                        return_dtype=pl.Float64,
                    )
                ).alias("equity_quote")
            )
            .group_by("ts_ns", maintain_order=True)
            .agg(pl.col("equity_quote").sum())
            .sort("ts_ns")
        )
        equity += [float(capital) + v for v in curve["equity_quote"].to_list()]
        # the rows' own spacing: a bar system writes one a bar, not one a pnl_interval_s
        # (a 1 m bar run's Sharpe came out sqrt(60) times too large)
        ts: list[int] = curve["ts_ns"].to_list()
        gaps = sorted(b - a for a, b in itertools.pairwise(ts) if b > a)
        if gaps:
            interval_ns = gaps[len(gaps) // 2]
    fills = 0
    if "fills" in rows:
        fills = rows["fills"].filter(pl.col("agent_id") == agent).height
    return KernelWindow(pnl, equity, fills, capital, interval_ns)


def window_metrics(result: KernelWindow) -> dict[str, float]:
    """PnL and the usual ratios of the agent's equity, annualised at the spacing of its PnL
    rows (the ``storage.pnl_interval_s`` grid, or one row a bar; annualised as if that were
    one second, a 5 s grid gave a Sharpe 3.3x the same trades' on a 1 s one)."""
    equity = result.equity
    rets = analytics.returns(equity)
    periods = NS_PER_YEAR / result.interval_ns
    dd = analytics.max_drawdown(equity)
    pnl = float(result.pnl_quote)
    total_return = pnl / float(result.capital) if result.capital else 0.0
    return {
        "pnl": pnl,
        "total_return": total_return,
        "sharpe": analytics.sharpe(rets, periods),
        "sortino": analytics.sortino(rets, periods),
        "max_drawdown": dd,
        "calmar": analytics.calmar(total_return, dd),
    }
