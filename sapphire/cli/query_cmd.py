"""``sapphire query RUN_ID --table fills``: print a run's stored rows, readable by default.

Without ``--table``: rows, symbols and time span per table. With it: prices and sizes in the
instrument's units (not ticks and lots), money at its asset's scale, UTC times, and the
columns that matter for that table (``--columns all`` or a list for others; ``--raw`` for
the stored columns as they are). ``--format csv|json`` writes the stored columns, exact,
for programs. An unknown run exits 1; an unknown store, table or column 2.

Prices need the run's instruments: recorded beside the store by ``sapphire run`` and
``sapphire backtest``, or read from ``--config``; without them the rows stay in ticks and
lots (and a line on stderr says so).
"""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import polars as pl

from sapphire.cli import at_least, one_line
from sapphire.config.system import ConfigError, SystemConfig
from sapphire.model.instrument import Instrument
from sapphire.storage.money import quote_scale, round_to_scale
from sapphire.storage.schemas import TABLES

if TYPE_CHECKING:
    from sapphire.adapters.stores import StoreSource

DEFAULT_ROOT_ENV = "SAPPHIRE_STORE_ROOT"
INSTRUMENTS_FILE = "instruments.json"

# the readable view's columns per table (``--columns all``: every readable column)
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "fills": (
        "time", "agent_id", "symbol", "side", "price", "qty", "fee_quote", "is_maker",
        "internal", "client_order_id",
    ),
    "orders": (
        "time", "agent_id", "event", "side", "qty", "limit", "status", "filled", "reason",
        "client_order_id",
    ),
    "intents": (
        "time", "agent_id", "symbol", "side", "qty", "limit", "order_type", "tif",
        "client_order_id",
    ),
    "positions": ("time", "agent_id", "symbol", "qty", "avg_entry", "realized_pnl_quote",
                  "fees_quote"),
    "pnl": ("time", "agent_id", "symbol", "position", "realized_pnl_quote",
            "unrealized_pnl_quote", "fees_quote", "funding_quote", "equity_quote"),
    "risk_decisions": ("time", "agent_id", "symbol", "accepted", "requested", "reason",
                       "detail", "client_order_id"),
    "signals": ("time", "agent_id", "symbol", "strength", "reason"),
    "ticks": ("time", "symbol", "kind", "price", "qty", "side", "bid", "bid_qty", "ask",
              "ask_qty"),
    "llm_decisions": ("time", "agent_id", "symbol", "model", "action", "size_fraction",
                      "confidence", "valid", "fallback", "rationale"),
}  # fmt: skip

# stored integer columns -> readable name (prices from ticks, sizes from lots)
_PRICES = {
    "price_ticks": "price",
    "limit_ticks": "limit",
    "bid_ticks": "bid",
    "ask_ticks": "ask",
    "avg_entry_ticks": "avg_entry",
}
_SIZES = {
    "qty_lots": "qty",
    "filled_lots": "filled",
    "leaves_lots": "leaves",
    "bid_lots": "bid_qty",
    "ask_lots": "ask_qty",
    "position_lots": "position",
    "requested_lots": "requested",
}
_HIDDEN = ("run_id", "producer_id", "seq", "date")
# text columns that hold figures (aligned right, never folded)
_NUMERIC_TEXT = frozenset(
    {
        *_PRICES.values(),
        *_SIZES.values(),
        "time",
        "recv_time",
        "fee_quote",
        "realized_pnl_quote",
        "unrealized_pnl_quote",
        "fees_quote",
        "equity_quote",
        "cost",
    }
)


class QueryError(ValueError):
    """A query that cannot be answered (unknown run, table or column): one line, exit 2."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "query",
        help="show a run's stored rows (readable: prices, sizes, UTC times)",
        description=__doc__,
    )
    parser.add_argument("run_id", help="run id to select")
    parser.add_argument(
        "--table",
        default=None,
        help=f"table to print ({', '.join(sorted(TABLES))}); omitted: a per-table summary",
    )
    parser.add_argument(
        "--root",
        default=os.environ.get(DEFAULT_ROOT_ENV, "runs/store"),
        help=f"Parquet store (default: ${DEFAULT_ROOT_ENV} or runs/store; a run prints its own)",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="read from the store of this system config (Parquet root or BigQuery dataset)",
    )
    parser.add_argument("--symbol", default=None, help="only this symbol")
    parser.add_argument("--agent", default=None, help="only this agent")
    parser.add_argument(
        "--columns", default=None, help="comma-separated columns, or 'all' (default: the main ones)"
    )
    parser.add_argument(
        "--raw", action="store_true", help="the stored columns as they are (ticks, lots, ns)"
    )
    # -1 printed every row, as 0 does
    parser.add_argument("--limit", type=at_least(0), default=50, help="rows to print (0: all)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.set_defaults(handler=run)


def _source(args: argparse.Namespace) -> tuple[StoreSource, dict[str, Instrument]]:
    """The store to read (``--config``'s, else the Parquet ``--root``) and the instruments."""
    from sapphire.adapters.stores import ParquetSource, open_source
    from sapphire.config.system import load_config

    if args.config:
        from sapphire.kernel.assembly import load_instruments

        config = load_config(args.config)
        try:
            instruments = load_instruments(config.data)
        except Exception:  # prices then stay in ticks; the rows are still worth showing
            instruments = {}
        source = open_source(config)
        root = getattr(source, "root", None)
        if root is not None and not Path(root).is_dir():  # as with --root: no store, exit 2
            raise FileNotFoundError(
                f"no store at {root} (the config's storage.root; has a run been stored there?)"
            )
        return source, instruments
    root = Path(args.root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"no store at {root.resolve()} (use the --root a run printed, or --config FILE)"
        )
    return ParquetSource(root.resolve()), read_instruments(root.resolve().parent / args.run_id)


# Unknown fields are ignored, not refused: a record written by a later version (a field
# added) still gives this one its instruments, where a refusal left its prices in ticks.
class RunInstruments(msgspec.Struct, frozen=True, kw_only=True):
    """What a run records beside its store (``instruments.json``): its instruments, and the
    firm's currency its capital and firm limits were read in (config ``currency``, else the
    rule's answer on these instruments). Recorded because the report reads the capital in
    it, and the rule's answer moves with the config's instruments, which may change after
    the run. Runs recorded before it wrote the bare list: read with ``currency`` "" (the
    rule, as they ran)."""

    instruments: list[Instrument] = []
    currency: str = ""
    # the run's agents (id -> symbol) and its capital (``capital_quote``): ``report --root``
    # lists every agent, the idle ones too, as the run's summary did, and reads its capital
    # (without them it left out agents that never sent an order)
    agents: dict[str, str] = {}
    capital: str = ""

    def by_symbol(self) -> dict[str, Instrument]:
        return {i.symbol: i for i in self.instruments}


def write_instruments(
    run_dir: Path,
    instruments: dict[str, Instrument],
    currency: str,
    config: SystemConfig | None = None,
) -> None:
    """Record a run's instruments and its firm's currency beside its store, so ``query``
    shows prices and sizes and ``report`` reads the capital in the run's own currency; with
    ``config``, its agents and capital too."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = RunInstruments(
        instruments=list(instruments.values()),
        currency=currency,
        agents={} if config is None else {a.id: a.symbol for a in config.agents},
        capital="" if config is None else str(config.capital_quote),
    )
    (run_dir / INSTRUMENTS_FILE).write_bytes(msgspec.json.encode(record))


def read_run_instruments(run_dir: Path) -> RunInstruments:
    """The run's record (empty where none can be read: prices then stay in ticks)."""
    try:
        data = (run_dir / INSTRUMENTS_FILE).read_bytes()
        record = msgspec.json.decode(data, type=RunInstruments | list[Instrument])
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return RunInstruments()
    return record if isinstance(record, RunInstruments) else RunInstruments(instruments=record)


def read_instruments(run_dir: Path) -> dict[str, Instrument]:
    return read_run_instruments(run_dir).by_symbol()


def damage_note(args: argparse.Namespace) -> str:
    """Which files of a Parquet store are broken, when reading it failed (polars names none)."""
    root = getattr(args, "root", None)
    if getattr(args, "config", None) or root is None or not Path(root).is_dir():
        return ""
    from sapphire.storage.query import damaged_files

    bad = damaged_files(root)
    if not bad:
        return ""
    shown = ", ".join(str(p) for p in bad[:3]) + (
        f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
    )
    return f"; damaged store files (move them aside, or restore them): {shown}"


def runs_hint(source: StoreSource) -> str:
    """The runs a store holds (the latest five), for a run id it has no rows of."""
    runs = known_runs(source)
    if runs is None:  # a BigQuery dataset keeps no manifests: it may hold runs all the same
        return ""
    if not runs:
        return "; it holds no runs"
    # the count too: "runs there: a, b, c, d, e" read as the whole store where it held 25
    more = f" (the 5 latest of {len(runs)})" if len(runs) > 5 else ""
    return f"; runs there{more}: {', '.join(runs[-5:])}"


def known_runs(source: StoreSource) -> list[str] | None:
    """Run ids with rows in the store (from the Parquet manifests: no table scan); None
    where the store keeps none (BigQuery)."""
    root = getattr(source, "root", None)
    if root is None:
        return None
    # oldest first by the manifest's last write: "the latest five" are the runs last written,
    # not the last in the alphabet (backtest-... sorts before run-...)
    manifests = []
    for path in (Path(root) / "_sapphire").glob("manifest-*.json"):
        try:
            manifests.append((path.stat().st_mtime_ns, path.name))
        except OSError:
            continue
    return [n.removeprefix("manifest-").removesuffix(".json") for _, n in sorted(manifests)]


def summarize(source: StoreSource, run_id: str) -> pl.DataFrame:
    """Row count, symbols and time span of ``run_id`` in each table of ``source`` (counted
    where the rows are: a BigQuery summary downloads no rows)."""
    parts = [
        source.summary(table, run_id).select(pl.lit(table).alias("table"), pl.all())
        for table in sorted(TABLES)
    ]
    return pl.concat(parts)


def _utc(column: str) -> pl.Expr:
    return pl.from_epoch(pl.col(column), time_unit="ns").dt.strftime("%Y-%m-%d %H:%M:%S%.3f")


def _scaled(frame: pl.DataFrame, column: str, unit: dict[str, Decimal]) -> pl.Series:
    """``column`` (integer ticks or lots, or decimal ticks) times each row's symbol's unit,
    as exact decimal text (display only: never floats for prices)."""
    out: list[str | None] = []
    for symbol, value in zip(frame["symbol"], frame[column], strict=True):
        step = unit.get(symbol)
        if value is None or step is None:
            out.append(None if value is None else str(value))
            continue
        scaled = Decimal(value) * step  # an integer keeps the step's decimals: 2.510, 61800.0
        out.append(f"{scaled if isinstance(value, int) else scaled.normalize():f}")
    return pl.Series(column, out, dtype=pl.String)


def readable(
    frame: pl.DataFrame, table: str, instruments: dict[str, Instrument]
) -> tuple[pl.DataFrame, list[str]]:
    """The rows for people, and the names of the columns it can show."""
    ticks = {s: i.tick for s, i in instruments.items()}
    lots = {s: i.lot for s, i in instruments.items()}
    scales = {s: quote_scale(i.settle_asset) for s, i in instruments.items()}
    names: dict[str, str] = {}
    columns: list[pl.Series] = []
    for name in frame.columns:
        if name in _HIDDEN:
            continue
        series = frame[name]
        if name == "ts_ns":
            series = frame.select(_utc(name).alias("time")).to_series()
        elif name == "ts_recv_ns":
            series = frame.select(_utc(name).alias("recv_time")).to_series()
        elif name == "side" and series.dtype.is_integer():
            series = series.replace_strict(
                {1: "BUY", -1: "SELL"}, default=None, return_dtype=pl.String
            )
        elif name in _PRICES and instruments:
            series = _scaled(frame, name, ticks).alias(_PRICES[name])
        elif name in _SIZES and instruments:
            series = _scaled(frame, name, lots).alias(_SIZES[name])
        elif isinstance(series.dtype, pl.Decimal):
            series = pl.Series(
                name,
                [
                    None
                    if v is None
                    else f"{round_to_scale(v, scales.get(sym, quote_scale(''))):f}"
                    for sym, v in zip(frame["symbol"], series, strict=True)
                ],
                dtype=pl.String,
            )
        names[series.name] = name
        columns.append(series)
    return pl.DataFrame(columns), list(names)


def _choose(frame: pl.DataFrame, table: str, columns: str | None) -> pl.DataFrame:
    if columns == "all":
        return frame
    if columns:
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
    else:  # the main columns; in ticks and lots when the instruments are unknown
        stored = {new: old for old, new in (_PRICES | _SIZES).items()}
        wanted = [
            c if c in frame.columns else stored.get(c, c)
            for c in DEFAULT_COLUMNS.get(table, tuple(frame.columns))
        ]
        wanted = [c for c in wanted if c in frame.columns]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        have = ", ".join(frame.columns)
        raise QueryError(f"table {table!r} has no column {', '.join(missing)}; it has: {have}")
    return frame.select(wanted)


def run(args: argparse.Namespace) -> int:
    note = ""
    cut = ""
    # csv and json are for programs: the stored columns, exact; the table is for people
    people = args.format == "table" and not args.raw
    try:
        if args.table is not None and args.table not in TABLES:
            raise QueryError(f"unknown table {args.table!r}; tables: {', '.join(sorted(TABLES))}")
        source, instruments = _source(args)
        summary = summarize(source, args.run_id)
        if int(summary["rows"].sum()) == 0:
            print(
                f"sapphire query: run {args.run_id!r} has no rows in "
                f"{source.location}{runs_hint(source)}",
                file=sys.stderr,
            )
            return 1
        if args.table is None:
            frame = summary.with_columns(
                pl.when(pl.col("rows") > 0).then(_utc("first_ts_ns")).alias("first (UTC)"),
                pl.when(pl.col("rows") > 0).then(_utc("last_ts_ns")).alias("last (UTC)"),
            ).drop("first_ts_ns", "last_ts_ns")
            if not people:
                frame = summary
        else:
            equals = {"symbol": args.symbol, "agent_id": args.agent}
            frame = source.first_rows(
                args.table,
                args.run_id,
                {k: v for k, v in equals.items() if v is not None},
                # one more: was anything left out?
                args.limit + 1 if args.limit > 0 else 0,
            )
            given = {f"--{k}": v for k, v in (("symbol", args.symbol), ("agent", args.agent))}
            filters = " ".join(f"{k} {v}" for k, v in given.items() if v is not None)
            if filters and frame.height == 0:
                # an empty table and exit 0 read as "that agent never traded", when the
                # filter (a mistyped id) matched nothing
                print(
                    f"sapphire query: no rows of table {args.table!r} in run {args.run_id!r} "
                    f"match {filters}",
                    file=sys.stderr,
                )
                return 1
            if args.limit > 0 and frame.height > args.limit:
                frame = frame.head(args.limit)
                # said on stderr in every format: csv/json on stdout stay the rows alone
                cut = f"the first {args.limit} rows only; --limit 0 prints all"
            if people:
                if not instruments:
                    note = "prices in ticks and sizes in lots (no instruments: pass --config)"
                frame, _ = readable(frame, args.table, instruments)
            if people or args.columns:
                frame = _choose(frame, args.table, args.columns)
    except (FileNotFoundError, QueryError, ConfigError) as exc:
        # a config's error names its file and field: "ConfigError:" in front told nothing
        print(f"sapphire query: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bad config, schema, store or connection: one line, never a trace
        print(
            f"sapphire query: {type(exc).__name__}: {one_line(exc)}{damage_note(args)}",
            file=sys.stderr,
        )
        return 2
    if cut:
        print(f"sapphire query: {cut}", file=sys.stderr)
    if args.format == "csv":
        sys.stdout.write(frame.write_csv())
    elif args.format == "json":
        sys.stdout.write(frame.write_json() + "\n")
    else:
        if note:
            print(note, file=sys.stderr)
        title = f"run {args.run_id}: " + (args.table or "rows per table")
        print_table(frame, title)
    return 0


def print_table(frame: pl.DataFrame, title: str, console: Any = None) -> None:
    """Rows for people: one date shown once in the title when every row shares it, figures
    never cut (they fold to a second line only where text must)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(soft_wrap=False)
    time_cols = [
        c for c in ("time", "recv_time", "first (UTC)", "last (UTC)") if c in frame.columns
    ]
    dates = {v[:10] for c in time_cols for v in frame[c].to_list() if isinstance(v, str)}
    if len(dates) == 1 and "time" in time_cols:
        title += f" ({dates.pop()}, UTC)"
        frame = frame.with_columns(pl.col(c).str.slice(11) for c in time_cols)
    elif time_cols:
        title += " (UTC)"
    table = Table(title=title, title_justify="left")
    for name in frame.columns:
        text = frame[name].dtype == pl.String and name not in _NUMERIC_TEXT
        widest = max([len(name), *(len(str(v)) for v in frame[name].head(200))])
        table.add_column(
            name,
            justify="left" if text else "right",
            no_wrap=not text or name in time_cols,
            overflow="fold",
            # text folds, but never below a readable width (ids, statuses, symbols)
            min_width=min(widest, 16) if text else None,
        )
    for row in frame.iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update_width(1000), table).maximum
    if need > console.width:  # wider than the terminal: let it scroll, never crop a figure
        console = Console(width=need, soft_wrap=False)
    console.print(table)
