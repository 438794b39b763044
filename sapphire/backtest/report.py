"""Backtest reports: a PNG (equity, drawdown, inventory) and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt
import msgspec
import numpy as np

from sapphire.backtest.analytics import Summary
from sapphire.backtest.ledger import BacktestResult, equity_frame, fills_frame
from sapphire.model.instrument import Instrument


def write_png(result: BacktestResult, path: Path, title: str, lot: float = 1.0) -> Path:
    ts = np.asarray(result.equity_ts, dtype=np.int64).astype("datetime64[ns]")
    eq = np.asarray(result.equity, dtype=np.float64)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    try:
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
    finally:
        plt.close(fig)
    return path


def write_html(summary: Summary, png: Path, path: Path, title: str) -> Path:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v:.6g}</td></tr>"
        if isinstance(v, float)
        else f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>"
        for k, v in msgspec.structs.asdict(summary).items()
    )
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}th{text-align:left;padding-right:1em}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><table>{rows}</table>"
        f"<img alt='equity' src='data:image/png;base64,{image}'></body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path


def write_report(
    result: BacktestResult, summary: Summary, out_dir: Path, name: str, inst: Instrument
) -> tuple[Path, Path]:
    """``<name>.png`` and ``<name>.html`` (the PNG inlined), the summary as ``<name>.json``,
    the trades as ``<name>_trades.csv`` and the equity curve as ``<name>_equity.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = write_png(result, out_dir / f"{name}.png", name, inst.lot_float)
    fills_frame(result, inst).write_csv(out_dir / f"{name}_trades.csv")
    equity_frame(result).write_csv(out_dir / f"{name}_equity.csv")
    page = write_html(summary, png, out_dir / f"{name}.html", name)
    (out_dir / f"{name}.json").write_bytes(msgspec.json.encode(summary))
    return png, page
