"""Canonical frame chunks -> validated typed events (one code path for every format).

Every loader turns its source into chunks of the canonical frames of
:mod:`sapphire.data.schemas` (plus an optional Int64 ``line`` column and a Boolean ``_bad``
column marking fields that failed to parse); :class:`EventBuilder` validates each row and
yields ``(session, event)`` pairs. It is stateful across chunks, so a stream can be read in
bounded-memory pieces: snapshots and depth messages that straddle a chunk boundary are held
until complete.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import numpy as np
import polars as pl

from sapphire.data.schemas import BREAK_PREV, SCHEMAS, FrameKind
from sapphire.data.validation import RejectStats, RowReject
from sapphire.model import Instrument
from sapphire.model.events import (
    AnyMarketEvent,
    Bar,
    BookDelta,
    BookSnapshot,
    FundingRate,
    Quote,
    Side,
    Trade,
)

Tagged = tuple[str, AnyMarketEvent]
_RECENT_TRADE_IDS = 65_536  # bounded memory for duplicate detection
_BID, _ASK = Side.BUY, Side.SELL


_SAFE_UNITS = float(1 << 62)
# How far ``value / unit`` may lie from a whole number and still be on the grid: the error of
# parsing value and unit and of the division (each half an ulp, relative), with room to
# spare. A tolerance of 1e-9 * units let an off-grid size through once it was 5e8 units
# (qty 7.123456785 at a 1e-8 step); float noise is relative to the number, never that large.
_GRID_TOLERANCE = 4 * sys.float_info.epsilon


def _units(value: float, unit: float) -> int | None:
    """Whole number of ``unit`` in ``value``, or None when off the grid."""
    scaled = value / unit
    if not abs(scaled) < _SAFE_UNITS:  # beyond int64 (or not finite): never a price or size
        return None
    rounded = round(scaled)
    if abs(scaled - rounded) > _GRID_TOLERANCE * max(abs(scaled), 1.0):
        return None
    return int(rounded)


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _units_vector(values: np.ndarray, unit: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_units` over a column: ``(on_grid, units)``. The same IEEE operations in the same
    order (divide, round half to even, the same tolerance), so a row marked on the grid gets
    exactly the units the row-by-row rule gives; every other row (off the grid, non-finite,
    null, unknown symbol, beyond int64) is left to that rule, which also says why."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        scaled = values / unit
        rounded = np.rint(scaled)
        ok = np.abs(scaled - rounded) <= _GRID_TOLERANCE * np.maximum(np.abs(scaled), 1.0)
        ok &= np.abs(rounded) < _SAFE_UNITS
    return ok, np.where(ok, rounded, 0.0).astype(np.int64)


# a row this far past the one before it, with the row after it back in line, is one corrupt
# timestamp (EventBuilder._time_jumps); an hour is no gap any recorder leaves *and* returns from
TIME_JUMP_NS = 3_600_000_000_000
# the most rows in a row that _time_jumps takes for one misplaced block (a few lines moved up a
# file, a burst with a corrupt year); a longer run ahead is the file's own time
MISPLACED_BLOCK = 8


class EventBuilder:
    """Validate canonical rows of one ``kind`` and build events on ``instrument``'s grid."""

    def __init__(
        self,
        kind: FrameKind,
        instrument: Instrument | Mapping[str, Instrument],
        stats: RejectStats,
    ) -> None:
        self.kind = kind
        self.stats = stats
        # Multi-symbol sources (cryptofeed logs) pass one instrument per symbol.
        many = {} if isinstance(instrument, Instrument) else dict(instrument)
        self._one = instrument if isinstance(instrument, Instrument) else None
        self._grids = {sym: (i.tick_float, i.lot_float) for sym, i in many.items()}
        self._last_ts: dict[tuple[str, str], int] = {}
        self._last_u: dict[tuple[str, str], int] = {}
        self._gap_key: tuple[object, ...] | None = None
        self._msg_key: tuple[object, ...] | None = None
        self._trade_ids: dict[tuple[str, str], tuple[set[int], deque[int]]] = {}
        self._pending: tuple[tuple[object, ...], str, BookDelta] | None = None
        self._snap: dict[str, Any] | None = None
        self._row = 0
        self._last_session: str | None = None  # the session of the previous chunk's last row

    # -- shared checks ------------------------------------------------------------------
    def _grid(self, symbol: str) -> tuple[float, float] | None:
        grid = self._grids.get(symbol)
        if grid is None and self._one is not None:
            grid = self._grids[symbol] = (self._one.tick_float, self._one.lot_float)
        return grid

    def _in_order(self, session: str, symbol: str, ts: int, line: int) -> bool:
        key = (session, symbol)
        if ts < self._last_ts.get(key, ts):
            self.stats.reject(RowReject.OUT_OF_ORDER, line, f"ts {ts} < {self._last_ts[key]}")
            return False
        self._last_ts[key] = ts
        return True

    def feed(self, chunk: pl.DataFrame) -> Iterator[Tagged]:
        """Validate and convert one chunk; may hold back rows of an unfinished message."""
        n = chunk.height
        if n == 0:
            return
        first = self._row
        self._row += n
        foreign = self._foreign_sessions(chunk)
        if foreign is not None:
            if "line" not in chunk.columns:
                chunk = chunk.with_columns(
                    pl.int_range(first, first + n, dtype=pl.Int64).alias("line")
                )
            chunk = chunk.filter(~pl.Series(foreign))
            n = chunk.height
            if n == 0:
                return
        lines: Any = chunk["line"].to_list() if "line" in chunk.columns else range(first, first + n)
        if self.kind is not FrameKind.DEPTH:
            jumps = self._time_jumps(chunk)
            if jumps is not None:
                lines = [line for line, j in zip(lines, jumps, strict=True) if not j]
                chunk = chunk.filter(~pl.Series(jumps))
                n = chunk.height
                if n == 0:
                    return
        bad = chunk["_bad"].to_list() if "_bad" in chunk.columns else [False] * n
        cols = [chunk[c].to_list() for c in SCHEMAS[self.kind]]
        if self.kind in (FrameKind.DEPTH, FrameKind.TRADES):
            cols.extend(self._checked_units(chunk))
        handler = getattr(self, f"_rows_{self.kind.value}")
        yield from handler(lines, bad, cols)

    def _foreign_sessions(self, chunk: pl.DataFrame) -> np.ndarray | None:
        """Rows of a session met inside another session's run, the other resuming right
        after them (A..A B..B A..A): rows of another recording spliced into this one,
        counted ``out_of_order`` and dropped here. A file holds each session as one run (a
        session is one continuous recording), and the order check, kept per session, let
        such rows through as the first of their own session, traded amid the other's. A run
        at a chunk's very end is not seen (no row after it yet)."""
        sessions = chunk["session"].fill_null("")
        before = self._last_session
        self._last_session = sessions[-1]
        head = sessions[0]
        if (before is None or before == head) and bool((sessions == head).all()):
            return None  # the usual chunk: one session, the one before it
        runs = sessions.rle().struct.unnest()
        lengths, labels = runs["len"].to_list(), runs["value"].to_list()
        flags = np.zeros(chunk.height, dtype=bool)
        lines = chunk["line"].to_list() if "line" in chunk.columns else None
        start = 0
        for i, (length, label) in enumerate(zip(lengths, labels, strict=True)):
            prev = labels[i - 1] if i else before
            # a row with no session is a damaged row, judged by the row rules, not a splice
            spliced = i + 1 < len(labels) and label and prev and prev == labels[i + 1] != label
            if spliced:
                flags[start : start + length] = True
                detail = f"a row of session {label!r} inside session {prev!r}"
                for k in range(start, start + length):
                    line = lines[k] if lines is not None else self._row - chunk.height + k
                    self.stats.reject(RowReject.OUT_OF_ORDER, line, detail)
            start += length
        return flags if flags.any() else None

    def _time_jumps(self, chunk: pl.DataFrame) -> np.ndarray | None:
        """Blocks of 1 to :data:`MISPLACED_BLOCK` rows ahead of the rows on both sides of them
        (same session and symbol), the row after the block coming back to where the one
        before it was, that are misplaced rows: they jump more than :data:`TIME_JUMP_NS` (a
        corrupt timestamp, a far-future year), or more rows right after them than the block
        holds are all earlier than every row of it (one row: the next two). Counted
        ``out_of_order`` and dropped here: taken as the run's time, such rows made every good
        row after them "out of order" until time caught up with them (one row placed 30 s early
        rejected 30 s of trades; a far-future year the file's rest; two rows moved up together
        did so still). Where fewer rows come back than the block holds (two rows swapped) the
        order check rejects the later ones, as it always did. Rows with too few rows after them
        in this chunk are left to the order check (a jump at a chunk's very end is not seen)."""
        t = pl.col("ts_event_ns")
        if self.kind in (FrameKind.TRADES, FrameKind.BBO):  # the order check's own time
            t = pl.when(pl.col("ts_recv_ns") > 0).then(pl.col("ts_recv_ns")).otherwise(t)
        keys = ["session", "symbol"]
        frame = chunk.select(pl.col(keys).fill_null(""), t.alias("t"))
        # a block ends where time goes back (the row after it): none in the chunk, nothing
        # to look for (a clean file's chunks; the blocks' 17 shifted columns cost 1.8x there)
        if not frame.select((pl.col("t").shift(-1).over(keys) < pl.col("t")).any()).item():
            return None
        frame = frame.with_columns(pl.col("t").shift(1).over(keys).alias("prev"))
        firsts = frame["prev"].is_null() & frame["t"].is_not_null()
        if firsts.any() and self._last_ts:  # a key's first row here: the chunk before's last
            last = self._last_ts
            carried = [
                last.get((ses, sym)) if first else None
                for ses, sym, first in zip(
                    frame["session"].to_list(),
                    frame["symbol"].to_list(),
                    firsts.to_list(),
                    strict=True,
                )
            ]
            frame = frame.with_columns(
                pl.coalesce(pl.col("prev"), pl.Series(carried, dtype=pl.Int64)).alias("prev")
            )
        t, prev = pl.col("t"), pl.col("prev")
        ahead = [t.shift(-j).over(keys) for j in range(2 * MISPLACED_BLOCK + 1)]
        starts: list[pl.Expr] = []  # per block length k: the block starts at this row
        for k in range(1, MISPLACED_BLOCK + 1):
            low = pl.min_horizontal(ahead[:k])
            after = ahead[k]
            back = pl.all_horizontal([a < low for a in ahead[k + 1 : 2 * k + 1]])
            starts.append(
                ((after < low) & (after >= prev) & ((low - prev > TIME_JUMP_NS) | back))
                .fill_null(False)
                .alias(f"k{k}")
            )
        marks = frame.select(starts)
        if not marks.select(pl.any_horizontal(pl.all().any())).item():
            return None
        # each start flags its block's rows (itself and the k-1 after it, same key)
        flagged = pl.any_horizontal(
            [
                pl.col(f"k{k}").shift(j).over(keys).fill_null(False)
                for k in range(1, MISPLACED_BLOCK + 1)
                for j in range(k)
            ]
        )
        frame = pl.concat([frame, marks], how="horizontal").with_columns(flagged.alias("j"))
        # how far ahead: of the last row kept before the block
        kept = pl.when(~pl.col("j")).then(pl.col("t"))
        frame = frame.with_columns(
            pl.coalesce(kept.shift(1).forward_fill().over(keys), prev).alias("base")
        )
        flags = frame["j"]
        lines = chunk["line"].to_list() if "line" in chunk.columns else None
        first = self._row - chunk.height
        for i in flags.arg_true().to_list():
            line = lines[i] if lines is not None else first + i
            jump = (frame["t"][i] - frame["base"][i]) / 1e9
            detail = f"time jumps {jump:,.3f} s ahead; the rows around it agree"
            self.stats.reject(RowReject.OUT_OF_ORDER, line, detail)
        return flags.to_numpy()

    def _grid_columns(self, chunk: pl.DataFrame) -> tuple[np.ndarray | float, np.ndarray | float]:
        """Tick and lot size per row (NaN where the symbol has no instrument)."""
        if self._one is not None:
            return self._one.tick_float, self._one.lot_float
        symbols = chunk["symbol"]
        ticks = {sym: grid[0] for sym, grid in self._grids.items()}
        lots = {sym: grid[1] for sym, grid in self._grids.items()}
        nan = float("nan")
        return (
            symbols.replace_strict(ticks, default=nan, return_dtype=pl.Float64).to_numpy(),
            symbols.replace_strict(lots, default=nan, return_dtype=pl.Float64).to_numpy(),
        )

    def _checked_units(self, chunk: pl.DataFrame) -> list[list[Any]]:
        """Per row of a trades or depth chunk: whether price and quantity pass every rule of
        :meth:`_level_units` (checked a column at a time), with the ticks and lots. Rows not
        marked go through :meth:`_level_units` itself, so rejections are counted as before."""
        tick, lot = self._grid_columns(chunk)
        px = chunk["price"].cast(pl.Float64).to_numpy()
        qty = chunk["qty"].cast(pl.Float64).to_numpy()
        px_ok, ticks = _units_vector(px, tick)
        qty_ok, lots = _units_vector(qty, lot)
        with np.errstate(invalid="ignore"):
            if self.kind is FrameKind.DEPTH:
                # a diff may delete a level (qty 0); a snapshot never lists an empty one
                snap = chunk["is_snapshot"].fill_null(True).to_numpy()
                qty_valid = (qty > 0) | ((qty == 0) & ~snap)
            else:
                qty_valid = qty > 0
            ok = px_ok & qty_ok & (px > 0) & qty_valid & np.isfinite(px) & np.isfinite(qty)
        return [ok.tolist(), ticks.tolist(), lots.tolist()]

    def finish(self, cut: bool = False) -> Iterator[Tagged]:
        """Flush what was held back at the end of the source. ``cut``: the source ended
        where its data was cut, so the message held may have lost levels after it: a diff is
        given as incomplete (``last_in_batch`` False), a snapshot (which would replace the
        whole book with part of one) is rejected, counted ``truncated``."""
        if self.kind is FrameKind.DEPTH:
            yield from self._flush_pending(cut)
            yield from self._flush_snapshot(cut)

    def _level_units(
        self, line: int, sym: str, px: float, qty: float, *, zero_qty_ok: bool
    ) -> tuple[int, int] | None:
        """Ticks and lots of one price/quantity pair (a trade or a book level), or None with
        the row rejected and counted under the first rule it breaks."""
        stats = self.stats
        grid = self._grid(sym)
        if grid is None:
            stats.reject(RowReject.UNKNOWN_SYMBOL, line, sym)
            return None
        tick, lot = grid
        if not _finite(px, qty):
            stats.reject(RowReject.NON_FINITE, line, f"price={px} qty={qty}")
            return None
        if px <= 0:
            stats.reject(RowReject.NON_POSITIVE_PRICE, line, f"price={px}")
            return None
        if qty < 0 or (qty == 0 and not zero_qty_ok):
            reason = RowReject.ZERO_QTY if qty == 0 else RowReject.NEGATIVE_QTY
            stats.reject(reason, line, f"qty={qty}")
            return None
        ticks, lots = _units(px, tick), _units(qty, lot)
        if ticks is None or lots is None:
            stats.reject(RowReject.OFF_GRID, line, f"price={px} qty={qty}")
            return None
        return ticks, lots

    # -- trades -------------------------------------------------------------------------
    def _rows_trades(self, lines: Any, bad: list[bool], cols: list[list[Any]]) -> Iterator[Tagged]:
        stats = self.stats
        rows = zip(lines, bad, *cols, strict=True)
        for line, b, ts, recv, sym, ses, px, qty, side, tid, ok, ticks, lots in rows:
            if b or ts is None or px is None or qty is None or side not in (1, -1) or sym is None:
                stats.reject(RowReject.MALFORMED, line, "missing or unparseable field")
                continue
            ses = ses or ""
            if not ok:
                units = self._level_units(line, sym, px, qty, zero_qty_ok=False)
                if units is None:
                    continue
                ticks, lots = units
            recv = recv or 0
            if not self._in_order(ses, sym, recv or ts, line):
                continue
            tid = tid or 0
            if tid:
                seen, order = self._trade_ids.setdefault((ses, sym), (set(), deque()))
                if tid in seen:
                    stats.reject(RowReject.DUPLICATE_TRADE_ID, line, f"trade_id={tid}")
                    continue
                seen.add(tid)
                order.append(tid)
                if len(order) > _RECENT_TRADE_IDS:
                    seen.discard(order.popleft())
            stats.deliver()
            yield (
                ses,
                Trade(
                    ts_event_ns=ts,
                    ts_recv_ns=recv,
                    symbol=sym,
                    price_ticks=ticks,
                    qty_lots=lots,
                    taker_side=_BID if side == 1 else _ASK,
                    trade_id=tid,
                ),
            )

    # -- bbo ----------------------------------------------------------------------------
    def _rows_bbo(self, lines: Any, bad: list[bool], cols: list[list[Any]]) -> Iterator[Tagged]:
        stats = self.stats
        for line, b, ts, recv, sym, ses, uid, bp, bq, ap, aq in zip(lines, bad, *cols, strict=True):
            if b or ts is None or sym is None or None in (bp, bq, ap, aq):
                stats.reject(RowReject.MALFORMED, line, "missing or unparseable field")
                continue
            ses = ses or ""
            grid = self._grid(sym)
            if grid is None:
                stats.reject(RowReject.UNKNOWN_SYMBOL, line, sym)
                continue
            tick, lot = grid
            if not _finite(bp, bq, ap, aq):
                stats.reject(RowReject.NON_FINITE, line, f"{bp} {bq} {ap} {aq}")
                continue
            if bp <= 0 or ap <= 0:
                stats.reject(RowReject.NON_POSITIVE_PRICE, line, f"bid={bp} ask={ap}")
                continue
            if bq < 0 or aq < 0:
                stats.reject(RowReject.NEGATIVE_QTY, line, f"bid_qty={bq} ask_qty={aq}")
                continue
            if bp >= ap:
                stats.reject(RowReject.CROSSED_BOOK, line, f"bid={bp} >= ask={ap}")
                continue
            units = (_units(bp, tick), _units(bq, lot), _units(ap, tick), _units(aq, lot))
            if None in units:
                stats.reject(RowReject.OFF_GRID, line, f"{bp} {bq} {ap} {aq}")
                continue
            recv = recv or 0
            if not self._in_order(ses, sym, recv or ts, line):
                continue
            stats.deliver()
            bid_t, bid_l, ask_t, ask_l = units
            yield (
                ses,
                Quote(
                    ts_event_ns=ts,
                    ts_recv_ns=recv,
                    symbol=sym,
                    bid_ticks=bid_t or 0,
                    bid_lots=bid_l or 0,
                    ask_ticks=ask_t or 0,
                    ask_lots=ask_l or 0,
                    update_id=uid or 0,
                ),
            )

    # -- bars and funding ---------------------------------------------------------------
    def _rows_bars(self, lines: Any, bad: list[bool], cols: list[list[Any]]) -> Iterator[Tagged]:
        stats = self.stats
        for line, b, ts, recv, sym, ses, iv, o, h, lo, c, v in zip(lines, bad, *cols, strict=True):
            if b or ts is None or sym is None or iv is None or None in (o, h, lo, c, v):
                stats.reject(RowReject.MALFORMED, line, "missing or unparseable field")
                continue
            ses = ses or ""
            if iv <= 0 or ts + iv >= 1 << 63:  # a bar is stamped at its close: open + interval
                stats.reject(RowReject.MALFORMED, line, f"interval_ns={iv}")
                continue
            grid = self._grid(sym)
            if grid is None:
                stats.reject(RowReject.UNKNOWN_SYMBOL, line, sym)
                continue
            tick, lot = grid
            if not _finite(o, h, lo, c, v):
                stats.reject(RowReject.NON_FINITE, line, f"{o} {h} {lo} {c} {v}")
                continue
            if min(o, h, lo, c) <= 0:
                stats.reject(RowReject.NON_POSITIVE_PRICE, line, f"{o} {h} {lo} {c}")
                continue
            if v < 0:
                stats.reject(RowReject.NEGATIVE_QTY, line, f"volume={v}")
                continue
            if lo > min(o, c) or h < max(o, c):
                # no market trades such a bar (the bar engine's _check_bars refuses it too)
                detail = f"open/close outside low-high: o={o} h={h} l={lo} c={c}"
                stats.reject(RowReject.MALFORMED, line, detail)
                continue
            units = [_units(x, tick) for x in (o, h, lo, c)] + [_units(v, lot)]
            if None in units:
                stats.reject(RowReject.OFF_GRID, line, f"{o} {h} {lo} {c} {v}")
                continue
            if not self._in_order(ses, sym, ts, line):
                continue
            stats.deliver()
            ot, ht, lt, ct, vl = (u or 0 for u in units)
            yield (
                ses,
                Bar(
                    ts_event_ns=ts + iv,  # OHLCV files date a bar by its open: known at close
                    ts_recv_ns=recv or 0,
                    symbol=sym,
                    interval_ns=iv,
                    open_ticks=ot,
                    high_ticks=ht,
                    low_ticks=lt,
                    close_ticks=ct,
                    volume_lots=vl,
                ),
            )

    def _rows_funding(self, lines: Any, bad: list[bool], cols: list[list[Any]]) -> Iterator[Tagged]:
        stats = self.stats
        for line, b, ts, recv, sym, ses, rate in zip(lines, bad, *cols, strict=True):
            if b or ts is None or sym is None or rate is None:
                stats.reject(RowReject.MALFORMED, line, "missing or unparseable field")
                continue
            if not math.isfinite(rate):
                stats.reject(RowReject.NON_FINITE, line, f"rate={rate}")
                continue
            ses = ses or ""
            if not self._in_order(ses, sym, ts, line):
                continue
            stats.deliver()
            text = format(rate, ".12g")
            yield ses, FundingRate(ts_event_ns=ts, ts_recv_ns=recv or 0, symbol=sym, rate=text)

    # -- depth --------------------------------------------------------------------------
    def _flush_pending(self, cut: bool = False) -> Iterator[Tagged]:
        """The held level, as the last of its message (a snapshot or the end follows it;
        the depth loop hands on the levels a message continues past); at a ``cut`` end its
        message is not known to be whole."""
        if self._pending is not None:
            _, session, delta = self._pending
            self._pending = None
            self.stats.deliver()
            if cut:
                delta = msgspec.structs.replace(delta, last_in_batch=False)
            yield session, delta

    def _flush_snapshot(self, cut: bool = False) -> Iterator[Tagged]:
        snap, self._snap = self._snap, None
        if snap is None:
            return
        snap.pop("key")
        levels: int = snap.pop("levels")
        session: str = snap.pop("session")
        bids: dict[int, int] = snap.pop("bids")
        asks: dict[int, int] = snap.pop("asks")
        line: int = snap.pop("line")
        end: int = snap.pop("end")
        if cut and end != line:  # a snapshot of one line (Tardis top-N) is whole
            detail = "snapshot at the cut end of the file: its other levels may be lost"
            self.stats.reject(RowReject.TRUNCATED, line, detail, rows=levels)
            return
        live_bids = [p for p, q in bids.items() if q > 0]
        live_asks = [p for p, q in asks.items() if q > 0]
        if live_bids and live_asks and max(live_bids) >= min(live_asks):
            # a book no venue shows (a recorder's glitch): no book can take it, and a venue
            # fed it stopped the run; the whole snapshot is refused, counted
            detail = f"snapshot crossed: bid {max(live_bids)} >= ask {min(live_asks)} ticks"
            self.stats.reject(RowReject.CROSSED_BOOK, line, detail, rows=levels)
            return
        self.stats.deliver(rows=levels)
        yield (
            session,
            BookSnapshot(
                bids=tuple(sorted(bids.items(), reverse=True)),
                asks=tuple(sorted(asks.items())),
                **snap,
            ),
        )

    def _continues(self, ses: str, sym: str, first: int, final: int, prev: int) -> bool:
        """Does a sequenced diff carry on its chain's last message (not a first, a stale or
        a gap one)? Read only: :meth:`_sequence_ok` moves the chain on."""
        last = self._last_u.get((ses, sym))
        if last is None or not final or final <= last:
            return False
        return prev == last if prev else first <= last + 1

    def _sequence_ok(self, ses: str, sym: str, first: int, final: int, prev: int) -> bool:
        chain = (ses, sym)
        last = self._last_u.get(chain)
        self._last_u[chain] = final
        if last is None or final <= last:
            return True  # first message, or a stale one the book's sync rule drops
        # Futures chain on pu == previous u; spot on U == previous u + 1.
        return prev == last if prev else first <= last + 1

    def _break(
        self, key: tuple[Any, ...], side: int, px: float, ticks: int | None
    ) -> Iterator[Tagged]:
        """A loader's break marker (:data:`~sapphire.data.schemas.BREAK_PREV`), handed on as
        one whole message. Why not through the row checks: it is no source row (so it is in
        no row count), and the sequence check here would reject it as the gap it is, when it
        is there precisely so that the venue's book sees that gap; the loader sends nothing
        else of the symbol until its next snapshot, so dropped here the venue's book stayed
        synced on stale levels. Only its ids matter (no book applies it): a price that is
        not a valid one on the grid stands as 1 tick, and its time is kept in order."""
        ses, sym, _, recv, ts, first, final = key
        grid = self._grid(sym)
        if grid is None:
            return  # no instrument: no venue book of the symbol to tell
        if ticks is None:  # a price its book held that no row passed: any will do
            ticks = _units(px, grid[0]) if _finite(px) else None
        last = self._last_ts.get((ses, sym))
        if last is not None and (recv or ts) < last:
            recv, ts = (last, ts) if recv else (recv, last)
        if self._snap is not None:
            yield from self._flush_snapshot()
        yield from self._flush_pending()
        self._msg_key, self._gap_key = key, None
        self.stats.breaks += 1
        self.stats.deliver(rows=0)
        marker = BookDelta(
            ts_event_ns=ts,
            ts_recv_ns=recv,
            symbol=sym,
            side=_BID if side == 1 else _ASK,
            price_ticks=max(ticks or 1, 1),
            qty_lots=0,
            first_update_id=first,
            final_update_id=final,
            prev_final_update_id=BREAK_PREV,
        )
        yield ses, marker

    def _rows_depth(self, lines: Any, bad: list[bool], cols: list[list[Any]]) -> Iterator[Tagged]:
        stats = self.stats
        replace = msgspec.structs.replace
        rows = zip(lines, bad, *cols, strict=True)
        for (
            line,
            b,
            ts,
            recv,
            sym,
            ses,
            snap,
            first,
            final,
            prev,
            side,
            px,
            qty,
            ok,
            ticks,
            lots,
        ) in rows:
            if b or ts is None or sym is None or px is None or qty is None or snap is None:
                stats.reject(RowReject.MALFORMED, line, "missing or unparseable field")
                continue
            if side not in (1, -1):
                stats.reject(RowReject.MALFORMED, line, f"side={side}")
                continue
            ses, recv, first, final, prev = ses or "", recv or 0, first or 0, final or 0, prev or 0
            key = (ses, sym, snap, recv, ts, first, final)
            if prev == BREAK_PREV and not snap:
                yield from self._break(key, side, px, ticks if ok else None)
                continue
            if not ok:
                # qty 0 deletes a level in a diff; a snapshot never lists an empty level
                units = self._level_units(line, sym, px, qty, zero_qty_ok=not snap)
                if units is None:
                    continue
                ticks, lots = units
            if key != self._msg_key:
                # First row of a new message: order and sequence are checked once per message.
                self._msg_key = key
                self._gap_key = None
                # A diff whose ids continue the chain is in order whatever the recorder's
                # clock says: stamped a moment early (its clock stepped back), it was dropped,
                # and the chain broke there: the venue's book out of sync to the next snapshot
                # (200 s, 5,628 orders expired, for three messages 0.5 s early). The replay
                # keeps its clock monotone (the merge's key, the cutter's restamp, counted).
                chained = not snap and self._continues(ses, sym, first, final, prev)
                if not chained and not self._in_order(ses, sym, recv or ts, line):
                    self._gap_key = key
                    continue
                if chained:
                    last = self._last_ts.get((ses, sym), recv or ts)
                    self._last_ts[(ses, sym)] = max(last, recv or ts)
                if not snap and not self._sequence_ok(ses, sym, first, final, prev):
                    self._gap_key = key
                    stats.reject(RowReject.SEQUENCE_GAP, line, f"U={first} pu={prev}")
                    continue
            elif self._gap_key == key:
                reason = RowReject.SEQUENCE_GAP if not snap else RowReject.OUT_OF_ORDER
                stats.reject(reason, line, "rest of a rejected message")
                continue
            if self._snap is not None and (not snap or self._snap["key"] != key):
                # a diff, or another snapshot, ends it; only a row that passed every check
                # does: a rejected one among its levels must not cut it in two (the second
                # part, a snapshot of its own, would replace the book with half of it)
                yield from self._flush_snapshot()
            if snap:
                if self._snap is None:
                    yield from self._flush_pending()
                    self._snap = {
                        "key": key,
                        "levels": 0,
                        "session": ses,
                        "bids": {},
                        "asks": {},
                        "ts_event_ns": ts,
                        "ts_recv_ns": recv,
                        "symbol": sym,
                        "update_id": final,
                        "line": line,
                        "end": line,
                    }
                book = self._snap["bids"] if side == 1 else self._snap["asks"]
                if ticks in book:  # one level per price: a repeat is no second level
                    stats.reject(RowReject.MALFORMED, line, f"snapshot repeats price {px}")
                    continue
                self._snap["levels"] += 1
                self._snap["end"] = line
                book[ticks] = lots
                continue
            pending = self._pending
            if pending is not None:  # the previous level: last of its message unless key matches
                stats.deliver()
                delta = pending[2]
                yield (
                    pending[1],
                    delta if pending[0] != key else replace(delta, last_in_batch=False),
                )
            self._pending = (
                key,
                ses,
                BookDelta(
                    ts_event_ns=ts,
                    ts_recv_ns=recv,
                    symbol=sym,
                    side=_BID if side == 1 else _ASK,
                    price_ticks=ticks,
                    qty_lots=lots,
                    first_update_id=first,
                    final_update_id=final,
                    prev_final_update_id=prev,
                ),
            )
