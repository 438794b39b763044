"""``sapphire backtest --config FILE``: run a config in this process and print a summary.

A system config (the file ``sapphire run`` reads: ``data``, ``agents``, ``exchange``, ``risk``,
``storage``) runs on the trading kernel in one process, with the same risk, venue, timing and
stored tables as the Ray system (``sapphire.kernel``). A bar-strategy config (``agent``,
``instrument``, ``ohlcv``) runs the bar engines (vectorized or event-driven).

Relative paths in the config resolve against the config file's folder; a path starting with
``shared:`` resolves against the shared recorded data (``$SAPPHIRE_SHARED_DATA``, else
``../shared/data`` beside the repository).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from sapphire.backtest.config import BacktestConfigError, parse_config
from sapphire.backtest.ledger import fees_paid
from sapphire.backtest.runner import RunOutput, run_config
from sapphire.config.kind import config_kind, wrong_kind
from sapphire.config.yaml_text import describe, load_yaml


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("backtest", help="run a backtest from a YAML config")
    parser.add_argument("--config", required=True, type=Path, help="YAML backtest config")
    parser.add_argument("--output-dir", type=Path, default=None, help="override output_dir")
    parser.add_argument(
        "--run-id",
        default=None,
        help="system configs: the stored run's id (default: the config's run_id, else fresh)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=handle)


def _resolver(config_path: Path, output_override: Path | None) -> Any:
    base = config_path.resolve().parent
    shared = os.environ.get("SAPPHIRE_SHARED_DATA")
    shared_dir = Path(shared) if shared else Path(__file__).resolve().parents[3] / "shared" / "data"

    def resolve(text: str) -> Path:
        if output_override is not None and text == "__output__":
            return output_override
        if text.startswith("shared:"):
            return shared_dir / text.removeprefix("shared:").lstrip("/")
        path = Path(text).expanduser()
        return path if path.is_absolute() else base / path

    return resolve


def is_system_config(loaded: object) -> bool:
    """A system config (the shape ``sapphire run`` reads) runs on the in-process kernel."""
    return config_kind(loaded) == "system"


def handle(args: argparse.Namespace) -> int:
    console = Console()
    try:
        loaded = load_yaml(args.config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        message = escape(f"{args.config}: cannot read: {exc}")
        console.print(f"[red]backtest config error:[/red] {message}", soft_wrap=True)
        return 2
    except yaml.YAMLError as exc:
        message = escape(_yaml_error(args.config, exc))
        console.print(f"[red]backtest config error:[/red] {message}", soft_wrap=True)
        return 2
    misfiled = wrong_kind(loaded, str(args.config), "system", "bar-backtest")
    if misfiled:  # a tune config: its `agent` (an id) was refused as "expected 'object'"
        console.print(f"[red]backtest config error:[/red] {escape(misfiled)}", soft_wrap=True)
        return 2
    if is_system_config(loaded):
        from sapphire.cli.kernel_run import run_in_process

        if args.output_dir is not None:  # an option that does nothing must not look obeyed
            console.print(
                "[red]error:[/red] --output-dir is for bar configs; a system config stores "
                "its run under storage.root",
                soft_wrap=True,
            )
            return 2

        return run_in_process(args.config, args.run_id, not args.no_progress, console)
    if args.run_id is not None:
        console.print(
            "[red]error:[/red] --run-id is for system configs (a stored run); a bar config "
            "writes its report under output_dir",
            soft_wrap=True,
        )
        return 2
    try:
        cfg = parse_config(loaded)
    except BacktestConfigError as exc:
        message = escape(f"{args.config}: {exc}")  # one line that names the file and field
        console.print(f"[red]backtest config error:[/red] {message}", soft_wrap=True)
        return 2
    if args.output_dir is not None:
        cfg = parse_config({**loaded, "output_dir": "__output__"})
    resolve = _resolver(args.config, args.output_dir)
    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=args.no_progress,
    ) as bar:

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        try:
            outputs = run_config(cfg, resolve, progress)
        except BacktestConfigError as exc:
            # the config's agent, data or warm-up: one line naming the file, as parse errors
            message = escape(f"{args.config}: {exc}")
            console.print(f"[red]backtest failed:[/red] {message}", soft_wrap=True)
            return 2
    console.print(_table(outputs, cfg.instrument.quote))
    for i, out in enumerate(outputs, 1):
        console.print(f"#{i} {out.name}", soft_wrap=True)
        if out.summary.ratio_note:
            console.print(f"   sharpe {out.summary.ratio_note}", soft_wrap=True)
        if out.note:
            console.print(f"   [yellow]note:[/yellow] {out.note}", soft_wrap=True)
        console.print(f"   report: {out.html}", soft_wrap=True)
    return 0


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    return f"{path}: not valid YAML: {describe(exc)}"


def _table(outputs: list[RunOutput], quote: str) -> Table:
    """One row per run (``#n``: the run's name and report are printed under the table, so
    the figures fit an 80-column terminal). PnL and fees are the ledger's Decimals at the
    quote asset's stored scale, as the end-of-run screen prints them (bar instruments are
    linear: they settle in their quote)."""
    from sapphire.backtest.html_page import money_text  # plotly: only bar runs need it

    table = Table(title="backtest summary", box=None, header_style="bold underline")
    unit = f" ({quote})" if quote else ""
    table.add_column("run", no_wrap=True)
    for col in ("return %", "sharpe", "max dd %", "fills", "hit %", f"PnL{unit}", f"fees{unit}"):
        # a figure cut with an ellipsis reads as another number: figures never wrap or crop
        table.add_column(col, no_wrap=True, justify="right")
    for i, out in enumerate(outputs, 1):
        s, r = out.summary, out.result
        table.add_row(
            f"#{i}",
            f"{s.total_return * 100:.3f}",
            "n/a" if s.sharpe is None else f"{s.sharpe:.2f}",
            f"{s.max_drawdown * 100:.2f}",
            str(s.fills),
            f"{s.hit_rate * 100:.1f}",
            money_text(r.final_equity - r.initial_cash, quote),
            money_text(fees_paid(r), quote),
        )
    return table
