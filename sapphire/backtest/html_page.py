"""Interactive report pages: plotly figures in one self-contained HTML file.

plotly.js is inlined once per page (in the first figure), so a report opens offline, from a
mail attachment or a CI artefact, with zoom, pan and hover; no CDN is referenced. Shared by
bar backtests (:mod:`sapphire.backtest.report`) and stored runs
(:mod:`sapphire.research.run_report`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
from plotly.colors import qualitative

from sapphire.storage.money import quote_scale, round_to_scale

# Above this many points a line is drawn with WebGL: a day of quotes stays responsive.
WEBGL_POINTS = 5_000
# The trade list keeps the page small; the full list is the CSV / the store's fills table.
MAX_TRADE_ROWS = 500
_COLOURS: list[str] = list(qualitative.D3)


@dataclass(frozen=True)
class Stat:
    label: str
    value: str
    note: str = ""  # shown under the value (why a ratio is n/a, a unit)


def agent_colour(index: int) -> str:
    return _COLOURS[index % len(_COLOURS)]


def line(x: Any, y: Any, **kwargs: Any) -> go.Scatter | go.Scattergl:
    size = len(x) if hasattr(x, "__len__") else 0
    cls = go.Scattergl if size > WEBGL_POINTS else go.Scatter
    return cls(x=x, y=y, mode="lines", **kwargs)


def markers(
    x: Any,
    y: Any,
    *,
    name: str,
    symbol: str,
    colour: str,
    size: int = 10,
    outline: bool = True,
    opacity: float = 1.0,
    **kwargs: Any,
) -> go.Scatter:
    """Points on a price chart (fills, signals): one marker style for every report."""
    marker: dict[str, Any] = {"symbol": symbol, "size": size, "color": colour, "opacity": opacity}
    if outline:
        marker["line"] = {"width": 1, "color": "black"}
    return go.Scatter(x=x, y=y, mode="markers", name=name, marker=marker, **kwargs)


def times(ts_ns: npt.NDArray[np.int64] | Sequence[int]) -> npt.NDArray[np.datetime64]:
    """Nanosecond timestamps as datetimes (plotly's date axis, UTC)."""
    return np.asarray(ts_ns, dtype=np.int64).astype("datetime64[ns]")


def drawdown(equity: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Equity below its running peak, in the equity's unit (<= 0)."""
    if equity.size == 0:
        return equity
    return equity - np.maximum.accumulate(equity)


def money_scale(unit: str) -> int:
    """Fractional digits of money in ``unit``: its asset's stored scale (``quote_scale``);
    a mixed unit ("USDT/ETH") keeps the finest, so no asset's figures lose digits."""
    return max(quote_scale(u) for u in unit.split("/"))


def money_text(value: Decimal, unit: str) -> str:
    """Cash for people as the end-of-run screen prints it: the settlement asset's stored
    scale, no exponent, no float noise."""
    # the stored tables' rule (half-even at the scale), never the ambient decimal context,
    # which a library may have changed
    return f"{round_to_scale(value, money_scale(unit)):f}"


def fmt_money(value: Decimal, unit: str = "") -> str:
    return f"{money_text(value, unit)} {unit}".strip()


def money_column(values: Sequence[Decimal], unit: str) -> pl.Series:
    """Decimal cash as a table column at ``unit``'s scale (what the stored tables hold)."""
    scale = money_scale(unit)
    return pl.Series([round_to_scale(v, scale) for v in values], dtype=pl.Decimal(38, scale))


def fmt_pct(value: float) -> str:
    pct = value * 100
    # a two-minute run moves thousandths of a percent: keep its digits
    return f"{pct:+.3g} %" if 0 < abs(pct) < 0.01 else f"{pct:+.2f} %"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def figure(height: int = 420) -> go.Figure:
    fig = go.Figure()
    style(fig, height)
    return fig


def style(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(
        height=height,
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
        hovermode="x unified",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        template="plotly_white",
    )
    return fig


def empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(
        text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def table_html(frame: pl.DataFrame, limit: int = MAX_TRADE_ROWS) -> str:
    shown = frame.head(limit)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in shown.iter_rows()
    )
    more = (
        f"<p class='note'>first {limit} of {frame.height} rows</p>" if frame.height > limit else ""
    )
    return f"<table class='data'><tr>{head}</tr>{body}</table>{more}"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.8g}"
    if isinstance(value, Decimal):  # str() writes a quantized zero as "0E-8"
        return f"{value:f}"
    return "" if value is None else str(value)


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    ".stats{display:flex;flex-wrap:wrap;gap:.6em;margin:1em 0}"
    ".stat{border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:9em}"
    ".stat .l{font-size:.8em;color:#666}.stat .v{font-size:1.3em;font-weight:600}"
    ".stat .n{font-size:.75em;color:#888;max-width:16em}"
    "table.data{border-collapse:collapse;font-size:.85em}"
    "table.data td,table.data th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}"
    ".note{color:#666;font-size:.85em}"
)


def page(
    title: str,
    stats: Sequence[Stat],
    sections: Sequence[tuple[str, go.Figure | str]],
    notes: Sequence[str] = (),
) -> str:
    """The whole page: title, the stats header, then each section (a figure or HTML)."""
    cards = "".join(
        f"<div class='stat'><div class='l'>{html.escape(s.label)}</div>"
        f"<div class='v'>{html.escape(s.value)}</div>"
        + (f"<div class='n'>{html.escape(s.note)}</div>" if s.note else "")
        + "</div>"
        for s in stats
    )
    parts: list[str] = []
    first = True
    for name, body in sections:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        if isinstance(body, go.Figure):
            parts.append(
                pio.to_html(
                    body,
                    full_html=False,
                    include_plotlyjs=first,  # inline, once: the page works offline
                    config={"displaylogo": False, "responsive": True},
                )
            )
            first = False
        else:
            parts.append(body)
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><div class='stats'>{cards}</div>"
        + "".join(parts)
        + (f"<ul class='note'>{items}</ul>" if items else "")
        + "</body></html>"
    )
