"""``sapphire run --config FILE``: the whole system on Ray (the actors are imported lazily)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run the multi-agent system on Ray")
    parser.add_argument("--config", required=True, help="system YAML, e.g. configs/demo.yaml")
    parser.add_argument("--run-id", default=None, help="default: from the config or fresh")
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        default=None,
        help="continue a crashed run from its checkpoints (nothing lost or duplicated)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from sapphire.config.system import ConfigError, check_run_id, load_config

    try:
        config = load_config(args.config)
        if args.resume and args.run_id and args.resume != args.run_id:
            raise ConfigError(f"--resume {args.resume} and --run-id {args.run_id} differ")
        run_id = args.resume or args.run_id
        if run_id:
            check_run_id(run_id)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from actors.report import print_summary
    from actors.system import RunFailed, run_system
    from actors.wiring import WiringError

    columns = (
        TextColumn("[bold]replay"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} events · {task.fields[fills]} fills"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=args.no_progress, transient=True) as progress:
        task = progress.add_task("replay", total=None, fills=0)

        def on_step(step: Any) -> None:
            progress.update(task, advance=step.events, fills=step.fills)

        try:
            result = run_system(config, run_id=run_id, on_step=on_step, resume=bool(args.resume))
        except (WiringError, ValueError) as exc:  # config, data and timing errors
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except RunFailed as exc:  # stopped mid-run: nothing claimed, resumable
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print_summary(result)
    if result.cost is not None:
        from actors.cost import print_cost

        print_cost(result.cost)
    from sapphire.adapters.stores import next_query

    query = next_query(result.run_id, args.config, config)
    print(f"next: {query}")
    print(
        f"      {query.replace('sapphire query', 'sapphire report').removesuffix(' --table fills')}"
    )
    if result.failure:
        print(f"error: run {result.run_id} failed: {result.failure}", file=sys.stderr)
        return 1
    if result.unacked_rows:
        print(
            f"error: {result.unacked_rows} rows were never committed to the store; the run "
            f"is not complete (resume it with --resume {result.run_id})",
            file=sys.stderr,
        )
        return 1
    return 0
