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
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from sapphire.backtest.config import BacktestConfigError, parse_config
from sapphire.backtest.runner import RunOutput, run_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("backtest", help="run a backtest from a YAML config")
    parser.add_argument("--config", required=True, type=Path, help="YAML backtest config")
    parser.add_argument("--output-dir", type=Path, default=None, help="override output_dir")
    parser.add_argument(
        "--run-id", default=None, help="system configs: the stored run's id (default: fresh)"
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
    return isinstance(loaded, dict) and ("agents" in loaded or "data" in loaded)


def handle(args: argparse.Namespace) -> int:
    console = Console()
    try:
        loaded = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        console.print(f"[red]backtest config error:[/red] {exc}", soft_wrap=True)
        return 2
    if is_system_config(loaded):
        from sapphire.cli.kernel_run import run_in_process

        return run_in_process(args.config, args.run_id, not args.no_progress, console)
    try:
        cfg = parse_config(loaded)
    except BacktestConfigError as exc:
        console.print(f"[red]backtest config error:[/red] {exc}", soft_wrap=True)
        return 2
    if args.output_dir is not None:
        cfg = parse_config({**loaded, "output_dir": "__output__"})
    resolve = _resolver(args.config, args.output_dir)
    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console
    ) as bar:

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        try:
            outputs = run_config(cfg, resolve, progress)
        except BacktestConfigError as exc:
            console.print(f"[red]backtest failed:[/red] {exc}", soft_wrap=True)
            return 2
    console.print(_table(outputs))
    for out in outputs:
        if out.summary.ratio_note:
            console.print(f"{out.name}: sharpe {out.summary.ratio_note}")
        console.print(f"report: {out.html}")
    return 0


def _table(outputs: list[RunOutput]) -> Table:
    table = Table(title="backtest summary")
    for col in ("run", "return %", "sharpe", "max dd %", "fills", "hit %", "fees"):
        table.add_column(col)
    for out in outputs:
        s = out.summary
        table.add_row(
            out.name,
            f"{s.total_return * 100:.3f}",
            "n/a" if s.sharpe is None else f"{s.sharpe:.2f}",
            f"{s.max_drawdown * 100:.2f}",
            str(s.fills),
            f"{s.hit_rate * 100:.1f}",
            f"{s.fees:.4f}",
        )
    return table
