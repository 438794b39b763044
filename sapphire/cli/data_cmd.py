"""``sapphire data inspect FILE``: format, schema, rows, time range, sessions and rejections."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sapphire.data.instruments import load_instrument_file
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.validation import DataFileError
from sapphire.data.venue_instruments import MetadataFormat
from sapphire.model.times import utc_text

METADATA_FORMATS = frozenset(f.value for f in MetadataFormat)


def _inspect_instruments(path: str, fmt: str) -> int:
    """A venue metadata file: its instruments per kind, as replay and live would load them."""
    # ccxt parses most venues' markets; the CLI is where an adapter may be imported
    from sapphire.adapters.venue_instruments import load_venue_instruments

    loaded = load_venue_instruments(path)
    instruments = loaded.instruments
    per_kind: dict[str, int] = {}
    for inst in instruments.values():
        per_kind[inst.kind.value] = per_kind.get(inst.kind.value, 0) + 1
    print(f"file:    {path}")
    print(f"format:  {fmt}")
    print(f"venue:   {loaded.venue}")
    print(f"instruments: {len(instruments)} ({', '.join(sorted(per_kind))})")
    for kind, count in sorted(per_kind.items()):
        print(f"  {kind}: {count}")
    for reason, count in sorted(loaded.skipped.items()):
        print(f"skipped {reason}: {count}")
    for symbol in sorted(instruments)[:5]:
        i = instruments[symbol]
        grid = f"tick={i.tick_size} lot={i.lot_size}"
        if i.size_increment:
            grid += f" size_increment={i.size_increment}"
        print(
            f"  {symbol} ({i.unified or '-'}): {grid} contract={i.contract_size} "
            f"settle={i.settle_asset} min_notional={i.min_notional}"
        )
    return 0


def instruments(args: argparse.Namespace) -> int:
    """``sapphire data instruments FILE --symbol S --out DIR``: one Instrument JSON per
    symbol from a venue metadata file, each the file a run's ``data.instrument_files`` names
    (the venue's grids, fees and contract terms, as live trading loads them through ccxt)."""
    from sapphire.adapters.venue_instruments import load_venue_instruments
    from sapphire.data.instruments import instrument_json

    try:
        loaded = load_venue_instruments(args.file)
    except DataFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    found = loaded.instruments
    by_name = {**{i.unified: i for i in found.values() if i.unified}, **found}
    missing = [s for s in args.symbol if s not in by_name]
    if missing:
        some = ", ".join(sorted(found)[:8])
        print(
            f"error: {args.file}: no instrument {', '.join(missing)} among its {len(found)} "
            f"({some}{' ...' if len(found) > 8 else ''})",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in args.symbol:
            inst = by_name[name]
            target = out / f"{inst.symbol.replace('/', '-').replace(':', '-')}.json"
            target.write_bytes(instrument_json(inst))
            print(f"{target}: {inst.symbol} ({loaded.venue}, {inst.kind.value})")
    except OSError as exc:
        print(f"error: --out {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _labels(column: Any) -> str:
    """The distinct labels of a column, sorted; rows with none (an empty symbol, a blank
    line) are counted after them, not sorted among strings (a traceback)."""
    text = str(sorted(column.drop_nulls().unique().to_list()))
    missing = column.null_count()
    return f"{text} (+{missing} rows with none)" if missing else text


def inspect(args: argparse.Namespace) -> int:
    try:
        fmt = detect(args.file)
        if fmt.name in METADATA_FORMATS:
            return _inspect_instruments(args.file, fmt.name)
        # by its symbol, as a run's data.instrument_files: a file of several symbols has
        # the others' rows counted unknown_symbol, not read on this one's grid
        given = load_instrument_file(args.instrument_file) if args.instrument_file else None
        instruments = {given.symbol: given} if given is not None else None
        frames = load_frames(args.file)
        stream = stream_events(args.file, instruments)
        sessions: set[str] = set()
        events = 0
        for session, _ in stream.tagged():
            sessions.add(session)
            events += 1
    except DataFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"file:    {args.file}")
    print(f"format:  {fmt.name}")
    for kind, frame in frames.items():
        print(f"[{kind.value}] rows={frame.height}")
        print("  schema: " + ", ".join(f"{k}:{v}" for k, v in frame.schema.items()))
        if frame.height:
            ts: Any = frame["ts_event_ns"]
            first, last = ts.min(), ts.max()
            if first is None:  # no row's time parsed (the events line counts the rejects)
                print("  time:   none readable")
            else:
                print(f"  time:   {utc_text(int(first), 3)} -> {utc_text(int(last), 3)}")
            print(f"  symbols: {_labels(frame['symbol'])}")
    stats = stream.stats
    # the sessions of the rows that passed the checks: a malformed line's text in the
    # session column is no session ("sessions: ['2024-08-08', 'garbage line']")
    print(f"sessions: {sorted(sessions)}")
    print(f"events:  {events}  ({stats.summary()})")
    for reason, count in sorted(stats.counts.items()):
        print(f"rejected {reason.value}: {count}")
    for line, reason, detail in stats.examples:
        print(f"  e.g. line {line}: {reason.value}: {detail}")
    return 0


def _cache_directory(config_path: str | None) -> Path:
    """The cache directory a system config's runs use (``data.cache_dir``), else the
    default one; raises ConfigError for a config that does not load."""
    from sapphire.config.system import load_config
    from sapphire.data.replay_cache import default_dir
    from sapphire.kernel.assembly import data_path

    cache_dir = load_config(config_path).data.cache_dir if config_path else ""
    return data_path(cache_dir) if cache_dir else default_dir()


def cache(args: argparse.Namespace) -> int:
    """The converted-replay cache (``data.cache``) of a config, or the default one."""
    from sapphire.config.system import ConfigError
    from sapphire.data import replay_cache

    try:
        directory = _cache_directory(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if directory.exists() and not directory.is_dir():
        # runs cannot convert into it either (their summary counts data.cache write_errors)
        print(f"error: {directory} (data.cache_dir) is not a folder", file=sys.stderr)
        return 2
    if not directory.is_dir():
        print(f"cache:   {directory} (empty: nothing converted yet)")
        return 0
    if args.clear:
        print(f"cache:   {directory}: {replay_cache.clear(directory)} files removed")
        return 0
    found = replay_cache.entries(directory)
    total = sum(e.bytes for e in found)
    print(f"cache:   {directory}")
    print(f"entries: {len(found)}  ({total / 2**20:.1f} MiB; a depth message is one event)")
    for e in found:
        state = "complete" if e.complete else "prefix"
        print(f"  {e.events:>12,} events {e.bytes / 2**20:8.1f} MiB  {state:8}  {e.source}")
    return 0


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="inspect recorded market-data files")
    sub = data.add_subparsers(dest="data_command", required=True)
    cmd = sub.add_parser("inspect", help="format, schema, rows, time range and rejections")
    cmd.add_argument("file")
    cmd.add_argument(
        "--instrument-file",
        default=None,
        help="Instrument JSON (or a one-symbol exchangeInfo); `sapphire data instruments` "
        "writes one from a venue metadata file",
    )
    cmd.set_defaults(handler=inspect)
    cmd = sub.add_parser(
        "instruments",
        help="write Instrument JSON files (data.instrument_files) from a venue metadata file",
    )
    cmd.add_argument("file", help="a venue metadata file (see sapphire data inspect)")
    cmd.add_argument(
        "--symbol", action="append", required=True, help="venue or ccxt symbol; repeatable"
    )
    cmd.add_argument("--out", required=True, help="folder for the <symbol>.json files")
    cmd.set_defaults(handler=instruments)
    cmd = sub.add_parser(
        "cache", help="the converted-replay cache (data.cache): its entries, or --clear"
    )
    cmd.add_argument("--config", default=None, help="a system config naming data.cache_dir")
    cmd.add_argument("--clear", action="store_true", help="remove every entry")
    cmd.set_defaults(handler=cache)
