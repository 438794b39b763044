"""``sapphire report RUN_ID``: an interactive HTML page (PNGs beside it) of a stored run.

Reads the Parquet store (``--root``, default ``$SAPPHIRE_STORE_ROOT`` or ``runs/store``):
a stats header, the mid with every agent's fills, per-agent and firm PnL and drawdown, the
trade list, risk decisions, LLM decisions. ``--config`` (the run's system config) reads its
store and gives prices in quote units (its instruments) and returns on its capital.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import polars as pl

from sapphire.cli import one_line
from sapphire.research.run_report import RunNotFoundError, write_run_report
from sapphire.storage.schemas import SchemaMismatchError

DEFAULT_ROOT_ENV = "SAPPHIRE_STORE_ROOT"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report", help="HTML report of a stored run", description=__doc__
    )
    parser.add_argument("run_id", help="run id to report on")
    parser.add_argument(
        "--root",
        default=os.environ.get(DEFAULT_ROOT_ENV, "runs/store"),
        help=f"store root (default: ${DEFAULT_ROOT_ENV} or runs/store)",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="read from the store of this system config (Parquet root or BigQuery dataset)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: reports/<run_id>)"
    )
    parser.set_defaults(handler=handle)


def _runs_hint(args: argparse.Namespace) -> str:
    """The runs a Parquet store holds, as `sapphire query` lists them."""
    if args.config:
        return ""
    from sapphire.adapters.stores import ParquetSource
    from sapphire.cli.query_cmd import runs_hint

    return runs_hint(ParquetSource(Path(args.root).resolve()))


def handle(args: argparse.Namespace) -> int:
    from sapphire.cli.query_cmd import read_run_instruments

    out = args.out if args.out is not None else Path("reports") / args.run_id
    try:
        source: Any = args.root
        instruments = None
        capital = None
        # the firm's currency the capital is in: the one the run recorded, else the
        # config's ("": the rule on the instruments, as runs recorded before it ran)
        currency = ""
        agents = None
        if args.config:
            from sapphire.adapters.stores import open_source
            from sapphire.config.system import ConfigError, load_config
            from sapphire.kernel.assembly import load_instruments, storage_root
            from sapphire.kernel.builders import WiringError

            try:
                config = load_config(args.config)
                source = open_source(config).read
            except (ConfigError, ValueError) as exc:
                print(f"sapphire report: {exc}", file=sys.stderr)
                return 2
            capital = float(config.capital_quote)
            # every configured agent, the idle ones too (the run's summary lists them)
            agents = {a.id: a.symbol for a in config.agents}
            # the instruments the run traded, as it recorded them (the config's files may
            # have changed, or be relative to another working directory)
            recorded = read_run_instruments(storage_root(config) / args.run_id)
            instruments = recorded.by_symbol() or None
            currency = recorded.currency
            if instruments is None:
                currency = config.currency
                try:
                    instruments = load_instruments(config.data)
                except WiringError as exc:  # a live config may name none: prices in ticks
                    print(f"sapphire report: prices in ticks: {exc}", file=sys.stderr)
        else:
            root = Path(args.root)
            if not root.is_dir():  # as `sapphire query`: a missing store is no run's
                print(
                    f"sapphire report: no store at {root.resolve()} (use the --root a run "
                    "printed, or --config FILE)",
                    file=sys.stderr,
                )
                return 2
            # every run records its instruments beside its store (sapphire query reads them
            # too): without them money of several settlement assets would be one "quote"
            recorded = read_run_instruments(root.resolve().parent / args.run_id)
            instruments = recorded.by_symbol() or None
            currency = recorded.currency
            # every agent the run had, the idle ones too, and its capital, as --config gives
            agents = recorded.agents or None
            capital = float(recorded.capital) if recorded.capital else None
        report = write_run_report(
            source, args.run_id, out, instruments, capital, agents, currency=currency
        )
    except RunNotFoundError as exc:
        print(f"sapphire report: {exc}{_runs_hint(args)}", file=sys.stderr)
        return 1
    except (SchemaMismatchError, OSError, pl.exceptions.PolarsError) as exc:
        from sapphire.cli.query_cmd import damage_note

        print(f"sapphire report: {one_line(exc)}{damage_note(args)}", file=sys.stderr)
        return 2
    except Exception as exc:  # the store's client (BigQuery's BadRequest...): one line, no trace
        print(f"sapphire report: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return 2
    # one line per agent, however wide: a figure wrapped over two lines reads as two numbers
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=65_535,  # its maximum (u16)
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
    ):
        print(report.summary)
    print(f"wrote {report.html}")
    for path in report.pngs.values():
        print(f"wrote {path}")
    return 0
