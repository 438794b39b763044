"""The end-of-run screen, shared by every runner."""

from __future__ import annotations

import os
import shlex
import statistics
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from sapphire.data.derived_quotes import DERIVED, derived_counts
from sapphire.data.validation import DAMAGED
from sapphire.storage.money import quote_scale, round_to_scale

# what each rejection means, and the setting behind it (sapphire.model.orders.RejectReason)
REJECTION_HELP: dict[str, str] = {
    "invalid_tick": "price not on the instrument's tick",
    "invalid_lot": "size not a whole number of lots",
    "min_qty": "below the venue's minimum size",
    "max_qty": "above the venue's maximum size",
    "min_notional": "price x size below the venue's minimum notional",
    "insufficient_balance": "the account lacked the balance or margin (exchange.params.balances)",
    "post_only_would_take": "a post-only order would have crossed the book and taken",
    "fok_not_fillable": "fill-or-kill order the book could not fill whole",
    # the venue's book: its depth, or its quotes where a symbol has none
    "no_liquidity": "market or IOC order with no opposite book within its limit "
    "(exchange.params.book_from_quotes)",
    "self_trade": "would have traded with a resting order of the same account "
    "(exchange.params.self_trade; coordinator.crossing: internal crosses agents in the firm)",
    "duplicate_client_order_id": "a client order id already used",
    "unknown_order": "cancel or amend of an order the venue does not know",
    "unknown_symbol": "a symbol the venue does not list",
    "liquidation": "canceled by the venue's liquidation (exchange.params.liquidation)",
    "risk_kill_switch": "the kill switch was on (sapphire stop / kill-switch, daily loss)",
    "risk_max_position": "position + open orders over risk max_position_lots",
    "risk_order_size": "order over risk max_order_lots",
    "risk_max_notional": "exposure over risk max_notional_quote",
    "risk_order_rate": "over risk max_orders_per_second",
    "risk_price_band": "limit price further than risk.price_band_bps from mid",
    "risk_daily_loss": "agent or firm daily loss limit reached",
    # also the price that converts a settlement asset into the firm's currency (the
    # capital share is valued in it): the start refuses a run where no instrument gives one
    "risk_no_market": "no market price yet for the symbol, or for the instrument that "
    "converts its settlement asset into the firm's currency",
    "risk_consensus": "against the agents' consensus (risk.consensus_gate)",
    "risk_agent_quarantined": "the agent hung or failed and was stopped",
    "exchange_error": "the venue answered with an error",
}


# an order the venue expired with no reason: a market or IOC order's rest once it had filled
_REMAINDER = " - unfilled rest of a market or IOC order after what the book offered"


def _why(reason: str) -> str:
    why = REJECTION_HELP.get(reason)
    return f" - {why}" if why else ""


def money_text(value: Decimal, unit: str) -> str:
    """Cash for people, at the stored scale of its asset (8 decimals for USDT and BTC)."""
    return f"{round_to_scale(value, quote_scale(unit)):f}"  # the stored tables' rounding


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
    steady = summary.get("steady")
    if steady and steady["s"] > 0:
        # the Ray system's pace once its actors are up (start-up: processes, the graph)
        console.print(
            f"after start-up: {steady['events']:,} events in {steady['s']:.2f} s "
            f"({steady['events'] / steady['s']:,.0f} events/s)"
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
    # no inner rules: the same figures in less width
    # quantities in the venue's unit (base, or contracts), one unit for all in the title
    qty_units = {row.get("qty_unit", "lots") for row in summary["agents"].values()}
    qty_shared = next(iter(qty_units)) if len(qty_units) == 1 else ""
    title = f" (position and traded in {qty_shared})" if qty_shared else ""
    table = Table(title=f"Agents{title}", box=box.SIMPLE_HEAD)
    # money is in each instrument's settlement asset (BTC for inverse contracts): one unit
    # for every agent goes in the headers (narrower columns), and a screen too narrow for the
    # table gets it whole (print_uncut): a figure is never cut
    units = {row.get("unit", "") for row in summary["agents"].values()}
    shared = f" ({next(iter(units))})" if len(units) == 1 and "" not in units else ""
    # funding (perpetuals): in the PnL, so shown where any was paid or received, else the
    # columns did not add up to the PnL beside them
    keys = ["realized_quote", "unrealized_quote", "fees_quote", "pnl_quote"]
    if any(Decimal(row.get("funding_quote", "0")) for row in summary["agents"].values()):
        keys.insert(3, "funding_quote")
    headers = {
        "realized_quote": "realized",
        "unrealized_quote": "unrealized",
        "fees_quote": "fees",
        "funding_quote": "funding",
        "pnl_quote": "PnL",
    }
    for col in ("agent/symbol", "position", "traded", *(headers[k] + shared for k in keys)):
        # figures never cut: the name and header columns fold onto a second line instead
        money = col.startswith(("realized", "unrealized", "fees", "funding", "PnL"))
        # the name folds at the '/' on a narrow screen, never to a column of single letters
        table.add_column(
            col,
            justify="right",
            no_wrap=money,
            overflow="fold",
            min_width=None if money else min(len(col), 9),
        )
    totals_by_unit: dict[str, list[Decimal]] = {}
    for name, row in summary["agents"].items():
        unit_name = row.get("unit", "")
        unit = f" {unit_name}" if unit_name and not shared else ""
        at_mark = f" ({row['pnl_at_mark']})" if row.get("pnl_at_mark") else ""
        figures = [Decimal(row.get(key, "0")) for key in keys]
        sums = totals_by_unit.setdefault(unit_name, [Decimal(0)] * len(keys))
        totals_by_unit[unit_name] = [a + b for a, b in zip(sums, figures, strict=True)]
        qty = "" if qty_shared else f" {row.get('qty_unit', 'lots')}"
        table.add_row(
            name,
            str(row.get("position", row["position_lots"])) + qty,
            str(row.get("traded", row["traded_lots"])) + qty,
            *(money_text(v, unit_name) + unit for v in figures[:-1]),
            money_text(figures[-1], unit_name) + unit + at_mark,
        )
    table.add_section()
    # per settlement asset: coin and quote amounts are never added together
    for unit_name, sums in sorted(totals_by_unit.items()):
        unit = f" {unit_name}" if unit_name and not shared else ""
        table.add_row(
            "[bold]firm total[/bold]",
            "",
            "",
            *(f"[bold]{money_text(v, unit_name)}{unit}[/bold]" for v in sums),
        )
    firm = summary.get("firm_pnl")
    if firm and len(totals_by_unit) > 1:
        # the one firm figure (the one its loss limit binds on): each asset at its mark
        rates = ", ".join(f"{a} at {r}" for a, r in firm["rates"].items())
        why = f"partial: no price yet for {', '.join(firm['missing'])}" if firm["partial"] else ""
        note = "; ".join(x for x in (rates, why) if x)
        table.add_row(
            # not "firm total": those rows stay one per asset, never added together
            f"[bold]firm PnL in {firm['asset']}[/bold]" + (f" ({note})" if note else ""),
            *[""] * (len(keys) + 1),
            f"[bold]{money_text(Decimal(firm['total']), firm['asset'])} {firm['asset']}[/bold]",
        )
    print_uncut(table, console)
    totals = Table(title="Orders, risk and storage")
    totals.add_column("metric", overflow="fold")
    totals.add_column("value", justify="right", overflow="fold")
    totals.add_row("orders sent", str(counters["orders"]))
    totals.add_row("cancels sent", str(counters["cancels"]))
    totals.add_row("fills", str(summary["fills"]))
    for status, n in sorted(summary["orders_by_status"].items()):
        totals.add_row(f"orders {status}", str(n))
    for reason, n in sorted(summary["risk_rejections"].items()):
        totals.add_row(f"risk rejected: {reason}{_why(reason)}", str(n))
    for reason, n in sorted(summary.get("venue_rejections", {}).items()):
        totals.add_row(f"venue rejected: {reason}{_why(reason)}", str(n))
    # why the venue expired orders (its own count: the reports' counts above are refusals)
    for key, n in sorted(summary.get("venue_books", {}).items()):
        if key.startswith("expired: ") and n:
            reason = key.removeprefix("expired: ")
            why = _REMAINDER if reason == "remainder" else _why(reason)
            totals.add_row(f"venue expired: {reason}{why}", str(n))
    for key, value in summary.get("crossing", {}).items():
        totals.add_row(f"crossing: {key}", str(value))
    for kind, n in summary.get("in_flight", {}).items():
        # the venue made them within its response latency of the end: no position holds them
        why = " (not in positions or PnL)" if kind == "fills" else ""
        totals.add_row(f"{kind} in flight at the end{why}", str(n))
    totals.add_row("kill switch", "TRIPPED" if summary["kill_switch"] else "off")
    regime = summary.get("regime")
    if regime:  # risk modes: how often each was in force, and where each symbol ended
        by = ", ".join(f"{k} {v}" for k, v in sorted(regime["by_regime"].items()))
        totals.add_row(f"risk modes ({regime['classifier']}): evaluations", by or "none")
        totals.add_row("risk modes: changes", str(regime["changes"]))
        for symbol, mode in regime["current"].items():
            totals.add_row(f"risk mode at the end: {symbol}", str(mode))
        llm = regime.get("llm")
        if llm:
            failed = {k: v for k, v in llm.items() if k not in ("ok", "before_cutoff") and v}
            totals.add_row("risk modes: model fell back", str(failed or "never"))
            if llm.get("before_cutoff"):
                # as an LLM agent's decisions: the model may know what came next
                totals.add_row(
                    "[bold yellow]POINT-IN-TIME[/bold yellow] risk modes: asked about events "
                    "before the model's knowledge cutoff",
                    str(llm["before_cutoff"]),
                )
    for agent, why in summary.get("invalid_outputs", {}).items():
        totals.add_row(f"outputs refused: {agent}", why)
    for agent, why in summary.get("unheard", {}).items():
        # it never acted: not a quiet market, the data lacks what it reads
        totals.add_row(f"[bold yellow]agent read nothing: {agent}[/bold yellow]", why)
    for agent, n in summary.get("agent_errors", {}).items():
        if n:  # the agent raised on these inputs; each was skipped (its log has the trace)
            totals.add_row(f"agent errors: {agent}", f"{n} inputs raised, skipped")
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
    derived = derived_counts(summary.get("input_rejected", {}))
    if derived:  # the touch of symbols recorded with depth and no quote stream
        by_symbol = ", ".join(f"{escape(s)} {n:,}" for s, n in sorted(derived.items()))
        totals.add_row("quotes derived from depth (data.derived_quotes)", by_symbol)
    for reason, n in sorted(summary.get("input_rejected", {}).items()):
        if reason.startswith(DERIVED):
            continue
        if reason.startswith(DAMAGED):  # not a bad row: a file the run could not read whole
            name = escape(reason.removeprefix(DAMAGED))
            label = f"[red]input DAMAGED: {name} (cut or corrupt: read up to the damage)[/red]"
            totals.add_row(label, "see sapphire data inspect")
            continue
        totals.add_row(f"input rejected: {escape(reason)}", f"{n:,}")
    if summary.get("funding_stale_marks"):
        # the funding file ran on after the prices ended: those payments are not booked
        totals.add_row(
            "[yellow]funding not settled: no price for a day before it[/yellow]",
            str(summary["funding_stale_marks"]),
        )
    books = summary.get("venue_books", {})
    if books.get("liquidations"):
        # the paper venue closed positions at their maintenance margin, as a venue would:
        # the fills are the venue's (client order ids autoclose-...), not an agent's orders
        totals.add_row(
            "[red]venue liquidations: positions closed at the maintenance margin "
            "(exchange.params.liquidation)[/red]",
            f"{books['liquidations']} position(s)",
        )
    if books.get("balances_below_zero"):
        # a loss past the margin: the mark gapped past bankruptcy before the liquidation
        # closed the position (or liquidation is off), and the venue booked the rest
        totals.add_row(
            "[red]venue account: balance below zero (the price gapped past bankruptcy "
            "before the liquidation, or exchange.params.liquidation is off)[/red]",
            f"{books['balances_below_zero']} asset(s)",
        )
    if books.get("sequence_gaps"):
        # a lost diff: the venue offered no liquidity from it until a snapshot resynced it
        totals.add_row(
            "[yellow]venue book: diffs missing (no liquidity until the next snapshot)[/yellow]",
            f"{books['sequence_gaps']:,}",
        )
    if books.get("stale_snapshots"):
        totals.add_row(
            "venue book: snapshots older than the book, dropped", str(books["stale_snapshots"])
        )
    if books.get("never_synced"):
        totals.add_row(
            "[red]venue book: never synced (diffs, and no snapshot ever came: no liquidity)[/red]",
            f"{books['never_synced']} symbol(s)",
        )
    if books.get("out_of_sync_at_end"):
        totals.add_row(
            "[red]venue book: out of sync at the end (no snapshot came)[/red]",
            f"{books['out_of_sync_at_end']} symbol(s)",
        )
    if counters.get("clamped"):
        # replayed at the latest time already seen on the run's clock, not dropped
        totals.add_row(
            "[yellow]rows restamped: time ran backwards on the run's clock[/yellow]",
            f"{counters['clamped']:,}",
        )
    lags = summary.get("recorder_lags") or {}
    if lags:
        # the recorder stamped these rows on receipt: replayed at its receive time less its
        # lag, on the exchange's clock with the rest (``sapphire.data.replay.RecorderClock``)
        shown = ", ".join(f"{s} {ns / 1e6:,.1f} ms" for s, ns in sorted(lags.items()))
        totals.add_row("recorder clock behind the exchange's (receive-stamped rows shifted)", shown)
    if summary.get("sessions_missing"):
        missing = ", ".join(summary["sessions_missing"])
        totals.add_row(
            "[red]data.sessions not replayed (in no file, or past the end)[/red]", missing
        )
    replay_cache = summary.get("replay_cache", {})
    if replay_cache:
        read = sum(replay_cache.get(k, 0) for k in ("hits", "prefixes", "misses"))
        totals.add_row(
            "data files read converted (data.cache)",
            f"{replay_cache.get('hits', 0)} of {read}"
            + (f", {replay_cache['prefixes']} in part" if replay_cache.get("prefixes") else ""),
        )
        for key in ("damaged", "write_errors"):
            if replay_cache.get(key):
                totals.add_row(f"[yellow]data.cache {key}[/yellow]", str(replay_cache[key]))
    latencies = summary.get("step_latency_s", [])
    if latencies:
        totals.add_row("step latency p50 (ms)", f"{statistics.median(latencies) * 1e3:.2f}")
    for stage, seconds in summary.get("stage_s", {}).items():
        totals.add_row(f"time in {stage} (s)", f"{seconds:.2f}")
    console.print(totals)
    if summary["kill_switch"] and summary.get("kill_reason"):  # below: a long reason
        why = str(summary["kill_reason"])[:300]
        console.print(f"kill switch TRIPPED: {why}", soft_wrap=True, markup=False, highlight=False)
    # a line of its own, never cut: the path is pasted into the next commands
    console.print(f"store: {store}", soft_wrap=True, markup=False, highlight=False)
    print_cache(summary.get("cache", {}), console)


def print_uncut(table: Table, console: Console) -> None:
    """A table of figures too wide for the screen is printed whole (the terminal wraps its
    lines) rather than squeezed: a figure is never cut or elided."""
    need = Measurement.get(console, console.options.update_width(1000), table).maximum
    if need <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = need  # print(width=...) cannot exceed the console's own width
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


def next_commands(run_id: str, config_path: str | os.PathLike[str], config: Any) -> list[str]:
    """The commands that read a finished run back, wherever it is stored (copy-paste ready)."""
    from sapphire.adapters.stores import store_location

    if config.storage.backend == "bigquery":
        where = f"--config {shlex.quote(str(config_path))}"
    else:
        where = f"--root {shlex.quote(store_location(config))}"
    return [
        f"sapphire query {run_id} {where} --table fills",
        f"sapphire report {run_id} {where}",
    ]


def print_next(
    run_id: str, config_path: str | os.PathLike[str], config: Any, console: Console
) -> None:
    # whole lines (soft_wrap): a command cut at the terminal's edge cannot be pasted
    for i, command in enumerate(next_commands(run_id, config_path, config)):
        console.print(f"{'next:' if i == 0 else '     '} {command}", soft_wrap=True, markup=False)


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


def damaged_input(run_id: str, files: list[str]) -> str:
    """The one line a run on a cut or corrupt input file ends with (exit 3): it traded on
    the rows before the damage only, and a corrupt block's rows may be wrong, so the
    command that made it must not exit as a success."""
    return (
        f"input damaged: {', '.join(files)} (cut or corrupt): run {run_id} used the rows "
        "before the damage only; `sapphire data inspect <file>` says where it is"
    )
