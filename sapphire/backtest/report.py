"""Backtest reports: a PNG (equity, drawdown, inventory) and an interactive, self-contained
HTML page (plotly): candles in quote units with the strategy's indicators, its entry and exit
signals and the fills, equity/drawdown/position, the trade list, and a stats header whose
Sharpe/Sortino read n/a, with the reason, where the window is too short to annualise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import plotly.graph_objects as go
import polars as pl
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from sapphire.agents.indicator import SIGNAL_COLUMNS
from sapphire.backtest.analytics import Summary, format_span
from sapphire.backtest.html_page import (
    Stat,
    agent_colour,
    drawdown,
    fmt_money,
    fmt_pct,
    fmt_ratio,
    line,
    markers,
    money_column,
    page,
    style,
    table_html,
    times,
)
from sapphire.backtest.ledger import BacktestResult, equity_frame, fees_paid, fills_frame
from sapphire.model.instrument import Instrument


def subplots(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs: Any
) -> tuple[Figure, Any]:
    """A figure with axes, without pyplot: no global backend is chosen or changed, so a
    notebook importing the reports keeps drawing inline (PNG files go through Agg anyway)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def write_png(result: BacktestResult, path: Path, title: str, lot: float = 1.0) -> Path:
    ts = np.asarray(result.equity_ts, dtype=np.int64).astype("datetime64[ns]")
    eq = np.asarray(result.equity, dtype=np.float64)
    fig, axes = subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(ts, eq, lw=1.0)
    axes[0].set_ylabel("equity")
    axes[0].set_title(title)
    peak = np.maximum.accumulate(eq) if eq.size else eq
    axes[1].fill_between(ts, 0, -(peak - eq) / np.where(peak > 0, peak, 1), color="tab:red")
    axes[1].set_ylabel("drawdown")
    position = np.asarray(result.position, dtype=np.float64) * lot
    axes[2].step(ts, position, where="post", lw=1.0, color="tab:green")
    axes[2].set_ylabel("position (base)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


# Columns of a strategy frame that are not indicators.
_NOT_INDICATORS = {"ts_event_ns", "open", "high", "low", "close", "volume", *SIGNAL_COLUMNS}
_MARKS = {
    "enter_long": ("triangle-up", "#2ca02c", "enter long"),
    "exit_long": ("x", "#2ca02c", "exit long"),
    "enter_short": ("triangle-down", "#d62728", "enter short"),
    "exit_short": ("x", "#d62728", "exit short"),
}


def money_unit(inst: Instrument) -> str:
    return inst.settle_asset or "quote"


def stats(summary: Summary, result: BacktestResult, unit: str) -> list[Stat]:
    """The formatted header: money from the ledger's Decimals at the settlement asset's
    scale (``unit``), ratios n/a with the reason."""
    note = summary.ratio_note
    return [
        Stat("return", fmt_pct(summary.total_return)),
        Stat("final equity", fmt_money(result.final_equity, unit)),
        Stat("PnL", fmt_money(result.final_equity - result.initial_cash, unit)),
        Stat("max drawdown", f"{summary.max_drawdown * 100:.2f} %"),
        Stat("Sharpe", fmt_ratio(summary.sharpe), note),
        Stat("Sortino", fmt_ratio(summary.sortino), note),
        Stat("fills", f"{summary.fills:,}"),
        Stat("round trips", f"{summary.round_trips:,}", f"hit rate {summary.hit_rate:.0%}"),
        Stat("fees", fmt_money(fees_paid(result), unit)),
        Stat("turnover", f"{summary.turnover:.2f}x"),
        Stat("span", format_span(summary.span_ns), f"{summary.events:,} events"),
    ]


def _indicators(bars: pl.DataFrame) -> tuple[list[str], list[str]]:
    """Indicator columns: those on the price's scale overlay the candles, others (RSI,
    MACD) get their own panel."""
    close = bars["close"].drop_nulls()
    mid = float(close.median()) if close.len() else 0.0  # type: ignore[arg-type]
    overlay: list[str] = []
    panel: list[str] = []
    for col in bars.columns:
        if col in _NOT_INDICATORS or col.endswith("_ticks") or col.endswith("_lots"):
            continue
        if not bars[col].dtype.is_numeric() or bars[col].dtype == pl.Boolean:
            continue
        values = bars[col].cast(pl.Float64).drop_nulls().drop_nans()
        if values.is_empty():
            continue
        med = float(values.median())  # type: ignore[arg-type]
        (overlay if mid > 0 and 0.5 * mid <= med <= 2 * mid else panel).append(col)
    return overlay, panel


def price_figure(
    result: BacktestResult, inst: Instrument, agent: str, bars: pl.DataFrame | None
) -> go.Figure:
    """Candles (quote units) with the strategy's indicators, its entry/exit signals and the
    fills; oscillators in a panel below."""
    overlay, panel = _indicators(bars) if bars is not None else ([], [])
    rows = 2 if panel else 1
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.75, 0.25][:rows] if rows == 2 else [1.0],
        vertical_spacing=0.04,
    )
    unit = inst.quote or "quote"
    if bars is not None and not bars.is_empty():
        t = times(bars["ts_event_ns"].to_numpy())
        fig.add_trace(
            go.Candlestick(
                x=t,
                open=bars["open"].to_numpy(),
                high=bars["high"].to_numpy(),
                low=bars["low"].to_numpy(),
                close=bars["close"].to_numpy(),
                name=inst.symbol,
                increasing_line_color="#26a69a",
                decreasing_line_color="#ef5350",
            ),
            row=1,
            col=1,
        )
        for col in overlay:
            fig.add_trace(line(t, bars[col].to_numpy(), name=col, line={"width": 1}), 1, 1)
        for col in panel:
            fig.add_trace(line(t, bars[col].to_numpy(), name=col, line={"width": 1}), 2, 1)
        for col, (symbol, colour, label) in _MARKS.items():
            if col not in bars.columns:
                continue
            hit = bars.filter(pl.col(col) == 1)
            if hit.is_empty():
                continue
            # a signal on a bar's close: drawn at the close, the order fills at the next open
            fig.add_trace(
                markers(
                    times(hit["ts_event_ns"].to_numpy()),
                    hit["close"].to_numpy(),
                    name=f"signal: {label}",
                    symbol=symbol,
                    colour=colour,
                    size=8,
                    outline=False,
                    opacity=0.5,
                ),
                1,
                1,
            )
    money = money_unit(inst)
    fills = fills_frame(result, inst).with_columns(
        pl.Series("fee_text", [fmt_money(f.fee_quote, money) for f in result.fills], pl.String)
    )
    for side, symbol in (("buy", "triangle-up"), ("sell", "triangle-down")):
        part = fills.filter(pl.col("side") == side)
        if part.is_empty():
            continue
        fig.add_trace(
            markers(
                times(part["ts_event_ns"].to_numpy()),
                part["price"].to_numpy(),
                name=f"{agent} {side}",
                symbol=symbol,
                colour=agent_colour(0),
                size=11,
                customdata=part["qty"].to_numpy(),
                text=part["fee_text"].to_list(),
                hovertemplate=f"{side} %{{customdata}} @ %{{y}} {unit}"
                f"<br>fee %{{text}}<extra>{agent}</extra>",
            ),
            1,
            1,
        )
    fig.update_yaxes(title_text=f"price ({unit})", row=1, col=1)
    fig.update_xaxes(rangeslider_visible=False)
    return style(fig, 620 if rows == 2 else 520)


def equity_figure(result: BacktestResult, unit: str, agent: str, lot: float) -> go.Figure:
    t = times(result.equity_ts)
    eq = np.asarray(result.equity, dtype=np.float64)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.05)
    colour = agent_colour(0)
    fig.add_trace(line(t, eq, name=f"{agent} equity", line={"color": colour}), 1, 1)
    fig.add_trace(
        line(t, drawdown(eq), name=f"{agent} drawdown", fill="tozeroy", line={"color": "#d62728"}),
        2,
        1,
    )
    position = np.asarray(result.position, dtype=np.float64) * lot
    fig.add_trace(
        go.Scatter(x=t, y=position, name="position", line={"shape": "hv", "color": "#2ca02c"}),
        3,
        1,
    )
    fig.update_yaxes(title_text=f"equity ({unit})", row=1, col=1)
    fig.update_yaxes(title_text=f"drawdown ({unit})", row=2, col=1)
    fig.update_yaxes(title_text="position (base)", row=3, col=1)
    return style(fig, 620)


def trade_list(result: BacktestResult, inst: Instrument) -> pl.DataFrame:
    """The fills as a trader reads them: prices on the tick grid, quantities on the lot
    grid, the fee at the settlement asset's scale (Decimals, no float digits)."""
    fills = result.fills
    return pl.DataFrame(
        [
            pl.Series("ts_event_ns", [f.ts_event_ns for f in fills], pl.Int64),
            pl.Series("side", [f.side.name.lower() for f in fills], pl.String),
            pl.Series(
                "price", [f"{inst.ticks_to_price(f.price_ticks):f}" for f in fills], pl.String
            ),
            pl.Series("qty", [f"{inst.lots_to_qty(f.qty_lots):f}" for f in fills], pl.String),
            money_column([f.fee_quote for f in fills], money_unit(inst)).alias("fee"),
            pl.Series("is_maker", [f.is_maker for f in fills], pl.Boolean),
            pl.Series(
                "position_after",
                [f"{inst.lots_to_qty(f.position_after):f}" for f in fills],
                pl.String,
            ),
        ]
    ).select(
        pl.from_epoch("ts_event_ns", time_unit="ns").dt.strftime("%Y-%m-%d %H:%M:%S").alias("time"),
        pl.exclude("ts_event_ns"),
    )


def write_html(
    result: BacktestResult,
    summary: Summary,
    path: Path,
    title: str,
    inst: Instrument,
    agent: str = "agent",
    bars: pl.DataFrame | None = None,
) -> Path:
    """The interactive page (plotly.js inlined): stats header, price with indicators, signals
    and fills, equity/drawdown/position, the trade list."""
    unit = money_unit(inst)
    trades = trade_list(result, inst)
    sections: list[tuple[str, go.Figure | str]] = [
        ("price, signals and fills", price_figure(result, inst, agent, bars)),
        ("equity, drawdown, position", equity_figure(result, unit, agent, inst.lot_float)),
        (
            f"trades ({trades.height})",
            table_html(trades) if trades.height else "<p class='note'>no fills</p>",
        ),
    ]
    notes = [f"{agent} on {inst.symbol}: tick {inst.tick_size}, lot {inst.lot_size}"]
    page_html = page(title, stats(summary, result, unit), sections, notes)
    path.write_text(page_html, encoding="utf-8")
    return path


def write_report(
    result: BacktestResult,
    summary: Summary,
    out_dir: Path,
    name: str,
    inst: Instrument,
    agent: str = "agent",
    bars: pl.DataFrame | None = None,
) -> tuple[Path, Path]:
    """``<name>.png`` (static), ``<name>.html`` (interactive, self-contained), the summary
    as ``<name>.json``, the trades as ``<name>_trades.csv`` and the equity curve as
    ``<name>_equity.csv``. ``bars``: the strategy's frame (OHLCV in quote units, indicator
    and signal columns) for the price chart."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = write_png(result, out_dir / f"{name}.png", name, inst.lot_float)
    fees = money_column([f.fee_quote for f in result.fills], money_unit(inst))
    fills_frame(result, inst).with_columns(fees.alias("fee_quote")).write_csv(
        out_dir / f"{name}_trades.csv"
    )
    equity_frame(result).write_csv(out_dir / f"{name}_equity.csv")
    page_path = write_html(result, summary, out_dir / f"{name}.html", name, inst, agent, bars)
    (out_dir / f"{name}.json").write_bytes(msgspec.json.encode(summary))
    return png, page_path
