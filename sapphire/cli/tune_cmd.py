"""``sapphire tune --config FILE``: walk-forward hyper-parameter search on Ray Tune.

Each trial backtests the agent on every walk-forward window (event-driven through the paper
exchange for tick agents, vectorized for bar strategies); Optuna proposes the params, ASHA
stops poor trials after their first folds. Results land in
``<output.storage_path>/<name>/results`` (CSV and Parquet, the best config as backtest and
system YAML) and the leaderboard is printed. ``--resume`` continues an interrupted run.

Paths of the tune config (a bar backtest's data, ``output.storage_path``,
``output.system_template``) are relative to the config's folder. A ``system:`` block is a
system config, so its paths are read as ``sapphire run`` reads that config: relative to the
working directory (the exported ``best_window.yaml`` holds them resolved). ``shared:...``
resolves against the shared recorded data (``$SAPPHIRE_SHARED_DATA`` or ``../shared/data``),
``sample:...`` against the bundled sample, from anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import yaml

from sapphire.cli import at_least
from sapphire.config.yaml_text import describe, load_yaml
from sapphire.data.validation import DataFileError
from sapphire.research.leaderboard import PARAM_PREFIX
from sapphire.research.tune_config import TuneConfigError, load_tune_config
from sapphire.research.walkforward import SplitError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tune", help="walk-forward parameter search on Ray Tune", description=__doc__
    )
    parser.add_argument("--config", required=True, type=Path, help="tune config YAML")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted run")
    again.add_argument("--fresh", action="store_true", help="delete a previous run first")
    parser.add_argument(
        "--num-cpus", type=at_least(1), default=2, help="CPUs of the local Ray cluster"
    )
    parser.add_argument(
        "--samples", type=at_least(1), default=None, help="override search.num_samples"
    )
    parser.add_argument("--top", type=int, default=10, help="leaderboard rows to print")
    parser.set_defaults(handler=handle)


def resolver(config_path: Path) -> Any:
    from sapphire.data.sample import SAMPLE_DIR

    base = config_path.resolve().parent
    shared = os.environ.get("SAPPHIRE_SHARED_DATA")
    shared_dir = Path(shared) if shared else Path(__file__).resolve().parents[3] / "shared" / "data"

    def resolve(text: str) -> Path:
        if text.startswith("shared:"):
            return shared_dir / text.removeprefix("shared:").lstrip("/")
        if text.startswith("sample:"):
            return SAMPLE_DIR / text.removeprefix("sample:").lstrip("/")
        path = Path(text)
        return path if path.is_absolute() else base / path

    return resolve


def handle(args: argparse.Namespace) -> int:
    try:
        cfg = load_tune_config(args.config)
    except TuneConfigError as exc:
        print(f"sapphire tune: {exc}", file=sys.stderr)
        return 2
    if args.samples is not None:
        cfg = msgspec.structs.replace(
            cfg, search=msgspec.structs.replace(cfg.search, num_samples=args.samples)
        )
    resolve = resolver(args.config)
    template = None
    if cfg.output.system_template:
        try:
            template = load_yaml(resolve(cfg.output.system_template).read_bytes())
        except OSError as exc:
            print(f"sapphire tune: system_template: {exc}", file=sys.stderr)
            return 2
        except yaml.YAMLError as exc:
            where = cfg.output.system_template
            print(f"sapphire tune: system_template {where}: {describe(exc)}", file=sys.stderr)
            return 2
    from actors.tune import TuneError, run_tune  # Ray only when the command runs

    try:
        outcome = run_tune(
            cfg,
            resolve,
            resume=args.resume,
            fresh=args.fresh,
            num_cpus=args.num_cpus,
            storage_base=args.config.resolve().parent,
            system_template=template,
        )
    except SplitError as exc:  # in the config's unit, not the nanoseconds folds are cut in
        per_unit, unit = (1e9, "s") if cfg.system is not None else (1.0, "bars")
        print(f"sapphire tune: {args.config}: {exc.in_units(per_unit, unit)}", file=sys.stderr)
        return 2
    except (TuneError, ValueError, OSError, DataFileError) as exc:
        print(f"sapphire tune: {exc}", file=sys.stderr)
        return 2
    print_board(outcome.board, outcome.n_folds, args.top)
    for key, value in outcome.summary.items():
        print(f"{key:>30}: {value:.6g}")
    if cfg.search.algorithm == "optuna" and outcome.summary:
        print(
            "note: Optuna proposed trials from their train mean over every fold, windows that "
            "hold the earlier folds' test windows; best_trial_holdout_score (the last test "
            "window) is the figure no search saw"
        )
    for path in outcome.files:
        print(f"wrote {path}")
    failed = outcome.trials.filter(pl.col("status") == "ERROR") if outcome.trials.height else None
    if failed is not None and failed.height:
        # the results above are the other trials': a sweep with crashed trials is no success
        print(
            f"sapphire tune: {failed.height} of {outcome.trials.height} trials failed; the "
            f"first ({failed['trial_id'][0]}): {failed['error'][0]} (trial logs under "
            f"{outcome.experiment_path})",
            file=sys.stderr,
        )
        return 1
    return 0


def print_board(board: pl.DataFrame, n_folds: int, top: int) -> None:
    from rich.table import Table

    table = Table(
        title=f"leaderboard (ranked by the train mean over {n_folds} folds; each fold's test "
        "is out of sample for that fold; holdout: the last test window, after every train "
        "window)"
    )
    if board.is_empty():
        _console().print("no trials finished")
        return
    params = [c for c in board.columns if c.startswith(PARAM_PREFIX)]
    cols = [
        "rank",
        "trial_id",
        *params,
        "folds_done",
        "mean_train_score",
        "mean_test_score",
        "holdout_test_score",
    ]
    headers = {
        "folds_done": "folds",
        "mean_train_score": "train",
        "mean_test_score": "test",
        "holdout_test_score": "holdout",
    }
    for col in cols:
        # The last part of a dotted param path keeps the table narrow (strategy_params.fast).
        name = headers.get(col, col.removeprefix(PARAM_PREFIX).rsplit(".", 1)[-1])
        table.add_column(name, justify="right", no_wrap=True)
    for row in board.head(top).iter_rows(named=True):
        table.add_row(*(_fmt(row.get(c)) for c in cols))
    _console().print(table)


def _console() -> Any:
    from rich.console import Console

    # Piped output defaults to 80 columns, too narrow for a few params and three scores.
    return Console(width=max(Console().width, 140))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
