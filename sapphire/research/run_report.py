"""HTML + PNG report of a stored run (``sapphire report RUN_ID``), read from the Parquet store.

Figures: equity (the ``pnl`` table's ``equity_quote`` per agent), drawdown from the equity
peak, positions (lots), spread captured by maker fills (fill price against the stored
quote's mid just before it, in bps), fills over the mid, risk decisions (rejections by
reason), and LLM decisions (action and confidence; a run without an LLM agent says so).
Every figure is written even when its table is empty, with a note instead of lines, so the
page always has the same sections.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

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


def equity_frame(run: RunData) -> pl.DataFrame:
    """Per agent: time, equity (quote), drawdown (quote, <= 0), position (lots)."""
    pnl = run["pnl"]
    if pnl.is_empty():
        return pl.DataFrame(
            schema={
                "agent_id": pl.String,
                "time": pl.Datetime("ns"),
                "equity": pl.Float64,
                "drawdown": pl.Float64,
                "position_lots": pl.Int64,
            }
        )
    return (
        pnl.select(
            "agent_id",
            _time(),
            pl.col("equity_quote").cast(pl.Float64).alias("equity"),
            "position_lots",
        )
        .with_columns(
            (pl.col("equity") - pl.col("equity").cum_max().over("agent_id")).alias("drawdown")
        )
        .select("agent_id", "time", "equity", "drawdown", "position_lots")
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
        return fills.select("ts_ns", "agent_id", "is_maker").with_columns(
            pl.lit(None, pl.Float64).alias("mid_ticks"),
            pl.lit(None, pl.Float64).alias("captured_bps"),
        )
    joined = fills.join_asof(
        mid, on="ts_ns", by="symbol", strategy="backward", check_sortedness=False
    )
    return joined.select(
        "ts_ns",
        "agent_id",
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


def summary(run: RunData) -> pl.DataFrame:
    """One row per agent: fills, maker share, final equity, max drawdown, rejections."""
    agents = sorted(
        {a for t in ("pnl", "fills", "risk_decisions") for a in run[t]["agent_id"].to_list() if a}
    )
    eq = equity_frame(run)
    cap = spread_captured(run)
    risk = run["risk_decisions"]
    rows = []
    for agent in agents:
        e = eq.filter(pl.col("agent_id") == agent)
        f = run["fills"].filter(pl.col("agent_id") == agent)
        c = cap.filter((pl.col("agent_id") == agent) & pl.col("is_maker"))
        r = risk.filter(pl.col("agent_id") == agent)
        rows.append(
            {
                "agent_id": agent,
                "fills": f.height,
                "maker_fills": int(f["is_maker"].sum()) if f.height else 0,
                "final_equity": _num(e["equity"][-1]) if e.height else 0.0,
                "max_drawdown": _num(e["drawdown"].min()) if e.height else 0.0,
                "final_position_lots": int(e["position_lots"][-1]) if e.height else 0,
                "spread_captured_bps": _num(c["captured_bps"].mean()) if c.height else 0.0,
                "risk_checked": r.height,
                "risk_rejected": int((~r["accepted"]).sum()) if r.height else 0,
            }
        )
    return (
        pl.DataFrame(rows)
        if rows
        else pl.DataFrame({"agent_id": []}, schema={"agent_id": pl.String})
    )


def _num(value: object) -> float:
    """A polars scalar (``None`` for an empty or all-null column) as a float."""
    return float(value) if isinstance(value, int | float) else 0.0


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


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
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)


def fig_equity(run: RunData) -> Figure:
    eq = equity_frame(run)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=not eq.is_empty())
    _per_agent(axes[0], eq, "equity", "equity (quote)")
    axes[0].set_title(f"{run.run_id}: equity, drawdown, position")
    _per_agent(axes[1], eq, "drawdown", "drawdown (quote)")
    _per_agent(axes[2], eq, "position_lots", "position (lots)", step=True)
    fig.tight_layout()
    return fig


def fig_fills(run: RunData) -> Figure:
    fig, axes = plt.subplots(2, 1, figsize=(10, 7))
    mid = mids(run).with_columns(_time())
    cap = spread_captured(run).with_columns(_time())
    ax = axes[0]
    if mid.is_empty() and cap.is_empty():
        _empty(ax, "no quotes or fills stored")
    else:
        if not mid.is_empty():
            ax.plot(
                mid["time"].to_numpy(),
                mid["mid_ticks"].to_numpy(),
                lw=0.7,
                color="grey",
                label="mid",
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
        ax.legend(loc="best", fontsize=8)
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
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def fig_risk(run: RunData) -> Figure:
    fig, ax = plt.subplots(figsize=(10, 4))
    risk = run["risk_decisions"]
    if risk.is_empty():
        _empty(ax, "no risk decisions stored")
        return fig
    counts = (
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
    labels = [f"{a}\n{o}" for a, o in zip(counts["agent_id"], counts["outcome"], strict=True)]
    colours = ["tab:green" if o == "accepted" else "tab:red" for o in counts["outcome"]]
    ax.bar(range(counts.height), counts["len"].to_numpy(), color=colours)
    ax.set_xticks(range(counts.height), labels, fontsize=8)
    rejected = int((~risk["accepted"]).sum())
    ax.set_title(f"risk decisions: {risk.height} checked, {rejected} rejected")
    ax.set_ylabel("intents")
    fig.tight_layout()
    return fig


def fig_llm(run: RunData) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
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
    try:
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)
    return path


def write_run_report(
    root: str | os.PathLike[str] | TableReader, run_id: str, out_dir: Path
) -> RunReport:
    """``<out_dir>/<run_id>.html`` with the PNGs inlined, and each PNG beside it."""
    run = load_run(root, run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = {
        name: _save(make(run), out_dir / f"{run_id}_{name}.png") for name, make in FIGURES.items()
    }
    table = summary(run)
    notes = [f"{t}: {run[t].height} rows" for t in TABLES]
    page = out_dir / f"{run_id}.html"
    page.write_text(_html(run_id, table, pngs, notes), encoding="utf-8")
    return RunReport(page, pngs, table, notes)


def _html(run_id: str, table: pl.DataFrame, pngs: dict[str, Path], notes: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in table.iter_rows()
    )
    figures = "".join(
        f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' "
        f"src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode('ascii')}'>"
        for name, p in pngs.items()
    )
    rows = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    title = html.escape(f"Sapphire run {run_id}")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif}}"
        "td,th{padding:2px 8px;text-align:right}</style></head>"
        f"<body><h1>{title}</h1><table><tr>{head}</tr>{body}</table>"
        f"<ul>{rows}</ul>{figures}</body></html>"
    )


def _fmt(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
