"""The run summary table printed at the end of the main job."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from actors.system import RunResult


def print_summary(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    summary = result.summary
    counters = summary["counters"]
    console.print(
        f"[bold]run {result.run_id}[/bold]: {counters['events']:,} events in {result.steps} steps, "
        f"{result.wall_s:.2f} s ({counters['events'] / max(result.wall_s, 1e-9):,.0f} events/s)"
    )
    table = Table(title="Agents")
    for col in (
        "agent/symbol",
        "position (lots)",
        "traded (lots)",
        "realized",
        "fees",
        "PnL (quote)",
    ):
        table.add_column(col, justify="right")
    for name, row in summary["agents"].items():
        table.add_row(
            name,
            str(row["position_lots"]),
            str(row["traded_lots"]),
            row["realized_quote"],
            row["fees_quote"],
            row["pnl_quote"],
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
    for agent, why in summary["quarantined"].items():
        totals.add_row(f"quarantined {agent}", why)
    for table_name, n in summary["rows"].items():
        totals.add_row(f"rows stored: {table_name}", f"{n:,}")
    latencies = summary["step_latency_s"]
    if latencies:
        totals.add_row("step latency p50 (ms)", f"{statistics.median(latencies) * 1e3:.2f}")
    for stage, seconds in summary.get("stage_s", {}).items():
        totals.add_row(f"time in {stage} (s)", f"{seconds:.2f}")
    totals.add_row("store", str(result.storage_root))
    console.print(totals)
