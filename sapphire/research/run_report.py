"""Report of a stored run (``sapphire report RUN_ID``), read from the store: an interactive
HTML page (plotly, self-contained) and a PNG per figure.

The page: a stats header (firm PnL, drawdown, Sharpe/Sortino only where the span makes them
meaningful, else n/a with the reason), the per-agent table, the mid (or trade price) with
every fill coloured by agent, per-agent and firm PnL and drawdown, the trade list, risk
decisions and LLM decisions. Prices are in quote units where the run's instruments are
given (``sapphire report --config``), else in ticks, and the page says so.

PNG figures:
Figures: equity (the ``pnl`` table's ``equity_quote`` per agent), drawdown from the equity
peak, positions (lots), spread captured by maker fills (fill price against the stored
quote's mid just before it, in bps), fills over the mid, risk decisions (rejections by
reason), and LLM decisions (action and confidence; a run without an LLM agent says so).
Every figure is written even when its table is empty, with a note instead of lines, so the
page always has the same sections.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path

import msgspec
import numpy as np
import plotly.graph_objects as go
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from sapphire.backtest import analytics
from sapphire.backtest.html_page import (
    Stat,
    agent_colour,
    empty,
    figure,
    fmt_money,
    fmt_pct,
    fmt_ratio,
    line,
    markers,
    money_column,
    money_scale,
    money_text,
    page,
    style,
    table_html,
    times,
)
from sapphire.backtest.report import subplots
from sapphire.kernel.marks import FUNDING_MARK_MAX_AGE_NS, MarkBook
from sapphire.model.events import Quote, Side, Trade
from sapphire.model.instrument import Instrument
from sapphire.risk.portfolio import conversion_rate, reporting_asset, same_money
from sapphire.storage.query import read_table

TABLES = ("pnl", "fills", "positions", "risk_decisions", "llm_decisions", "ticks", "orders")


@dataclass
class RunData:
    run_id: str
    tables: dict[str, pl.DataFrame]

    def __getitem__(self, name: str) -> pl.DataFrame:
        return self.tables[name]


@dataclass
class RunReport:
    html: Path
    pngs: dict[str, Path]
    summary: pl.DataFrame
    notes: list[str] = field(default_factory=list)


class RunNotFoundError(LookupError):
    """No stored rows for the run id in any table."""


TableReader = Callable[[str, str], pl.LazyFrame]
"""(table, run_id) -> that run's rows: another store than a Parquet root (BigQuery)."""


def load_run(root: str | os.PathLike[str] | TableReader, run_id: str) -> RunData:
    if callable(root):
        read: TableReader = root
    else:
        read = partial(read_table, root)
    tables = {t: read(t, run_id).sort("ts_ns", "producer_id", "seq").collect() for t in TABLES}
    if all(df.is_empty() for df in tables.values()):
        where = "" if callable(root) else f" at {root}"
        raise RunNotFoundError(f"run {run_id!r} has no rows in the store{where}")
    return RunData(run_id, tables)


def _time(col: str = "ts_ns") -> pl.Expr:
    return pl.from_epoch(pl.col(col), time_unit="ns").alias("time")


def equity_frame(run: RunData, assets: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Per agent: time, equity (quote), drawdown (quote, <= 0), as floats for plots: one
    series per agent, or per agent and settlement asset (``assets``, as
    :func:`firm_equity` keys them), its symbols' PnL summed at each time (an agent's rows
    of two symbols, or of USDT and BTC, made one zig-zagging line)."""
    frame = firm_equity(run, assets)
    firms = set(firm_keys(frame)) if not frame.is_empty() else set()
    return frame.filter(~pl.col("agent_id").is_in(sorted(firms))).select(
        "agent_id",
        "time",
        pl.col("equity").cast(pl.Float64),
        pl.col("drawdown").cast(pl.Float64),
    )


def position_frame(run: RunData) -> pl.DataFrame:
    """Per agent and symbol: time, position (lots); named ``agent symbol`` where an agent
    holds several (lots of two instruments are not one position)."""
    pnl = run["pnl"]
    several = {
        a for a, n in pnl.group_by("agent_id").agg(pl.col("symbol").n_unique()).rows() if n > 1
    }
    return pnl.select(
        pl.when(pl.col("agent_id").is_in(sorted(several)))
        .then(pl.concat_str("agent_id", pl.lit(" "), "symbol"))
        .otherwise(pl.col("agent_id"))
        .alias("agent_id"),
        _time(),
        "position_lots",
    )


def mids(run: RunData) -> pl.DataFrame:
    quotes = run["ticks"].filter((pl.col("kind") == "quote") & pl.col("bid_ticks").is_not_null())
    return quotes.select(
        "ts_ns", "symbol", ((pl.col("bid_ticks") + pl.col("ask_ticks")) / 2.0).alias("mid_ticks")
    ).sort("ts_ns")


def spread_captured(run: RunData) -> pl.DataFrame:
    """Fills with the mid just before them; ``captured_bps`` = side * (mid - price) / mid."""
    fills = run["fills"].sort("ts_ns")
    mid = mids(run)
    if fills.is_empty() or mid.is_empty():
        return fills.select("ts_ns", "agent_id", "symbol", "is_maker").with_columns(
            pl.lit(None, pl.Float64).alias("mid_ticks"),
            pl.lit(None, pl.Float64).alias("captured_bps"),
        )
    joined = fills.join_asof(
        mid, on="ts_ns", by="symbol", strategy="backward", check_sortedness=False
    )
    return joined.select(
        "ts_ns",
        "agent_id",
        "symbol",
        "is_maker",
        "side",
        "price_ticks",
        "qty_lots",
        "mid_ticks",
        (
            pl.col("side").cast(pl.Float64)
            * (pl.col("mid_ticks") - pl.col("price_ticks"))
            / pl.col("mid_ticks")
            * 1e4
        ).alias("captured_bps"),
    )


def summary(
    run: RunData,
    money: str = "quote",
    assets: Mapping[str, str] | None = None,
    agents: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """One row per agent: fills, maker share, final equity, max drawdown, rejections.
    Equity and drawdown are the stored Decimals at ``money``'s scale (the settlement
    asset's, as the end-of-run screen prints them), not floats. An agent trading in several
    settlement assets (``assets``: symbol -> asset) has a row per asset, never a sum of
    them; a row of several symbols has no single final position (left empty).

    ``agents`` (the run's configured agents, id -> symbol) lists the agents that never
    traded too, with zeros, as the end-of-run screen does: the stored tables name only those
    that wrote a row. Where the run's money is in several settlement assets, each row names
    its ``asset`` and its money is text at that asset's own scale: a Decimal column has one
    scale, and BTC's 8 digits read at ETH's 9 with no unit beside them."""
    configured = dict(agents or {})
    found = {a for t in ("pnl", "fills", "risk_decisions") for a in run[t]["agent_id"].to_list()}
    names = sorted({a for a in found | set(configured) if a})
    split = _asset_keys(run, assets)
    keys = sorted({(a, k, s) for a, s, k in split}) if split else []
    several = len(money_assets(run, assets, configured)) > 1
    held_assets = _agent_assets(run, assets, configured)
    cash = firm_equity(run, assets)
    cap = spread_captured(run)
    risk = run["risk_decisions"]
    pnl = run["pnl"]
    rows = []
    equity: list[Decimal] = []
    drawdowns: list[Decimal] = []
    units: list[str] = []
    for agent in names:
        own: list[tuple[str, str | None]] = [(k, s) for a, k, s in keys if a == agent]
        if not own:  # no PnL row: named as the plot names the others, with its asset
            mine_assets = sorted(held_assets.get(agent, set()))
            single = split is not None and len(mine_assets) == 1
            own = [(f"{agent} ({mine_assets[0]})" if single else agent, None)]
        for key in sorted({k for k, _ in own}):
            symbols = sorted({s for k, s in own if k == key and s is not None})
            m = cash.filter(pl.col("agent_id") == key)
            equity.append(m["equity"][-1] if m.height else Decimal(0))
            drawdowns.append(m["drawdown"].min() if m.height else Decimal(0))  # type: ignore[arg-type]
            mine = pl.col("agent_id") == agent
            if symbols:
                mine = mine & pl.col("symbol").is_in(symbols)
            own_assets = (
                {(assets or {}).get(s, "?") for s in symbols}
                if symbols
                else held_assets.get(agent, set())
            )
            units.append("/".join(sorted(own_assets)) or "?")
            f = run["fills"].filter(mine)
            c = cap.filter(mine & pl.col("is_maker"))
            r = risk.filter(mine)  # this row's symbols' checks (each asset's row had all)
            p = pnl.filter(mine).sort("ts_ns")
            held = set(p["symbol"].to_list())
            rows.append(
                {
                    "agent_id": key,
                    "fills": f.height,
                    "maker_fills": int(f["is_maker"].sum()) if f.height else 0,
                    "final_position_lots": (
                        int(p["position_lots"][-1]) if len(held) == 1 else None if held else 0
                    ),
                    # null (n/a) without a maker fill measured against a mid: a run that
                    # stored no quotes has none, and 0.0 read as "captured nothing"
                    "spread_captured_bps": _mean_or_none(c["captured_bps"]),
                    "risk_checked": r.height,
                    "risk_rejected": int((~r["accepted"]).sum()) if r.height else 0,
                }
            )
    if not rows:
        return pl.DataFrame({"agent_id": []}, schema={"agent_id": pl.String})
    table = pl.DataFrame(
        rows,
        schema_overrides={"final_position_lots": pl.Int64, "spread_captured_bps": pl.Float64},
    )
    if several:
        return (
            table.insert_column(3, pl.Series("asset", units, pl.String))
            .insert_column(4, _money_text_column("final_equity", equity, units))
            .insert_column(5, _money_text_column("max_drawdown", drawdowns, units))
        )
    return table.insert_column(3, money_column(equity, money).alias("final_equity")).insert_column(
        4, money_column(drawdowns, money).alias("max_drawdown")
    )


def _money_text_column(name: str, values: list[Decimal], units: list[str]) -> pl.Series:
    """Each row's money at its own asset's stored scale, as the end-of-run screen prints it."""
    return pl.Series(
        name, [money_text(v, u) for v, u in zip(values, units, strict=True)], pl.String
    )


def money_symbols(run: RunData) -> list[str]:
    """The symbols the run's money is counted in: those with PnL or fill rows (a symbol
    only quoted, a USDT market beside a traded BTC-settled one, holds none of it)."""
    symbols = set(run["pnl"]["symbol"].to_list()) | set(run["fills"]["symbol"].to_list())
    return sorted(symbols) if symbols else run_symbols(run)


def money_assets(
    run: RunData, assets: Mapping[str, str] | None, agents: Mapping[str, str] | None = None
) -> list[str]:
    """The settlement assets of the run's money: its PnL and fills' symbols', and the
    configured agents' (an idle agent's zeros are in its own asset), as far as the
    instruments know them; [] without instruments."""
    if not assets:
        return []
    symbols = set(run["pnl"]["symbol"].to_list()) | set(run["fills"]["symbol"].to_list())
    symbols |= set((agents or {}).values())
    return sorted({assets[s] for s in symbols if s in assets})


def money_label(run: RunData, units: Units) -> str:
    """The unit of a figure's money: the run's one settlement asset, or where there are
    several, that each series is in its own (its name says which: ``_asset_keys``; the
    axis said "BTC/ETH" of lines each in one of them)."""
    if len(money_assets(run, units.assets())) > 1:
        return "series' own asset"
    return units.money(money_symbols(run))


def _agent_assets(
    run: RunData, assets: Mapping[str, str] | None, agents: Mapping[str, str]
) -> dict[str, set[str]]:
    """Each agent's settlement assets, from every symbol it wrote a row of or is configured
    on (an idle agent's row is in its configured symbol's asset)."""
    pairs: set[tuple[str, str]] = set(agents.items())
    for t in ("pnl", "fills", "risk_decisions"):
        pairs |= set(run[t].select("agent_id", "symbol").unique().rows())
    out: dict[str, set[str]] = {}
    for agent, symbol in pairs:
        if agent and assets:
            out.setdefault(agent, set()).add(assets.get(symbol, "?"))
    return out


def _mean_or_none(values: pl.Series) -> float | None:
    mean = values.mean() if values.len() else None
    return float(mean) if isinstance(mean, int | float) else None


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(ax: Axes) -> None:
    """A legend of what the axes drew with a label; none when nothing was (a run whose
    fills' symbols have no stored mid: matplotlib warned of a legend with no artists)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)


def _per_agent(ax: Axes, frame: pl.DataFrame, col: str, ylabel: str, step: bool = False) -> None:
    if frame.is_empty():
        _empty(ax, f"no {ylabel} rows")
        return
    for agent in sorted(frame["agent_id"].unique().to_list()):
        part = frame.filter(pl.col("agent_id") == agent)
        x, y = part["time"].to_numpy(), part[col].to_numpy()
        if step:
            ax.step(x, y, where="post", label=agent, lw=1.0)
        else:
            ax.plot(x, y, label=agent, lw=1.0, marker="." if part.height < 50 else None)
    ax.set_ylabel(ylabel)
    _legend(ax)
    ax.grid(alpha=0.3)


def fig_equity(run: RunData, units: Units) -> Figure:
    eq = equity_frame(run, units.assets())
    fig, axes = subplots(3, 1, figsize=(10, 8), sharex=not eq.is_empty())
    money = money_label(run, units)
    _per_agent(axes[0], eq, "equity", f"equity ({money})")
    axes[0].set_title(f"{run.run_id}: equity, drawdown, position")
    _per_agent(axes[1], eq, "drawdown", f"drawdown ({money})")
    _per_agent(axes[2], position_frame(run), "position_lots", "position (lots)", step=True)
    fig.tight_layout()
    return fig


def fig_fills(run: RunData, units: Units) -> Figure:
    fig, axes = subplots(2, 1, figsize=(10, 7))
    mid = mids(run).with_columns(_time())
    cap = spread_captured(run).with_columns(_time())
    ax = axes[0]
    if mid.is_empty() and cap.is_empty():
        _empty(ax, "no quotes or fills stored")
    else:
        symbols = sorted(set(mid["symbol"].to_list()))
        for sym in symbols:  # a line per symbol: one line jumped between two markets' ticks
            part = mid.filter(pl.col("symbol") == sym)
            ax.plot(
                part["time"].to_numpy(),
                part["mid_ticks"].to_numpy(),
                lw=0.7,
                color="grey" if len(symbols) == 1 else None,
                label="mid" if len(symbols) == 1 else f"{sym} mid",
            )
        for side, marker, colour in ((1, "^", "tab:green"), (-1, "v", "tab:red")):
            part = cap.filter(pl.col("side") == side) if "side" in cap.columns else cap.clear()
            if part.height:
                ax.scatter(
                    part["time"].to_numpy(),
                    part["price_ticks"].to_numpy(),
                    marker=marker,
                    color=colour,
                    s=30,
                    label="buy" if side == 1 else "sell",
                    zorder=3,
                )
        ax.set_ylabel("price (ticks)")
        _legend(ax)
        ax.set_title("fills over the mid")
    ax = axes[1]
    maker = cap.filter(pl.col("is_maker") & pl.col("captured_bps").is_not_null())
    if maker.is_empty():
        _empty(ax, "no maker fills: no spread captured")
    else:
        for agent in sorted(maker["agent_id"].unique().to_list()):
            part = maker.filter(pl.col("agent_id") == agent)
            ax.plot(
                part["time"].to_numpy(),
                np.cumsum(part["captured_bps"].to_numpy()),
                marker=".",
                label=agent,
            )
        ax.set_ylabel("cumulative spread captured (bps)")
        _legend(ax)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def risk_outcomes(risk: pl.DataFrame) -> pl.DataFrame:
    """Risk decisions counted per agent and outcome ("accepted" or the refusal's reason)."""
    return (
        risk.with_columns(
            pl.when(pl.col("accepted"))
            .then(pl.lit("accepted"))
            .otherwise(pl.col("reason").fill_null("rejected"))
            .alias("outcome")
        )
        .group_by("agent_id", "outcome")
        .len()
        .sort("agent_id", "outcome")
    )


def fig_risk(run: RunData, _units: Units) -> Figure:
    fig, ax = subplots(figsize=(10, 4))
    risk = run["risk_decisions"]
    if risk.is_empty():
        _empty(ax, "no risk decisions stored")
        return fig
    counts = risk_outcomes(risk)
    labels = [f"{a}\n{o}" for a, o in zip(counts["agent_id"], counts["outcome"], strict=True)]
    colours = ["tab:green" if o == "accepted" else "tab:red" for o in counts["outcome"]]
    ax.bar(range(counts.height), counts["len"].to_numpy(), color=colours)
    ax.set_xticks(range(counts.height), labels, fontsize=8)
    rejected = int((~risk["accepted"]).sum())
    ax.set_title(f"risk decisions: {risk.height} checked, {rejected} rejected")
    ax.set_ylabel("intents")
    fig.tight_layout()
    return fig


def fig_llm(run: RunData, _units: Units) -> Figure:
    fig, axes = subplots(1, 2, figsize=(10, 4))
    llm = run["llm_decisions"]
    if llm.is_empty():
        _empty(axes[0], "no LLM decisions in this run")
        _empty(axes[1], "(no LLM agent configured)")
        return fig
    counts = llm.group_by("action").len().sort("action")
    axes[0].bar(counts["action"].to_list(), counts["len"].to_numpy())
    axes[0].set_title(f"LLM actions ({int((~llm['valid']).sum())} invalid)")
    part = llm.with_columns(_time())
    axes[1].scatter(part["time"].to_numpy(), part["confidence"].to_numpy(), s=10)
    axes[1].set_title("confidence")
    fig.tight_layout()
    return fig


FIGURES = {"equity": fig_equity, "fills": fig_fills, "risk": fig_risk, "llm": fig_llm}


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=80)
    return path


def write_run_report(
    root: str | os.PathLike[str] | TableReader,
    run_id: str,
    out_dir: Path,
    instruments: Mapping[str, Instrument] | None = None,
    capital_quote: float | None = None,
    agents: Mapping[str, str] | None = None,
    *,
    currency: str = "",
) -> RunReport:
    """``<out_dir>/<run_id>.html`` (interactive, plotly.js inlined) and a PNG per figure.

    ``instruments`` (the run's, from its system config) put prices in quote units and
    quantities in base units; without them prices stay in ticks and the page says so.
    ``capital_quote`` (the config's) turns PnL into returns for the firm's Sharpe/Sortino.
    ``agents`` (the config's, id -> symbol) lists the agents that never traded too; without
    them, those of the run's recorded config (a Parquet root's ``<run_id>/run-config.json``,
    which ``sapphire run`` writes), else only the agents the stored rows name. ``currency``:
    the firm's currency ``capital_quote`` is in, as the run recorded it ("": the rule on
    ``instruments``, as a run recorded before the field ran)."""
    run = load_run(root, run_id)
    if agents is None and not callable(root):
        agents = recorded_agents(Path(root).resolve().parent / run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    units = Units(dict(instruments or {}))
    pngs = {
        name: _save(make(run, units), out_dir / f"{run_id}_{name}.png")
        for name, make in FIGURES.items()
    }
    table = summary(run, units.money(money_symbols(run)), units.assets(), agents)
    notes = [f"{t}: {run[t].height} rows" for t in TABLES]
    page_path = out_dir / f"{run_id}.html"
    html_text = interactive_page(
        run, table, dict(instruments or {}), capital_quote, notes, currency=currency
    )
    page_path.write_text(html_text, encoding="utf-8")
    return RunReport(page_path, pngs, table, notes)


RUN_CONFIG_FILE = "run-config.json"
"""The trading config a run records in its folder at its start (``actors.system``)."""


def recorded_agents(run_dir: Path) -> dict[str, str] | None:
    """The agents (id -> symbol) of the config a run recorded, None where it recorded none
    (a backtest) or it cannot be read: the report then lists the agents its rows name."""
    try:
        raw = msgspec.json.decode((run_dir / RUN_CONFIG_FILE).read_bytes())
        specs = raw.get("agents") or []
        return {str(a["id"]): str(a.get("symbol", "")) for a in specs}
    except (OSError, msgspec.DecodeError, AttributeError, KeyError, TypeError):
        return None


# -- the interactive page -------------------------------------------------------------------
class Units:
    """Ticks and lots to quote and base units, per symbol, where the instrument is known."""

    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments

    def known(self, symbols: list[str]) -> bool:
        return bool(symbols) and all(s in self.instruments for s in symbols)

    def price(self, frame: pl.DataFrame, col: str) -> pl.Expr:
        return self._scale(frame, col, "tick")

    def qty(self, frame: pl.DataFrame, col: str) -> pl.Expr:
        return self._scale(frame, col, "lot")

    def _scale(self, frame: pl.DataFrame, col: str, kind: str) -> pl.Expr:
        mapping = {
            sym: (inst.tick_float if kind == "tick" else inst.lot_float)
            for sym, inst in self.instruments.items()
        }
        if not mapping:
            return pl.col(col).cast(pl.Float64)
        factor = pl.col("symbol").replace_strict(mapping, default=1.0, return_dtype=pl.Float64)
        return pl.col(col).cast(pl.Float64) * factor

    def label(self, symbols: list[str]) -> str:
        if not self.known(symbols):
            return "ticks"
        quotes = sorted({self.instruments[s].quote or "quote" for s in symbols})
        return "/".join(quotes)

    def assets(self) -> dict[str, str]:
        """Each known symbol's settlement asset (what its PnL is counted in)."""
        return {s: inst.settle_asset for s, inst in self.instruments.items()}

    def money(self, symbols: list[str]) -> str:
        units = sorted(
            {self.instruments[s].settle_asset or "quote" for s in symbols if s in self.instruments}
        )
        return "/".join(units) if units else "quote"


def _asset_keys(
    run: RunData, assets: Mapping[str, str] | None
) -> list[tuple[str, str, str]] | None:
    """``(agent, symbol, series key)`` per stored position where the run's PnL is in more
    than one settlement asset (None: one asset, or unknown instruments): every agent's
    series is ``agent (ASSET)``, one per asset where its own symbols settle in several. Why
    every agent's, not only those of several assets: the plot's axis and the agents table
    hold BTC and ETH series side by side, and a bare name gave no unit to read them in."""
    if not assets:
        return None
    pairs = run["pnl"].select("agent_id", "symbol").unique().rows()
    if len({assets.get(s, "") for _, s in pairs}) < 2:
        return None
    return [(a, s, f"{a} ({assets.get(s, '?')})") for a, s in pairs]


def firm_keys(frame: pl.DataFrame) -> list[str]:
    """The firm's series in ``firm_equity``'s frame: "firm", or "firm (ASSET)" per asset."""
    return sorted(k for k in set(frame["agent_id"].to_list()) if k.startswith("firm"))


def firm_equity(run: RunData, assets: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Per agent and for the firm (``agent_id`` "firm"): time, PnL (quote, from 0) and
    drawdown. PnL rows come per position on a shared time grid, so the firm's PnL at a time
    is the sum over agents' latest rows. Money stays the stored Decimal: sums and the
    header's figures carry no float digits (plots cast).

    Where the run's PnL is in several settlement assets (``assets``: symbol -> asset, from
    the instruments), nothing of two assets is added: the firm is "firm (ASSET)" per asset
    and every agent "agent (ASSET)", one per asset where it trades in several."""
    pnl = run["pnl"]
    split = _asset_keys(run, assets)
    if split and assets:
        keys = pl.DataFrame(split, schema=["agent_id", "symbol", "key"], orient="row").lazy()
        pnl = (
            pnl.lazy()
            # the PnL rows' order kept: a join may return them in any order, and an agent's
            # final equity (its last row) came out as its first, 0, about one run in six
            .join(keys, on=["agent_id", "symbol"], how="left", maintain_order="left")
            .with_columns(
                pl.col("key").alias("agent_id"),
                pl.col("symbol").replace_strict(dict(assets), default="?").alias("_asset"),
            )
            .drop("key")
            .collect()
        )
    else:
        pnl = pnl.with_columns(pl.lit("").alias("_asset"))
    if pnl.is_empty():
        return pl.DataFrame(
            schema={
                "agent_id": pl.String,
                "time": pl.Datetime("ns"),
                "equity": pnl.schema["equity_quote"],
                "drawdown": pnl.schema["equity_quote"],
            }
        )
    per_agent = (
        pnl.select("agent_id", "_asset", _time(), pl.col("equity_quote").alias("equity"))
        .group_by("agent_id", "_asset", "time", maintain_order=True)
        .agg(pl.col("equity").sum())
        .sort("time", maintain_order=True)  # each agent's rows in time order, whatever came
    )
    firms = []
    for asset in sorted(set(per_agent["_asset"].to_list())):
        part = per_agent.filter(pl.col("_asset") == asset)
        wide = part.pivot(on="agent_id", index="time", values="equity").sort("time")
        agents = [c for c in wide.columns if c != "time"]
        wide = wide.with_columns(pl.col(agents).fill_null(strategy="forward").fill_null(0))
        name = f"firm ({asset})" if asset else "firm"
        firms.append(
            wide.select("time", pl.sum_horizontal(agents).alias("equity")).with_columns(
                pl.lit(name).alias("agent_id")
            )
        )
    both = pl.concat(
        [
            per_agent.select("agent_id", "time", "equity"),
            *(f.select("agent_id", "time", "equity") for f in firms),
        ]
    )
    return both.with_columns(_drawdown(pl.lit(0).cast(both.schema["equity"])))


def _drawdown(zero: pl.Expr) -> pl.Expr:
    """Each agent's ``equity`` less its peak so far. The peak starts at the run's start, PnL
    ``zero``: a first row already below it (a first fee, a first losing mark) is drawdown
    too (it started at the first stored row, which hid that much of the worst loss)."""
    peak = pl.col("equity").cum_max().over("agent_id")
    return (pl.col("equity") - pl.when(peak > zero).then(peak).otherwise(zero)).alias("drawdown")


def price_figure(run: RunData, units: Units) -> go.Figure:
    """The mid (quotes) or the trade price, with every fill coloured by agent (buy triangles
    up, sell down), prices in quote units where the instrument is known."""
    fig = figure(520)
    ticks = run["ticks"]
    symbols = sorted(set(ticks["symbol"].to_list()) | set(run["fills"]["symbol"].to_list()))
    label = units.label(symbols)
    quotes = ticks.filter((pl.col("kind") == "quote") & pl.col("bid_ticks").is_not_null())
    trades = ticks.filter((pl.col("kind") == "trade") & pl.col("price_ticks").is_not_null())
    for sym in sorted(set(ticks["symbol"].to_list())):
        q = quotes.filter(pl.col("symbol") == sym)
        if q.height:
            mid = q.select(
                "ts_ns",
                ((units.price(q, "bid_ticks") + units.price(q, "ask_ticks")) / 2).alias("mid"),
            )
            fig.add_trace(
                line(
                    times(mid["ts_ns"].to_numpy()),
                    mid["mid"].to_numpy(),
                    name=f"{sym} mid",
                    line={"color": "grey", "width": 1},
                )
            )
            continue
        t = trades.filter(pl.col("symbol") == sym)
        if t.height:
            px = t.select("ts_ns", units.price(t, "price_ticks").alias("price"))
            fig.add_trace(
                line(
                    times(px["ts_ns"].to_numpy()),
                    px["price"].to_numpy(),
                    name=f"{sym} trades",
                    line={"color": "grey", "width": 1},
                )
            )
    fills = run["fills"]
    agents = sorted(set(fills["agent_id"].to_list()))
    for i, agent in enumerate(agents):
        part = fills.filter(pl.col("agent_id") == agent).with_columns(
            units.price(fills, "price_ticks").alias("price"),
            units.qty(fills, "qty_lots").alias("qty"),
        )
        for side, symbol, word in ((1, "triangle-up", "buy"), (-1, "triangle-down", "sell")):
            sided = part.filter(pl.col("side") == side)
            if sided.is_empty():
                continue
            fig.add_trace(
                markers(
                    times(sided["ts_ns"].to_numpy()),
                    sided["price"].to_numpy(),
                    name=f"{agent} {word}",
                    legendgroup=agent,
                    symbol=symbol,
                    colour=agent_colour(i),
                    customdata=sided["qty"].to_numpy(),
                    hovertemplate=f"{word} %{{customdata:.8g}} @ %{{y:.8g}} {label}"
                    f"<extra>{agent}</extra>",
                )
            )
    if not fig.data:
        return empty(fig, "no quotes, trades or fills stored")
    fig.update_yaxes(title_text=f"price ({label})")
    return fig


def equity_figure(run: RunData, money: str, assets: Mapping[str, str] | None = None) -> go.Figure:
    eq = firm_equity(run, assets)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    style(fig, 560)
    if eq.is_empty():
        return empty(fig, "no PnL rows stored")
    firms = firm_keys(eq)
    names = sorted(a for a in set(eq["agent_id"].to_list()) if a not in firms)
    for i, agent in enumerate([*names, *firms]):
        part = eq.filter(pl.col("agent_id") == agent)
        colour = "black" if agent == "firm" else agent_colour(i)
        width = 2.5 if agent in firms else 1.2
        t = times(part["time"].cast(pl.Int64).to_numpy())
        fig.add_trace(
            line(
                t,
                part["equity"].cast(pl.Float64).to_numpy(),
                name=agent,
                legendgroup=agent,
                line={"color": colour, "width": width},
            ),
            1,
            1,
        )
        fig.add_trace(
            line(
                t,
                part["drawdown"].cast(pl.Float64).to_numpy(),
                name=f"{agent} drawdown",
                legendgroup=agent,
                showlegend=False,
                line={"color": colour, "width": width},
            ),
            2,
            1,
        )
    fig.update_yaxes(title_text=f"PnL ({money}, from 0)", row=1, col=1)
    fig.update_yaxes(title_text=f"drawdown ({money})", row=2, col=1)
    return fig


def risk_figure(run: RunData) -> go.Figure:
    fig = figure(360)
    risk = run["risk_decisions"]
    if risk.is_empty():
        return empty(fig, "no risk decisions stored")
    counts = risk_outcomes(risk)
    for outcome in sorted(set(counts["outcome"].to_list())):
        part = counts.filter(pl.col("outcome") == outcome)
        fig.add_trace(
            go.Bar(
                x=part["agent_id"].to_list(),
                y=part["len"].to_list(),
                name=outcome,
                marker_color="#2ca02c" if outcome == "accepted" else None,
            )
        )
    fig.update_layout(barmode="stack", hovermode="closest")
    fig.update_yaxes(title_text="intents")
    return fig


def llm_figure(run: RunData) -> go.Figure | str:
    llm = run["llm_decisions"]
    if llm.is_empty():
        return "<p class='note'>no LLM decisions in this run (no LLM agent configured)</p>"
    fig = figure(320)
    part = llm.with_columns(_time())
    for action in sorted(set(part["action"].to_list())):
        sub = part.filter(pl.col("action") == action)
        fig.add_trace(
            go.Scatter(
                x=sub["time"].to_numpy(),
                y=sub["confidence"].to_numpy(),
                mode="markers",
                name=action,
                text=sub["rationale"].to_list(),
            )
        )
    fig.update_yaxes(title_text="confidence")
    return fig


def trade_list(run: RunData, units: Units) -> pl.DataFrame:
    """Every fill in time order. Times carry the date where the fills span more than one
    UTC day (a five-day run's 01:45 came after its 23:50, with nothing to say so); the fee
    is at its settlement asset's stored scale, and where the fills settle in several assets
    each row names its ``asset`` and its fee is text at that asset's own scale (a Decimal
    column of one scale showed BTC fees at ETH's 9 digits, with no unit)."""
    fills = run["fills"]
    if fills.is_empty():
        return fills
    fills = fills.sort("ts_ns")
    days = fills.select(pl.from_epoch("ts_ns", time_unit="ns").dt.date().n_unique()).item()
    when = "%Y-%m-%d %H:%M:%S%.3f" if days > 1 else "%H:%M:%S%.3f"
    assets = units.assets()
    found = sorted({assets.get(s, "?") for s in fills["symbol"].unique()}) if assets else []
    fee: list[pl.Expr]
    if len(found) > 1:
        asset = pl.col("symbol").replace_strict(dict(assets), default="?", return_dtype=pl.String)
        text = pl.lit(None, pl.String)
        for a in found:  # each asset's fees at its own scale, as stored (never a float's digits)
            scaled = pl.col("fee_quote").cast(pl.Decimal(38, money_scale(a))).cast(pl.String)
            text = pl.when(asset == a).then(scaled).otherwise(text)
        fee = [asset.alias("asset"), text.alias("fee")]
    else:
        # at the settlement asset's scale, as stored (Decimal, never a float's digits)
        scale = money_scale(units.money(sorted(set(fills["symbol"].to_list()))))
        fee = [pl.col("fee_quote").cast(pl.Decimal(38, scale)).alias("fee")]
    return fills.select(
        pl.from_epoch("ts_ns", time_unit="ns").dt.strftime(when).alias("time"),
        "agent_id",
        "symbol",
        pl.when(pl.col("side") > 0).then(pl.lit("buy")).otherwise(pl.lit("sell")).alias("side"),
        units.price(fills, "price_ticks").alias("price"),
        units.qty(fills, "qty_lots").alias("qty"),
        *fee,
        "is_maker",
        "internal",
        "client_order_id",
    )


def header(
    run: RunData,
    table: pl.DataFrame,
    money: str,
    capital_quote: float | None,
    assets: Mapping[str, str] | None = None,
    instruments: Mapping[str, Instrument] | None = None,
    *,
    currency: str = "",
) -> list[Stat]:
    """The firm's PnL and drawdown in ``money`` (the asset its PnL rows are in), its return
    and ratios on ``capital_quote``, which is in the firm's currency (``currency``, the
    run's recorded one, else ``reporting_asset`` of ``instruments``): PnL in another asset
    is converted at the last stored mark, or the return and ratios are n/a. Span and
    ratios end at the last fresh mark (``stale_pnl``)."""
    eq = firm_equity(run, assets)
    firms = firm_keys(eq)
    stale = stale_pnl(run)
    if len(firms) > 1:
        return _header_by_asset(run, eq, firms, stale)
    firm = eq.filter(pl.col("agent_id") == "firm")
    pnl: Decimal = firm["equity"][-1] if firm.height else Decimal(0)
    dd: Decimal = firm["drawdown"].min() if firm.height else Decimal(0)  # type: ignore[assignment]
    live = _live(firm, stale)
    ts = live["time"].cast(pl.Int64).to_list() if live.height else []
    note = analytics.ratio_note(ts, max(len(ts) - 1, 0))
    rate, into, why = _capital_rate(run, money, instruments, currency)
    converted = rate is not None and rate != 1
    sharpe = sortino = None
    if not note and capital_quote is None:
        note = "n/a: returns need the capital (pass --config)"
    if not note and rate is None:
        note = why
    if not note and capital_quote is not None and rate is not None:
        # a PnL in another asset than the capital's at one rate, the last mark's (the rows
        # carry no mark): exact in the firm's own currency, as system tune scores it
        curve = live["equity"].cast(pl.Float64).to_list()
        rets = analytics.returns([capital_quote + float(rate) * v for v in curve])
        # n marks hold n - 1 returns over the span: n a span over-stated both ratios by
        # sqrt(n / (n - 1)) (1.6 % for a month of daily marks)
        periods = (len(ts) - 1) / ((ts[-1] - ts[0]) / analytics.NS_PER_YEAR)
        sharpe = analytics.sharpe(rets, periods)
        sortino = analytics.sortino(rets, periods)
    ratios = (note or (why if converted else ""), _ratio_end_note(stale))
    ratio_why = "; ".join(n for n in ratios if n)
    stats = [
        Stat("firm PnL", fmt_money(pnl, money)),
        Stat("firm max drawdown", fmt_money(dd, money)),
        Stat("Sharpe (firm)", fmt_ratio(sharpe), ratio_why),
        Stat("Sortino (firm)", fmt_ratio(sortino), ratio_why),
        *_run_stats(run, ts, stale),
    ]
    if rate is not None and converted:
        stats.insert(1, Stat(f"firm PnL ({into})", fmt_money(pnl * rate, into), why))
    if capital_quote and rate is None:
        stats.insert(1, Stat("firm return", fmt_ratio(None), why))
    elif capital_quote and rate is not None:
        stats.insert(1, Stat("firm return", fmt_pct(float(pnl * rate) / capital_quote)))
    return stats


def _capital_rate(
    run: RunData, money: str, instruments: Mapping[str, Instrument] | None, currency: str = ""
) -> tuple[Decimal | None, str, str]:
    """(rate, asset, why): the price of one ``money`` (the PnL's asset) in the asset the
    capital is in (the firm's currency: ``currency`` as the run recorded it, else the rule's
    ``reporting_asset``), 1 where they are one; None where no stored price converts them.
    Why: a run that traded only its BTC-settled contract beside a USDT one divided its BTC
    PnL by its USDT capital (-5.84e-08 % for a loss of 0.35 USDT) and called the figure
    "BTC/USDT"."""
    known = dict(instruments or {})
    into = reporting_asset(known, currency)
    if not into or "/" in money or money == "quote" or same_money(money, into):
        return Decimal(1), into or money, ""
    marks = last_marks(run)
    rate = conversion_rate(money, into, known, marks)
    if rate is None:
        return (
            None,
            into,
            (
                f"n/a: the PnL is in {money} and the capital in {into}, and no stored price "
                f"converts one into the other"
            ),
        )
    return rate, into, f"{money} at {float(rate):.8g} {into}, the last stored mark"


def last_marks(run: RunData) -> dict[str, float]:
    """Each stored symbol's last mark (ticks), by the one mark rule (``MarkBook``) folded
    over the last stored quote and trade of each symbol: the quote's mid while it was live
    at the last trade, else the last trade. Book snapshots and bars are not stored: a run
    of those has no mark here."""
    ticks = run["ticks"]
    last_quotes = (
        ticks.filter(
            (pl.col("kind") == "quote")
            & (pl.col("bid_ticks") > 0)
            & (pl.col("ask_ticks") > pl.col("bid_ticks"))
        )
        .group_by("symbol")
        .last()
    )
    last_trades = (
        ticks.filter((pl.col("kind") == "trade") & (pl.col("price_ticks") > 0))
        .group_by("symbol")
        .last()
    )
    events: list[Quote | Trade] = [
        Quote(
            ts_event_ns=r["ts_ns"],
            symbol=r["symbol"],
            bid_ticks=r["bid_ticks"],
            bid_lots=0,
            ask_ticks=r["ask_ticks"],
            ask_lots=0,
        )
        for r in last_quotes.iter_rows(named=True)
    ]
    events += [
        Trade(
            ts_event_ns=r["ts_ns"],
            symbol=r["symbol"],
            price_ticks=r["price_ticks"],
            qty_lots=0,
            taker_side=Side.BUY,
        )
        for r in last_trades.iter_rows(named=True)
    ]
    book = MarkBook()
    for event in sorted(events, key=lambda e: e.ts_event_ns):
        book.update(event)
    return dict(book.marks)


@dataclass(frozen=True)
class Stale:
    """PnL rows past the last fresh mark (``stale_pnl``)."""

    after_ns: int  # rows later than this are left out of the span and ratios
    last_price_ns: int  # the last stored sign of a live price
    rows: int  # PnL rows left out
    last_ns: int  # the last of them


def stale_pnl(run: RunData) -> Stale | None:
    """The PnL rows written at a frozen mark, None where there are none. The kernel writes
    PnL rows on any event, funding included, so a funding file that runs on after the
    prices end added weeks of rows at the last price (26 days after a 5-day run: the span
    read 31.4 days and the Sharpe -2.95 against -7.09 for the same data cut at the last
    bar). A row is stale where the firm holds a position and no price is in the store
    within ``FUNDING_MARK_MAX_AGE_NS`` before it, the age past which the kernel settles no
    funding at a mark: no stored tick or fill, and no PnL row of a position whose mark
    moved (the sign of a price where bars and books are not stored). A flat firm's rows
    hang on no mark, and are kept."""
    pnl = run["pnl"]
    if pnl.is_empty():
        return None
    ticks = run["ticks"].filter(
        pl.col("price_ticks").is_not_null() | pl.col("bid_ticks").is_not_null()
    )
    key = ("agent_id", "symbol")
    moved = pnl.filter(
        (pl.col("position_lots") == pl.col("position_lots").shift().over(key))
        & (pl.col("position_lots") != 0)
        & (pl.col("unrealized_pnl_quote") != pl.col("unrealized_pnl_quote").shift().over(key))
    )
    seen = [
        t
        for t in (ticks["ts_ns"].max(), run["fills"]["ts_ns"].max(), moved["ts_ns"].max())
        if isinstance(t, int)
    ]
    if not seen:
        return None  # nothing in the store times a price: no row can be judged stale
    last = max(seen)
    held = pnl.group_by(key).agg(pl.col("position_lots").last())
    if not (held["position_lots"] != 0).any():
        return None
    after = last + FUNDING_MARK_MAX_AGE_NS
    late = pnl.filter(pl.col("ts_ns") > after)
    if late.is_empty():
        return None
    return Stale(after, last, late.height, int(late["ts_ns"].max()))  # type: ignore[arg-type]


def _live(frame: pl.DataFrame, stale: Stale | None) -> pl.DataFrame:
    """``frame``'s rows up to the last fresh mark."""
    if stale is None:
        return frame
    return frame.filter(pl.col("time").cast(pl.Int64) <= stale.after_ns)


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _stale_note(stale: Stale | None) -> str:
    if stale is None:
        return ""
    return (
        f"{stale.rows:,} PnL rows after {_utc(stale.after_ns)} "
        f"({analytics.format_span(stale.last_ns - stale.after_ns)} of them) left out of the "
        f"span and ratios: their mark was frozen, no tick, fill or mark move stored for over "
        f"{analytics.format_span(FUNDING_MARK_MAX_AGE_NS)} before them (the last at "
        f"{_utc(stale.last_price_ns)})"
    )


def _ratio_end_note(stale: Stale | None) -> str:
    if stale is None:
        return ""
    return f"to {_utc(stale.after_ns)}, the last fresh mark ({stale.rows:,} rows left out: span)"


def _header_by_asset(
    run: RunData, eq: pl.DataFrame, firms: list[str], stale: Stale | None = None
) -> list[Stat]:
    """The firm's PnL and drawdown per settlement asset; no return or ratio, which would
    need the assets added at a conversion rate the stored rows do not hold."""
    stats = []
    times: list[int] = []
    for key in firms:
        firm = eq.filter(pl.col("agent_id") == key)
        asset = key.removeprefix("firm (").removesuffix(")")
        pnl: Decimal = firm["equity"][-1] if firm.height else Decimal(0)
        dd: Decimal = firm["drawdown"].min() if firm.height else Decimal(0)  # type: ignore[assignment]
        stats.append(Stat(f"firm PnL ({asset})", fmt_money(pnl, asset)))
        stats.append(Stat(f"firm max drawdown ({asset})", fmt_money(dd, asset)))
        times += _live(firm, stale)["time"].cast(pl.Int64).to_list()
    why = "n/a: the PnL is in several settlement assets (" + ", ".join(firms) + ")"
    return [
        *stats,
        Stat("Sharpe (firm)", fmt_ratio(None), why),
        *_run_stats(run, sorted(times), stale),
    ]


def _run_stats(run: RunData, ts: list[int], stale: Stale | None = None) -> list[Stat]:
    """Fills, risk rejections and the span of the firm's PnL times ``ts`` (in order), with
    the rows left out of it (``stale``) and why."""
    risk = run["risk_decisions"]
    rejected = int((~risk["accepted"]).sum()) if risk.height else 0
    span = analytics.format_span(ts[-1] - ts[0]) if len(ts) > 1 else "0 s"
    return [
        Stat("fills", f"{run['fills'].height:,}"),
        Stat("risk rejected", f"{rejected:,}", f"of {risk.height:,} checked"),
        Stat("span", span, _stale_note(stale)),
    ]


def run_symbols(run: RunData) -> list[str]:
    return sorted(
        set(run["ticks"]["symbol"].to_list())
        | set(run["fills"]["symbol"].to_list())
        | set(run["pnl"]["symbol"].to_list())
    )


def interactive_page(
    run: RunData,
    table: pl.DataFrame,
    instruments: dict[str, Instrument],
    capital_quote: float | None,
    notes: list[str],
    *,
    currency: str = "",
) -> str:
    units = Units(instruments)
    symbols = run_symbols(run)
    # the asset of the symbols with money rows, not of every stored one: a quoted USDT
    # market beside a traded BTC-settled contract made the BTC PnL "BTC/USDT"
    money = units.money(money_symbols(run))
    trades = trade_list(run, units)
    sections: list[tuple[str, go.Figure | str]] = [
        ("agents", table_html(table) if table.height else "<p class='note'>no agents</p>"),
        ("price and fills", price_figure(run, units)),
        (
            "equity and drawdown (per agent and firm)",
            equity_figure(run, money_label(run, units), units.assets()),
        ),
        (
            f"trades ({trades.height})",
            table_html(trades) if trades.height else "<p class='note'>no fills</p>",
        ),
        ("risk decisions", risk_figure(run)),
        ("LLM decisions", llm_figure(run)),
    ]
    if not units.known(symbols):
        notes = [
            f"prices in ticks: the instruments of {symbols} are unknown "
            "(pass --config FILE for quote units)",
            *notes,
        ]
    return page(
        f"Sapphire run {run.run_id}",
        header(run, table, money, capital_quote, units.assets(), instruments, currency=currency),
        sections,
        notes,
    )


def _fmt(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
