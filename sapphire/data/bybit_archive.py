"""Bybit public-archive files: v5 order book JSON lines and trade CSVs.

Order book (``<date>_<SYMBOL>_ob200.data`` / ``ob500.data``, also zipped or gzipped): one v5
websocket ``orderbook.<depth>.<SYMBOL>`` message per line::

    {"topic":"orderbook.500.BTCUSDT","type":"snapshot"|"delta","ts":<ms>,
     "data":{"s":"BTCUSDT","b":[["price","size"],...],"a":[...],"u":<update id>,"seq":<cross seq>},
     "cts":<ms>}

Sizes are absolute; ``"0"`` deletes the level. A ``snapshot`` resets the book; Bybit also
resends one with ``u == 1`` after a restart of its service, which is a reset like any other.
``u`` grows per symbol: a delta with ``u`` not above the last applied one is stale or replayed
(``out_of_order``), a delta before any snapshot cannot be applied (``sequence_gap``). The docs
call ``u`` only "generally" contiguous, so a jump is counted in ``u_jumps``, not rejected.
Accepted messages are chained on ``u`` with :class:`~sapphire.data.cryptofeed_rows.Chain`.
A snapshot or delta with a bad field is lost: the symbol's book is dropped and its deltas are
``sequence_gap`` until the next snapshot. Where the book was synced, one break marker row is
emitted in the lost message's place (:data:`sapphire.data.schemas.BREAK_PREV`, a delete at a
level the book held), so the venue's book counts a gap and offers no liquidity until that
snapshot instead of staying synced on stale levels. (After a service restart ``u`` starts again
at 1: a marker held across it is not stale at the ``u == 1`` snapshot, and keeps the venue's
book out of sync until the snapshot after.)

Trades (``BTCUSDT2024-08-08.csv.gz`` from ``public.bybit.com/trading``): header
``timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,
foreignNotional``; ``timestamp`` is seconds with a fraction, ``side`` the taker's
("Buy"/"Sell"), ``trdMatchID`` a UUID. Some days are stored newest first: such a file is
read whole and put in time order (the others stream chunk by chunk).

Times: an archive has no receive time, so ``ts_recv_ns`` is Bybit's own push time (``ts``;
the trade time for trades), the closest to what a subscriber would have seen, and
``ts_event_ns`` the matching engine's ``cts`` where the line has it. Units are the venue's:
linear sizes in the base coin, inverse (BTCUSD) sizes in 1-USD contracts.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Final

import msgspec
import polars as pl

from sapphire.data.binance_json import RowBuffer, _i64, _text, price_levels
from sapphire.data.cryptofeed import _session, infer_instruments  # the date in the name
from sapphire.data.cryptofeed_bybit import trade_id
from sapphire.data.cryptofeed_rows import FIELD_ERRORS, Chain, add_break, held_level
from sapphire.data.hftbacktest_raw import CHUNK_ROWS, iter_lines
from sapphire.data.schemas import FrameKind
from sapphire.data.stream import Chunk, EventStream, Instruments, csv_header, csv_string_chunks
from sapphire.data.validation import DataFileError, RejectStats, RowReject

BOOK_FORMAT: Final = "bybit_orderbook"
TRADES_FORMAT: Final = "bybit_trades_csv"
TRADE_COLUMNS: Final = ("timestamp", "symbol", "side", "size", "price", "tickDirection")
_MS: Final = 1_000_000
_DECODER = msgspec.json.Decoder()
_SNIFF_LINES: Final = 8
_SAMPLE_ROWS: Final = 200_000


# -- containers ------------------------------------------------------------------------------
def _lines(path: Path, stats: RejectStats) -> Iterator[tuple[int, bytes]]:
    """Numbered lines of a plain, gzipped or zipped (first member) file."""
    if not path.name.endswith(".zip"):
        yield from iter_lines(path, stats)
        return
    number = 0
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if not members:
                raise DataFileError(f"{path}: empty zip archive")
            with archive.open(members[0]) as handle:
                for number, line in enumerate(handle, start=1):
                    yield number, line
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        if number == 0:
            raise DataFileError(f"{path}: not a readable zip archive: {exc}") from exc
        stats.reject(RowReject.TRUNCATED, number + 1, f"unreadable data: {exc}")


# -- order book ------------------------------------------------------------------------------
def is_book_message(msg: Any) -> bool:
    return (
        isinstance(msg, dict)
        and isinstance(msg.get("topic"), str)
        and msg["topic"].startswith("orderbook.")
        and isinstance(msg.get("data"), dict)
    )


def sniff_book(path: Path) -> bool:
    """Whether the first lines of ``path`` are v5 ``orderbook.N`` messages."""
    try:
        for _, line in islice(_lines(path, RejectStats()), _SNIFF_LINES):
            try:
                if is_book_message(_DECODER.decode(line)):
                    return True
            except msgspec.DecodeError:
                continue
    except DataFileError:
        return False
    return False


class BookParser:
    """Stateful line parser: one instance per pass over one file."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
        self.last_u: dict[str, int] = {}
        self.u_jumps = 0  # deltas whose u skipped ids (accepted, see the module docstring)
        self.restarts = 0  # u == 1 snapshots after the first one of a symbol
        self.absent_deletes = 0  # size 0 for a price the book does not hold (harmless)
        self._chain = Chain()
        self._times_of: dict[str, tuple[int, int]] = {}  # of the symbol's last good message

    def __call__(self, line: bytes, number: int, buffer: RowBuffer) -> None:
        decoded, msg = buffer.json_line(line, number)
        if not decoded:
            return
        if not is_book_message(msg):
            if isinstance(msg, dict) and ("success" in msg or "op" in msg):
                buffer.stats.ignored += 1  # a subscription ack or pong kept by a recorder
            else:
                buffer.stats.reject(RowReject.MALFORMED, number, "not an orderbook message")
            return
        data = msg["data"]
        try:
            symbol = _text(data["s"])
            kind = msg["type"]
            if kind not in ("snapshot", "delta"):
                raise ValueError(f"unknown type {kind!r}")
            try:
                if kind == "snapshot":
                    self._snapshot(symbol, msg, number, buffer)
                else:
                    self._delta(symbol, msg, number, buffer)
            except FIELD_ERRORS:
                # A lost snapshot or delta: the book is unknown until the next snapshot.
                self._drop(symbol, msg, number, buffer)
                raise
        except FIELD_ERRORS as exc:
            rows = sum(len(v) for k in ("b", "a") if isinstance(v := data.get(k), list))
            buffer.stats.reject(RowReject.MALFORMED, number, f"bad field: {exc!r}", max(rows, 1))

    @staticmethod
    def _times(msg: Any) -> tuple[int, int]:
        recv = _i64(msg["ts"], _MS)
        return (_i64(msg["cts"], _MS) if msg.get("cts") is not None else recv), recv

    def _drop(self, symbol: str, msg: Any, line: int, buffer: RowBuffer) -> None:
        """Forget the symbol's book until its next snapshot; tell the venue (a marker row)."""
        book = self.books.pop(symbol, None)
        try:
            times = self._times(msg)
        except FIELD_ERRORS:
            times = self._times_of.get(symbol, (0, 0))  # a bad time: the last good one
        level = held_level(book)
        add_break(buffer, self._chain, symbol, level, times, self.session, line)

    def _snapshot(self, symbol: str, msg: Any, line: int, buffer: RowBuffer) -> None:
        data = msg["data"]
        levels = [*price_levels(data["b"], 1), *price_levels(data["a"], -1)]
        u = _i64(data["u"])
        ts, recv = self._times(msg)
        self._times_of[symbol] = (ts, recv)
        if u == 1 and symbol in self.books:
            self.restarts += 1
        self.books[symbol] = (
            {px: size for side, px, size in levels if side == 1 and size},
            {px: size for side, px, size in levels if side == -1 and size},
        )
        self.last_u[symbol] = u
        self._chain.start(symbol, u)
        for side, px, size in levels:
            buffer.add(
                FrameKind.DEPTH,
                (ts, recv, symbol, self.session, True, 0, u, 0, side, px, size, line),
            )

    def _delta(self, symbol: str, msg: Any, line: int, buffer: RowBuffer) -> None:
        data = msg["data"]
        changes = [*price_levels(data["b"], 1), *price_levels(data["a"], -1)]
        u = _i64(data["u"])
        ts, recv = self._times(msg)
        self._times_of[symbol] = (ts, recv)
        book = self.books.get(symbol)
        if book is None:
            if changes:
                detail = f"{symbol}: delta u={u} without a snapshot (waiting for one)"
                buffer.stats.reject(RowReject.SEQUENCE_GAP, line, detail, len(changes))
            return
        last = self.last_u[symbol]
        if u <= last:
            if changes:
                detail = f"{symbol}: delta u={u} <= {last} (stale or replayed)"
                buffer.stats.reject(RowReject.OUT_OF_ORDER, line, detail, len(changes))
            return
        if u != last + 1:
            self.u_jumps += 1
        self.last_u[symbol] = u
        if not changes:
            return
        ids = self._chain.ids(symbol, u)
        # Deletes first: a level moving through the spread must not be seen crossed against
        # one this same message removes.
        for side, px, size in sorted(changes, key=lambda c: c[2] != 0):
            held = book[0 if side == 1 else 1]
            if size:
                held[px] = size
            elif held.pop(px, None) is None:
                self.absent_deletes += 1
            buffer.add(
                FrameKind.DEPTH,
                (ts, recv, symbol, self.session, False, *ids, side, px, size, line),
            )


def _book_chunks(path: Path, stats: RejectStats, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
    parse = BookParser(_session(path))
    buffer = RowBuffer(stats)
    seen = 0  # rows parsed or rejected here (the stream's stats count delivered rows later)
    for number, line in _lines(path, stats):
        parse(line, number, buffer)
        if buffer.count >= chunk_rows:
            seen += buffer.count
            yield buffer.take()
    seen += buffer.count
    if buffer.count:
        yield buffer.take()
    if seen == 0 and stats.rows_in == 0:
        raise DataFileError(f"{path}: no market-data messages in this Bybit order book file")


def load_book_frames(path: str | Path) -> dict[FrameKind, pl.DataFrame]:
    """The DEPTH frame of an order book archive (no validation; bad lines are skipped)."""
    path = Path(path)
    parts = [
        frame.drop("line")
        for chunk in _book_chunks(path, RejectStats(source=str(path)), chunk_rows=500_000)
        for _, frame in chunk
    ]
    if not parts:
        raise DataFileError(f"{path}: no order book rows in this Bybit file")
    return {FrameKind.DEPTH: pl.concat(parts)}


def _book_sample(path: Path, rows: int = _SAMPLE_ROWS) -> dict[FrameKind, pl.DataFrame]:
    """The first rows of a book archive: enough for the grid, which only looks at the first
    20,000 rows per symbol, without a first pass over a day of ob500 (millions of lines)."""
    parts: list[pl.DataFrame] = []
    taken = 0
    for chunk in _book_chunks(path, RejectStats(source=str(path)), chunk_rows=rows // 4):
        parts.extend(frame.drop("line") for _, frame in chunk)
        taken += sum(frame.height for _, frame in chunk)
        if taken >= rows:
            break
    if not parts:
        raise DataFileError(f"{path}: no order book rows in this Bybit file")
    return {FrameKind.DEPTH: pl.concat(parts)}


def stream_book(path: str | Path, instruments: Instruments | None = None) -> EventStream:
    """Lazy validated events; without instruments they are inferred in a first pass."""
    path = Path(path)
    if instruments is None:
        instruments = infer_instruments(_book_sample(path), "BYBIT")
    return EventStream(
        path, BOOK_FORMAT, (FrameKind.DEPTH,), instruments, lambda st: _book_chunks(path, st)
    )


# -- trades ----------------------------------------------------------------------------------
def sniff_trades(path: Path) -> bool:
    """A ``public.bybit.com/trading`` CSV, by its header."""
    try:
        header = csv_header(path)
    except DataFileError:
        return False
    return tuple(header[: len(TRADE_COLUMNS)]) == TRADE_COLUMNS and "trdMatchID" in header


def _seconds_ns(col: str) -> pl.Expr:
    """``"1723075200.1234"`` -> ns without a float's rounding (sub-µs digits are dropped)."""
    text = pl.col(col).str.strip_chars()
    whole = text.str.extract(r"^(\d+)(?:\.\d*)?$", 1).cast(pl.Int64, strict=False)
    frac = text.str.extract(r"^\d+\.(\d{1,9})\d*$", 1).fill_null("")
    nanos = frac.str.pad_end(9, "0").cast(pl.Int64, strict=False)
    # null past Int64 ns (a time in ms or µs, not seconds): polars' ``*`` wraps silently
    fits = whole <= (2**63 - 1 - 999_999_999) // 1_000_000_000
    return pl.when(fits).then(whole * 1_000_000_000 + nanos)


def _trade_ids(values: pl.Series) -> pl.Series:
    out: list[int | None] = []
    for raw in values.to_list():
        try:
            # UUIDs on derivatives; a plain integer id is kept as it is.
            out.append(int(raw) if isinstance(raw, str) and raw.isdigit() else trade_id(raw))
        except FIELD_ERRORS:
            out.append(None)
    return pl.Series(out, dtype=pl.Int64)


def _typed_trades(path: Path, raw: pl.DataFrame, line: int, session: str) -> pl.DataFrame:
    missing = [c for c in (*TRADE_COLUMNS, "trdMatchID") if c not in raw.columns]
    if missing:
        raise DataFileError(f"{path}: not a Bybit trade CSV, missing columns {missing}")
    ts = _seconds_ns("timestamp")
    frame = raw.select(
        ts.alias("ts_event_ns"),
        ts.alias("ts_recv_ns"),
        pl.col("symbol").alias("symbol"),
        pl.lit(session).alias("session"),
        pl.col("price").cast(pl.Float64, strict=False).alias("price"),
        pl.col("size").cast(pl.Float64, strict=False).alias("qty"),
        pl.col("side")
        .replace_strict({"Buy": 1, "Sell": -1}, default=None, return_dtype=pl.Int8)
        .alias("taker_side"),
        pl.int_range(line, line + raw.height, dtype=pl.Int64).alias("line"),
    )
    ids = _trade_ids(raw["trdMatchID"])
    frame = frame.insert_column(-1, ids.alias("trade_id"))
    # A present field that did not parse makes the whole row malformed (EventBuilder checks).
    bad = (
        frame["ts_event_ns"].is_null()
        | frame["taker_side"].is_null()
        | (raw["trdMatchID"].is_not_null() & ids.is_null())
        | frame["symbol"].is_null()
    )
    return frame.with_columns(bad.alias("_bad"))


def _trade_chunks(path: Path, stats: RejectStats) -> Iterator[Chunk]:
    session = _session(path)
    typed = (
        _typed_trades(path, raw, line, session) for line, raw in csv_string_chunks(path, stats)
    )
    first = next(typed, None)
    if first is None or first.height == 0:
        if stats.rows_in == 0:
            raise DataFileError(f"{path}: no trades in this Bybit trade file")
        return
    ts = first["ts_event_ns"].drop_nulls()
    if len(ts) > 1 and ts[0] > ts[-1]:
        # Newest first: only the whole file can be put in time order.
        whole = pl.concat([first, *typed]).sort("ts_event_ns", maintain_order=True, nulls_last=True)
        for start in range(0, whole.height, CHUNK_ROWS):
            yield [(FrameKind.TRADES, whole.slice(start, CHUNK_ROWS))]
        return
    yield [(FrameKind.TRADES, first)]
    for frame in typed:
        yield [(FrameKind.TRADES, frame)]


def load_trades_frame(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    parts = [f for chunk in _trade_chunks(path, RejectStats()) for _, f in chunk]
    if not parts:
        raise DataFileError(f"{path}: no trades in this Bybit trade file")
    frame = pl.concat(parts)
    return frame.filter(~pl.col("_bad")).drop("line", "_bad")


def stream_trades(path: str | Path, instruments: Instruments | None = None) -> EventStream:
    path = Path(path)
    if instruments is None:
        instruments = infer_instruments({FrameKind.TRADES: load_trades_frame(path)}, "BYBIT")
    return EventStream(
        path, TRADES_FORMAT, (FrameKind.TRADES,), instruments, lambda st: _trade_chunks(path, st)
    )
