"""Tardis.dev downloadable CSV files (https://docs.tardis.dev/downloadable-csv-files).

Every Tardis CSV starts with ``exchange,symbol,timestamp,local_timestamp``: ``timestamp`` is
the exchange's time and ``local_timestamp`` Tardis's receive time, both integer µs since the
epoch (multiplied by 1000 into ``ts_event_ns``/``ts_recv_ns``). The columns that follow name
the data type, so the format is detected from the header, not the file name:

===================  =====================================================  ================
Tardis type          columns after the common four                          canonical frame
===================  =====================================================  ================
trades               ``id,side,price,amount`` (``side`` = taker side)       TRADES
incremental_book_L2  ``is_snapshot,side,price,amount`` (absolute amount)    DEPTH
book_snapshot_N      ``asks[i].price,asks[i].amount,bids[i].price,...``     DEPTH (snapshots)
quotes               ``ask_amount,ask_price,bid_price,bid_amount``          BBO
derivative_ticker    ``funding_rate`` among others                          FUNDING
===================  =====================================================  ================

Semantics kept from Tardis:

* ``incremental_book_L2``: a run of consecutive ``is_snapshot=true`` rows is one full book
  that replaces the previous one (a new run after non-snapshot rows means "clear the book");
  all its rows get the run's first timestamps so they become one :class:`BookSnapshot`.
  ``amount`` 0 on a non-snapshot row deletes the level. Updates before a symbol's first
  snapshot are skipped, as Tardis says, and counted (``before_snapshot``).
* ``book_snapshot_N``: each row is one top-N snapshot, one DEPTH row per level present;
  absent levels (empty fields when the book is thinner than N) are not rows.
* Tardis has no update ids. Snapshot rows carry the source line of their first row in
  ``first_update_id`` so that two snapshots with equal timestamps never merge; every other id
  is 0, so :class:`~sapphire.book.l2.L2Book` users apply deltas with ``set_level``.
* ``derivative_ticker``: only funding has an event, one per *settled* funding period (at
  its ``funding_timestamp``, with the last ``funding_rate`` announced for it), never one per
  ticker update; rows that settle nothing are ignored (counted in ``RejectStats.ignored``),
  and so are mark/index price and open interest. A rate with no ``funding_timestamp``
  (Deribit: continuous funding) is counted (``no_settlement_time``) and never charged.
* Non-numeric trade ids (BitMEX UUIDs) become ``trade_id`` 0, so no duplicate check.
* ``liquidations`` files have the same header as ``trades`` (``side`` is the liquidated
  side there, not the taker): a path naming ``liquidations`` is refused, not misread.

Units: prices and sizes stay in the venue's units. For inverse contracts the size is **not**
in the base asset: Deribit BTC-PERPETUAL amounts are USD (multiples of 10), BitMEX XBTUSD
amounts are 1-USD contracts and Huobi DM BTC-USD swap amounts are 100-USD contracts. Inferred
instruments have the lot of the decimals seen; converting sizes to BTC and inverse PnL is
left to the consumer.

Session: the ``YYYY-MM-DD`` in the file name (Tardis files are one UTC day), else "".
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

from sapphire.data.instruments import infer_frame_instrument
from sapphire.data.schemas import SCHEMAS, FrameKind, conform, scaled_ns
from sapphire.data.stream import (
    BLOCK_SIZE,
    Chunk,
    EventStream,
    Instruments,
    csv_header,
    csv_string_chunks,
    open_binary,
    require_rows,
)
from sapphire.data.validation import DataFileError, RejectStats, RowReject
from sapphire.model import Instrument, InstrumentError

COMMON: Final = ("exchange", "symbol", "timestamp", "local_timestamp")
_DATE: Final = re.compile(r"(\d{4}-\d{2}-\d{2})")
_LEVEL: Final = re.compile(r"asks\[(\d+)\]\.price")
_INFER_ROWS: Final = 200_000  # rows read up front to infer instruments when none is given


class TardisType(enum.StrEnum):
    TRADES = "trades"
    INCREMENTAL_BOOK_L2 = "incremental_book_L2"
    BOOK_SNAPSHOT = "book_snapshot"
    QUOTES = "quotes"
    DERIVATIVE_TICKER = "derivative_ticker"


_COLUMNS: Final[dict[TardisType, tuple[str, ...]]] = {
    # Checked in this order: trades and incremental_book_L2 share side/price/amount.
    TardisType.TRADES: ("id", "side", "price", "amount"),
    TardisType.INCREMENTAL_BOOK_L2: ("is_snapshot", "side", "price", "amount"),
    TardisType.QUOTES: ("ask_amount", "ask_price", "bid_price", "bid_amount"),
    TardisType.DERIVATIVE_TICKER: ("funding_rate",),
}

KINDS: Final[dict[TardisType, FrameKind]] = {
    TardisType.TRADES: FrameKind.TRADES,
    TardisType.INCREMENTAL_BOOK_L2: FrameKind.DEPTH,
    TardisType.BOOK_SNAPSHOT: FrameKind.DEPTH,
    TardisType.QUOTES: FrameKind.BBO,
    TardisType.DERIVATIVE_TICKER: FrameKind.FUNDING,
}


def snapshot_depth(names: Sequence[str]) -> int:
    """N of a ``book_snapshot_N`` header (0 when it is not one)."""
    return sum(1 for name in names if _LEVEL.fullmatch(name))


def header_type(names: Sequence[str]) -> TardisType | None:
    """The Tardis type of a CSV header, None when it is not a supported Tardis header."""
    if tuple(names[:4]) != COMMON or len(set(names)) != len(names):
        return None
    rest = set(names[4:])
    depth = snapshot_depth(names)
    if depth:
        levels = {
            f"{side}[{i}].{field}"
            for side in ("asks", "bids")
            for i in range(depth)
            for field in ("price", "amount")
        }
        return TardisType.BOOK_SNAPSHOT if levels <= rest else None
    for kind, columns in _COLUMNS.items():
        if set(columns) <= rest:
            return kind
    return None


def sniff(path: Path) -> str | None:
    """Format name for :func:`sapphire.data.registry.detect`, from the first line only.

    ``"tardis_<type>"`` for a supported header, ``"tardis_csv"`` for another Tardis header
    (options_chain, ...; loading it then fails with a clear error), None when the file is
    not a Tardis CSV or unreadable (other detection rules then decide).
    """
    try:
        with open_binary(path) as probe:
            # Bounded: a binary file without newlines must not be read whole.
            first = probe.readline(65_536).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, ValueError, DataFileError):
        return None
    names = [name.strip() for name in first.rstrip("\r\n").split(",")]
    if tuple(names[:4]) != COMMON:
        return None
    kind = header_type(names)
    return f"tardis_{kind.value}" if kind is not None else "tardis_csv"


def read_type(path: Path) -> tuple[TardisType, list[str]]:
    """Type and column names of a Tardis CSV; anything else is a DataFileError."""
    names = csv_header(path)
    kind = header_type(names)
    if kind is None:
        raise DataFileError(f"{path}: not a supported Tardis CSV (header {names[:8]})")
    if kind is TardisType.TRADES and "liquidations" in str(path):
        raise DataFileError(f"{path}: Tardis liquidations are not supported (not taker trades)")
    require_rows(path)
    return kind, names


def _session(path: Path) -> str:
    match = _DATE.search(path.name)
    return match[1] if match else ""


# -- raw string columns -> typed expressions ----------------------------------------------
def _text(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars()


def _us_to_ns(col: str) -> pl.Expr:
    return scaled_ns(_text(col).cast(pl.Int64, strict=False), 1000)


def _float(col: str) -> pl.Expr:
    return _text(col).cast(pl.Float64, strict=False)


def _bad(pairs: dict[str, pl.Expr]) -> pl.Expr:
    """A raw field was present but did not parse (absent fields are judged by the builder)."""
    checks = [(_text(raw) != "") & typed.is_null() for raw, typed in pairs.items()]
    return pl.any_horizontal(checks).fill_null(False)


def _time_bad() -> dict[str, pl.Expr]:
    return {"timestamp": _us_to_ns("timestamp"), "local_timestamp": _us_to_ns("local_timestamp")}


@dataclass(slots=True)
class _Runs:
    """incremental_book_L2 state carried across chunks: the open ``is_snapshot`` run."""

    snap: bool | None = None  # was the previous row a snapshot row
    run: int = 0  # line of the open run's first row
    ts: int | None = None
    recv: int | None = None
    # symbols whose first snapshot has been read: their updates before it are skipped
    synced: set[str] = field(default_factory=set)


def _trades(raw: pl.DataFrame, session: str) -> pl.DataFrame:
    side = _text("side").str.to_lowercase()
    frame = raw.select(
        ts_event_ns=_us_to_ns("timestamp"),
        ts_recv_ns=_us_to_ns("local_timestamp"),
        symbol=_text("symbol"),
        session=pl.lit(session),
        price=_float("price"),
        qty=_float("amount"),
        # Tardis "unknown" sides have no taker: null, so the row is rejected as malformed.
        taker_side=pl.when(side == "buy").then(1).when(side == "sell").then(-1),
        trade_id=_text("id").cast(pl.Int64, strict=False).fill_null(0),
    )
    bad = raw.select(
        _bad({**_time_bad(), "price": _float("price"), "amount": _float("amount")})
    ).to_series()
    return conform(frame, FrameKind.TRADES).with_columns(bad.alias("_bad"))


def _quotes(raw: pl.DataFrame, session: str) -> pl.DataFrame:
    columns = {
        "bid_price": "bid_price",
        "bid_qty": "bid_amount",
        "ask_price": "ask_price",
        "ask_qty": "ask_amount",
    }
    frame = raw.select(
        ts_event_ns=_us_to_ns("timestamp"),
        ts_recv_ns=_us_to_ns("local_timestamp"),
        symbol=_text("symbol"),
        session=pl.lit(session),
        update_id=pl.lit(0),
        **{dst: _float(src) for dst, src in columns.items()},
    )
    bad = raw.select(_bad({**_time_bad(), **{s: _float(s) for s in columns.values()}}))
    return conform(frame, FrameKind.BBO).with_columns(bad.to_series().alias("_bad"))


@dataclass(slots=True)
class _Funding:
    """derivative_ticker state carried across chunks, per symbol: the funding period the
    last good row announced (``funding_timestamp``, ns) and its latest rate."""

    period: dict[str, tuple[int, float]] = field(default_factory=dict)


def _funding(
    raw: pl.DataFrame, session: str, lines: pl.Series, state: _Funding, stats: RejectStats
) -> pl.DataFrame:
    """Funding *settlements* from ticker rows. A row's ``funding_rate`` is the rate of the
    period ending at its ``funding_timestamp``, re-sent with every ticker update (each second
    or so): a FUNDING event is what a position pays, so one is made per period, at its end,
    with the last rate announced before it, when a row shows the next period has begun
    (its ``funding_timestamp`` moved on). Every other good row is a ticker update
    (``ignored``); a period still open when the file ends has not settled: no event.

    A rate with no ``funding_timestamp`` (every Deribit row: its funding accrues continuously
    and Tardis maps only ``current_funding``) settles nothing this model knows: each such row
    is counted (``no_settlement_time``), never charged. Made a payment at each row, it
    charged a position the rate ~86,400 times a day."""
    fts = _us_to_ns("funding_timestamp")
    t = raw.select(
        ts=_us_to_ns("timestamp"),
        recv=_us_to_ns("local_timestamp"),
        symbol=_text("symbol"),
        rate=_float("funding_rate"),
        fts=fts,
        bad=_bad({**_time_bad(), "funding_rate": _float("funding_rate"), "funding_timestamp": fts}),
    ).with_columns(line=lines)
    keep: list[bool] = []
    settled: list[tuple[int | None, float | None]] = []
    period = state.period
    for ts, symbol, rate, end, bad, line in zip(
        t["ts"].to_list(),
        t["symbol"].to_list(),
        t["rate"].to_list(),
        t["fts"].to_list(),
        t["bad"].to_list(),
        t["line"].to_list(),
        strict=True,
    ):
        if end is None and not bad and ts is not None and rate is not None:
            stats.reject(
                RowReject.NO_SETTLEMENT_TIME,
                line,
                "funding rate without funding_timestamp (continuous funding): not charged",
            )
            keep.append(False)
            settled.append((None, None))
            continue
        if bad or ts is None or rate is None or end is None:
            keep.append(True)  # the builder rejects it and says why
            settled.append((ts, rate))
            continue
        last = period.get(symbol)
        period[symbol] = (end, rate) if last is None or end >= last[0] else last
        if last is not None and end > last[0]:
            keep.append(True)
            settled.append(last)
        else:
            keep.append(False)
            settled.append((None, None))
    frame = t.select(
        ts_event_ns=pl.Series([s[0] for s in settled], dtype=pl.Int64),
        ts_recv_ns="recv",
        symbol="symbol",
        session=pl.lit(session),
        rate=pl.Series([s[1] for s in settled], dtype=pl.Float64),
        _bad="bad",
        line="line",
        _keep=pl.Series(keep, dtype=pl.Boolean),
    ).filter(pl.col("_keep"))
    return conform(frame, FrameKind.FUNDING).with_columns(frame["_bad"], frame["line"])


def _incremental(raw: pl.DataFrame, session: str, first: int, runs: _Runs) -> pl.DataFrame:
    flag = _text("is_snapshot").str.to_lowercase()
    side = _text("side").str.to_lowercase()
    # Helper columns are "_"-prefixed: Tardis headers never start with "_".
    t = raw.select(
        _line=pl.int_range(first, first + raw.height, dtype=pl.Int64),
        _snap=pl.when(flag == "true").then(True).when(flag == "false").then(False),
        _ts=_us_to_ns("timestamp"),
        _recv=_us_to_ns("local_timestamp"),
    )
    # An unparseable flag continues the current state for run detection only (the row itself
    # is rejected): one bad row must not split a snapshot run into two books.
    before = runs.snap or False
    in_run = t["_snap"].forward_fill().fill_null(before)
    starts = in_run & ~in_run.shift(1, fill_value=before)
    run = t["_line"].zip_with(starts, pl.Series([None] * t.height, dtype=pl.Int64))
    t = t.with_columns(_in_run=in_run, _run=run.forward_fill().fill_null(runs.run))
    # All rows of one run must share its earliest valid times (rows are in time order) to
    # become one BookSnapshot; a run open at the previous chunk's end keeps that chunk's.
    carried = pl.col("_run") == runs.run
    for col, prev in (("_ts", runs.ts), ("_recv", runs.recv)):
        t = t.with_columns(
            pl.when(carried)
            .then(pl.min_horizontal(pl.col(col).min().over("_run"), pl.lit(prev, pl.Int64)))
            .otherwise(pl.col(col).min().over("_run"))
            .alias(f"{col}_run")
        )
    if t.height:
        last = t.row(-1, named=True)
        runs.snap, runs.run = bool(last["_in_run"]), int(last["_run"])
        runs.ts, runs.recv = last["_ts_run"], last["_recv_run"]
    use_run = pl.col("_in_run") & pl.col("_snap").is_not_null()
    frame = pl.concat([raw, t], how="horizontal").select(
        ts_event_ns=pl.when(use_run & pl.col("_ts").is_not_null()).then("_ts_run").otherwise("_ts"),
        ts_recv_ns=pl.when(use_run & pl.col("_recv").is_not_null())
        .then("_recv_run")
        .otherwise("_recv"),
        symbol=_text("symbol"),
        session=pl.lit(session),
        is_snapshot="_snap",
        first_update_id=pl.when(use_run).then("_run").otherwise(0),
        final_update_id=pl.lit(0),
        prev_final_update_id=pl.lit(0),
        side=pl.when(side == "bid").then(1).when(side == "ask").then(-1),
        price=_float("price"),
        qty=_float("amount"),
        _bad=_bad({**_time_bad(), "price": _float("price"), "amount": _float("amount")}),
        line="_line",
    )
    # Tardis: "skip updates until the first snapshot" (a file cut from a day, a symbol
    # first seen mid-file): a book built from updates alone is partial and may cross
    symbol = frame["symbol"]
    snap_row = frame["is_snapshot"].fill_null(False)
    seen = (
        frame.select(
            pre=pl.col("is_snapshot").fill_null(False).cast(pl.Int64).cum_sum().over("symbol")
        )["pre"]
        > 0
    ) | symbol.is_in(list(runs.synced))
    runs.synced.update(s for s in symbol.filter(snap_row).unique().to_list() if s is not None)
    out = conform(frame, FrameKind.DEPTH).with_columns(frame["_bad"], frame["line"])
    return out.with_columns(seen.alias("_synced"))


def _synced_only(frame: pl.DataFrame, stats: RejectStats) -> pl.DataFrame:
    """``frame`` without its rows before their symbol's first snapshot, counted."""
    early = frame.filter(~pl.col("_synced"))
    if early.height:
        stats.reject(
            RowReject.BEFORE_SNAPSHOT,
            int(early["line"][0]),
            "book update before the first snapshot of its symbol (skipped, as Tardis says)",
            rows=early.height,
        )
    return frame.filter(pl.col("_synced")).drop("_synced")


def _snapshots(raw: pl.DataFrame, session: str, first: int, depth: int) -> pl.DataFrame:
    base = raw.with_columns(
        _line=pl.int_range(first, first + raw.height, dtype=pl.Int64),
        _ts=_us_to_ns("timestamp"),
        _recv=_us_to_ns("local_timestamp"),
        _time_bad=_bad(_time_bad()),
    )
    parts = []
    for side_name, side in (("bids", 1), ("asks", -1)):
        for i in range(depth):
            price, amount = f"{side_name}[{i}].price", f"{side_name}[{i}].amount"
            parts.append(
                base.select(
                    ts_event_ns="_ts",
                    ts_recv_ns="_recv",
                    symbol=_text("symbol"),
                    session=pl.lit(session),
                    is_snapshot=pl.lit(True),
                    first_update_id="_line",
                    final_update_id=pl.lit(0),
                    prev_final_update_id=pl.lit(0),
                    side=pl.lit(side, dtype=pl.Int8),
                    price=_float(price),
                    qty=_float(amount),
                    _bad=pl.col("_time_bad") | _bad({price: _float(price), amount: _float(amount)}),
                    line="_line",
                    _level=pl.lit(i if side == 1 else depth + i),
                    _absent=pl.col(price).is_null() & pl.col(amount).is_null(),
                )
            )
    levels = pl.concat(parts).sort("line", "_level").filter(~pl.col("_absent"))
    return conform(levels, FrameKind.DEPTH).with_columns(levels["_bad"], levels["line"])


def _chunks(
    path: Path,
    stats: RejectStats,
    kind: TardisType,
    names: Sequence[str],
    block_size: int = BLOCK_SIZE,
) -> Iterator[Chunk]:
    session = _session(path)
    runs = _Runs()
    funding = _Funding()
    depth = snapshot_depth(names)
    required = set(COMMON) | set(_COLUMNS.get(kind, ()))
    if kind is TardisType.DERIVATIVE_TICKER:
        required.add("funding_timestamp")  # when a period settles (see _funding)
    for first, raw in csv_string_chunks(path, stats, block_size):
        missing = required - set(raw.columns)
        if missing:
            raise DataFileError(f"{path}: missing columns {sorted(missing)}")
        if kind is TardisType.TRADES:
            frame = _trades(raw, session)
        elif kind is TardisType.QUOTES:
            frame = _quotes(raw, session)
        elif kind is TardisType.DERIVATIVE_TICKER:
            # Ticker rows without a funding rate (mark/index/OI updates) have no event.
            keep = raw["funding_rate"].is_not_null() & (raw["funding_rate"].str.strip_chars() != "")
            keep = keep.fill_null(False)
            stats.ignored += int((~keep).sum())
            lines = pl.int_range(first, first + raw.height, dtype=pl.Int64, eager=True)
            counted = stats.counts.get(RowReject.NO_SETTLEMENT_TIME, 0)
            frame = _funding(raw.filter(keep), session, lines.filter(keep), funding, stats)
            counted = stats.counts.get(RowReject.NO_SETTLEMENT_TIME, 0) - counted
            stats.ignored += int(keep.sum()) - frame.height - counted
            yield [(FrameKind.FUNDING, frame)]
            continue
        elif kind is TardisType.INCREMENTAL_BOOK_L2:
            yield [(FrameKind.DEPTH, _synced_only(_incremental(raw, session, first, runs), stats))]
            continue
        else:
            frame = _snapshots(raw, session, first, depth)
            yield [(FrameKind.DEPTH, frame)]
            continue
        lines = pl.int_range(first, first + raw.height, dtype=pl.Int64, eager=True)
        yield [(KINDS[kind], frame.with_columns(line=lines))]


def load_tardis_frames(path: str | Path) -> dict[FrameKind, pl.DataFrame]:
    """The canonical frame of a Tardis CSV (one kind per file), unvalidated.

    Rows that do not even split into the header's fields are left out; use
    :func:`stream_tardis` for validated events with every reject counted.
    """
    path = Path(path)
    kind, names = read_type(path)
    parts = [
        frame.drop("line", "_bad")
        for chunk in _chunks(path, RejectStats(source=str(path)), kind, names)
        for _, frame in chunk
    ]
    canonical = KINDS[kind]
    if not parts:
        return {canonical: pl.DataFrame(schema=SCHEMAS[canonical])}
    return {canonical: pl.concat(parts)}


def stream_tardis(
    path: str | Path, instruments: Instruments | None = None, *, block_size: int = BLOCK_SIZE
) -> EventStream:
    """Lazy validated events of a Tardis CSV, read in bounded chunks.

    Without ``instruments`` one per symbol is inferred from the decimals of the first
    ``_INFER_ROWS`` rows (Tardis files normally hold one symbol; rows of a symbol first seen
    later are rejected as ``unknown_symbol``). ``block_size`` bounds the CSV bytes per chunk.
    """
    path = Path(path)
    kind, names = read_type(path)
    if instruments is None:
        instruments = _infer(path, kind, names)
    canonical = KINDS[kind]

    def chunks(stats: RejectStats) -> Iterator[Chunk]:
        return _chunks(path, stats, kind, names, block_size)

    return EventStream(path, f"tardis_{kind.value}", (canonical,), instruments, chunks)


def _infer(path: Path, kind: TardisType, names: Sequence[str]) -> Instruments:
    frames: list[pl.DataFrame] = []
    seen = 0
    for chunk in _chunks(path, RejectStats(source=str(path)), kind, names):
        for _, frame in chunk:
            frames.append(frame.drop("line", "_bad").filter(pl.col("symbol").is_not_null()))
            seen += frame.height
        if seen >= _INFER_ROWS:
            break
    if not frames or kind is TardisType.DERIVATIVE_TICKER:
        # Funding rates have no grid: any instrument of the file's symbols will do.
        symbols = {s for f in frames for s in f["symbol"].unique().to_list()}
        return {s: _unit_instrument(s) for s in symbols}
    sample = pl.concat(frames)
    try:
        return {
            symbol: infer_frame_instrument(sample.filter(pl.col("symbol") == symbol), symbol)
            for symbol in sample["symbol"].unique().to_list()
        }
    except InstrumentError as exc:
        raise DataFileError(f"{path}: cannot infer an instrument: {exc}") from exc


def _unit_instrument(symbol: str) -> Instrument:
    return Instrument(symbol=symbol, venue="UNKNOWN", tick_size="1", lot_size="1")
