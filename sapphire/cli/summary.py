"""The end-of-run screen, shared by every runner."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(
    run_id: str,
    summary: Mapping[str, Any],
    steps: int,
    wall_s: float,
    store: Path | str,
    console: Console | None = None,
) -> None:
    """The end-of-run screen of every runner (``sapphire run``, ``sapphire backtest``)."""
    console = console or Console()
    counters = summary["counters"]
    console.print(
        f"[bold]run {run_id}[/bold]: {counters['events']:,} events in {steps:,} steps, "
        f"{wall_s:.2f} s ({counters['events'] / max(wall_s, 1e-9):,.0f} events/s)"
    )
    timing = summary.get("timing")
    if timing:
        ms = {k: v / 1e6 for k, v in timing.items()}
        exact = "APPROXIMATE (window > lookahead)" if summary.get("approximate") else "exact"
        console.print(
            f"timing: feed {ms['feed_ns']:g} ms, decision {ms['decision_ns']:g} ms, "
            f"entry {ms['entry_ns']:g} ms, response {ms['response_ns']:g} ms; "
            f"window {summary.get('window_ns', 0) / 1e6:g} ms ({exact})"
        )
    table = Table(title="Agents")
    # money is in each instrument's settlement asset (BTC for inverse contracts): one unit
    # for every agent goes in the headers, so an 80-column screen never cuts a figure
    units = {row.get("unit", "") for row in summary["agents"].values()}
    shared = f" ({units.pop()})" if len(units) == 1 and "" not in units else ""
    for col in (
        "agent/symbol",
        "position (lots)",
        "traded (lots)",
        f"realized{shared}",
        f"fees{shared}",
        f"PnL{shared}",
    ):
        # figures never cut: the name and header columns fold onto a second line instead
        money = col.startswith(("realized", "fees", "PnL"))
        table.add_column(col, justify="right", no_wrap=money, overflow="fold")
    for name, row in summary["agents"].items():
        unit = f" {row['unit']}" if row.get("unit") and not shared else ""
        at_mark = f" ({row['pnl_at_mark']})" if row.get("pnl_at_mark") else ""
        table.add_row(
            name,
            str(row["position_lots"]),
            str(row["traded_lots"]),
            row["realized_quote"] + unit,
            row["fees_quote"] + unit,
            row["pnl_quote"] + unit + at_mark,
        )
    console.print(table)
    totals = Table(title="Orders, risk and storage")
    totals.add_column("metric")
    totals.add_column("value", justify="right")
    totals.add_row("orders sent", str(counters["orders"]))
    totals.add_row("cancels sent", str(counters["cancels"]))
    totals.add_row("fills", str(summary["fills"]))
    for status, n in sorted(summary["orders_by_status"].items()):
        totals.add_row(f"orders {status}", str(n))
    for reason, n in sorted(summary["risk_rejections"].items()):
        totals.add_row(f"risk rejected: {reason}", str(n))
    for reason, n in sorted(summary.get("venue_rejections", {}).items()):
        totals.add_row(f"venue rejected: {reason}", str(n))
    totals.add_row("kill switch", "TRIPPED" if summary["kill_switch"] else "off")
    for agent, why in summary.get("invalid_outputs", {}).items():
        totals.add_row(f"outputs refused: {agent}", why)
    for agent, why in summary.get("quarantined", {}).items():
        totals.add_row(f"quarantined {agent}", why)
    for key, n in sorted(summary.get("reconciliation", {}).items()):
        totals.add_row(f"venue reconciliation: {key}", str(n))
    if summary.get("failure"):
        totals.add_row("[red]FAILED[/red]", str(summary["failure"])[:200])
    produced = summary.get("rows_produced", summary["rows"])
    for table_name, n in summary["rows"].items():
        totals.add_row(f"rows stored: {table_name}", f"{n:,}")
        missing = produced.get(table_name, n) - n
        if missing:
            totals.add_row(f"[red]rows NOT stored: {table_name}[/red]", f"{missing:,}")
    for reason, n in sorted(summary.get("input_rejected", {}).items()):
        totals.add_row(f"input rejected: {reason}", f"{n:,}")
    latencies = summary.get("step_latency_s", [])
    if latencies:
        totals.add_row("step latency p50 (ms)", f"{statistics.median(latencies) * 1e3:.2f}")
    for stage, seconds in summary.get("stage_s", {}).items():
        totals.add_row(f"time in {stage} (s)", f"{seconds:.2f}")
    totals.add_row("store", str(store))
    console.print(totals)
    print_cache(summary.get("cache", {}), console)


def print_cache(cache: Mapping[str, Any], console: Console) -> None:
    """Per cache (instrument specs, LLM decisions): lookups, and who answered them."""
    reports = {name: r for name, r in cache.items() if isinstance(r, Mapping)}
    if not reports:
        return
    table = Table(title="Cache: L1 (in process) -> L2 (Redis) -> L3 (source)")
    for col in ("cache", "lookups", "L1 hit/miss", "L2 hit/miss", "L2 errors", "L3 loads"):
        table.add_column(col, justify="right")
    table.add_column("hit rate", justify="right")
    for name, r in reports.items():
        l1, l2, l3 = r["l1"], r["l2"], r["l3"]
        table.add_row(
            name,
            f"{r['lookups']:,}",
            f"{l1['hits']:,}/{l1['misses']:,} ({l1['hit_ratio']:.0%})",
            f"{l2['hits']:,}/{l2['misses']:,} ({l2['hit_ratio']:.0%})",
            f"{l2['errors']:,}",
            f"{l3['loads']:,}" + (f" ({l3['errors']:,} failed)" if l3["errors"] else ""),
            f"{r['combined_hit_ratio']:.1%}",
        )
    console.print(table)
    if cache.get("unavailable"):
        console.print(f"cache counts missing for agents: {', '.join(cache['unavailable'])}")
