"""Readers that turn recorded files into the backtests' integer-tick frames and typed events.

OHLCV: files ``sapphire.data`` recognises (freqtrade, basana, nautilus bar CSVs, Hyperliquid
candle snapshots, cryptofeed candles) are read by its loaders, and a file of theirs holding no
bars (funding rates, trades) is named as such; any other CSV with
``timestamp_ms``/``datetime``/``timestamp`` and OHLCV columns by the column sniffing below.
Either way prices reach :func:`tick_frame` as decimal strings: ``sapphire.data`` parses to
Float64, and polars writes a float back as its shortest round-trip decimal (what ``repr``
gives), which is the recorded string for every value of up to 15 significant digits, so the
exact Decimal division to ticks and lots is kept. (Rounding ``price / tick`` floats instead
moved 5 of the BTC-PERP file's USD volumes by one lot.)

Recorded tick data (hftbacktest BBO/trades/depth and the rest) is read by ``sapphire.data``,
the one loader per format; :func:`session_events` only picks one session out of it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import polars as pl

from sapphire.data import replay
from sapphire.data.registry import detect, has_recorder_clock, load_frames, open_stream
from sapphire.data.schemas import FrameKind, scaled_ns
from sapphire.data.validation import DataFileError
from sapphire.model.events import AnyMarketEvent, Bar
from sapphire.model.instrument import Instrument, infer_increment
from sapphire.model.times import utc_text


class DataError(ValueError):
    """A data file that cannot be read as the expected layout."""


_PRICES = ("open", "high", "low", "close")


def _read_strings(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        return pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _time_ns(raw: pl.DataFrame, path: Path) -> pl.Expr:
    if "timestamp_ms" in raw.columns:
        # null past Int64 ns (a time in µs or ns): polars' ``*`` wraps silently
        return scaled_ns(pl.col("timestamp_ms").cast(pl.Float64).cast(pl.Int64), 1_000_000)
    for name in ("datetime", "timestamp"):
        if name in raw.columns:
            return (
                pl.col(name)
                .str.to_datetime(time_unit="ns", time_zone="UTC")
                .dt.epoch(time_unit="ns")
            )
    raise DataError(f"{path}: no timestamp_ms/datetime/timestamp column in {raw.columns}")


def read_ohlcv(path: Path | str) -> pl.DataFrame:
    """``ts_event_ns, interval_ns`` (Int64) and the OHLCV columns as decimal strings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        fmt: str | None = detect(path).name
    except DataFileError:
        fmt = None  # no format of ``sapphire.data``: a CSV whose columns say what they are
    frame = _sniffed_bars(path) if fmt is None else _registry_bars(path, fmt)
    _check_bars(frame, path)
    frame = frame.sort("ts_event_ns").unique("ts_event_ns", keep="first", maintain_order=True)
    if frame.height < 2:
        raise DataError(f"{path}: fewer than two bars")
    interval = int(frame["ts_event_ns"].diff().drop_nulls().mode().min())  # type: ignore[arg-type]
    # the file, for tick_frame's errors (it is handed this frame, or its head, not the path)
    return frame.with_columns(
        pl.lit(interval, pl.Int64).alias("interval_ns"), pl.lit(str(path)).alias(SOURCE)
    )


SOURCE = "_source"
"""The column of :func:`read_ohlcv`'s frame naming its file."""
SYMBOL = "symbol"
"""The column of :func:`read_ohlcv`'s frame with the symbol its file's rows name (a
Hyperliquid candleSnapshot says ``kPEPE`` in each row, not in its name); "" where none."""


def frame_symbol(frame: pl.DataFrame) -> str:
    """The one symbol the rows of :func:`read_ohlcv`'s frame name; "" for none or several."""
    if SYMBOL not in frame.columns:
        return ""
    symbols = frame[SYMBOL].drop_nulls().unique().to_list()
    return str(symbols[0]) if len(symbols) == 1 else ""


def _check_bars(frame: pl.DataFrame, path: Path) -> None:
    """Bars a backtest cannot trade on are the file's error, named with the first of them:
    a price that is no positive finite number, a close or open outside the bar's range, a
    negative volume, a bar earlier than the one before it, one time given twice with other
    values. (A close of -1 was traded on, and a repeated time kept its first bar silently.)"""
    try:
        num = frame.select(
            "ts_event_ns", *[pl.col(c).cast(pl.Float64) for c in (*_PRICES, "volume")]
        )
    except pl.exceptions.PolarsError:
        return  # not numbers at all: tick_frame says so
    o, h, lo, c, v = (pl.col(name) for name in (*_PRICES, "volume"))
    finite = pl.all_horizontal([x.is_finite() for x in (o, h, lo, c, v)])
    checks = {
        "a price or volume that is not a finite number": ~finite,
        "a non-positive price": finite & (pl.min_horizontal(o, h, lo, c) <= 0),
        "an open or close outside the bar's low-high range": finite
        & ((lo > pl.min_horizontal(o, c)) | (h < pl.max_horizontal(o, c))),
        "a negative volume": finite & (v < 0),
    }
    for what, bad in checks.items():
        found = num.filter(bad)
        if found.height:
            first = utc_text(int(found["ts_event_ns"][0]))
            raise DataError(f"{path}: {found.height} bars with {what}, the first at {first}")
    back = frame.filter(pl.col("ts_event_ns").diff() < 0)
    if back.height:
        # sorted silently, a file whose rows were shuffled ran as if it were whole
        first = utc_text(int(back["ts_event_ns"][0]))
        raise DataError(
            f"{path}: {back.height} bars earlier than the bar before them (a bar file is in "
            f"time order), the first at {first}"
        )
    distinct = frame.unique(keep="first").group_by("ts_event_ns").len().filter(pl.col("len") > 1)
    if distinct.height:
        first = utc_text(int(distinct["ts_event_ns"].min()))  # type: ignore[arg-type]
        raise DataError(
            f"{path}: {distinct.height} bar times given twice with other values, the first "
            f"at {first}"
        )


def _registry_bars(path: Path, fmt: str) -> pl.DataFrame:
    """The bars of a file ``sapphire.data`` reads. A file of another kind (a funding-rate
    file, trades, depth) is named as such: a freqtrade funding file, read as candles, failed
    on "91 bars with a non-positive price" (its rate is in ``open``, the rest 0)."""
    try:
        frames = load_frames(path)
    except DataFileError as exc:
        raise DataError(str(exc)) from exc
    bars = frames.get(FrameKind.BARS)
    if bars is None:
        held = ", ".join(sorted(kind.value for kind in frames)) or "no rows"
        raise DataError(
            f"{path}: a {fmt} file ({held}), not OHLCV bars: a bar backtest reads candles "
            "(freqtrade, basana, nautilus, Hyperliquid candleSnapshot, cryptofeed candles, or "
            "a CSV with a time and open/high/low/close/volume columns)"
        )
    unreadable = bars.filter(
        pl.any_horizontal(pl.col("ts_event_ns", *_PRICES, "volume").is_null())
    ).height
    if unreadable:
        raise DataError(f"{path}: {unreadable} rows with unreadable timestamps or prices")
    return bars.select(
        "ts_event_ns", *[pl.col(c).cast(pl.String) for c in (*_PRICES, "volume")], SYMBOL
    )


def _sniffed_bars(path: Path) -> pl.DataFrame:
    raw = _read_strings(path)
    missing = [c for c in (*_PRICES, "volume") if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    try:
        frame = raw.select(_time_ns(raw, path).alias("ts_event_ns"), *_PRICES, "volume")
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: unreadable timestamps: {exc}") from exc
    unreadable = frame["ts_event_ns"].null_count()
    if unreadable:
        raise DataError(f"{path}: {unreadable} rows with unreadable timestamps (out of range)")
    return frame


def instrument_for(raw: pl.DataFrame, symbol: str, fee_bps: str = "0") -> Instrument:
    """An instrument whose tick and lot represent every price and volume of ``raw``: all of
    them, each distinct value once (the first 20,000 of open+high+low+close were the opens
    alone, and a finer close further on was rounded to their tick)."""
    prices = pl.concat([raw[c] for c in _PRICES]).drop_nulls().unique().to_list()
    volumes = raw["volume"].drop_nulls().unique().to_list()
    return Instrument(
        symbol=symbol,
        tick_size=_capped(infer_increment(prices)),
        lot_size=_capped(infer_increment(volumes)),
        maker_fee_bps=fee_bps,
        taker_fee_bps=fee_bps,
    )


def _capped(increment: str, finest: str = "0.00000001") -> str:
    # Files converted through floats carry artefacts (0.09946999000000001); no venue quotes
    # finer than 1e-8, so values are rounded to it.
    return finest if Decimal(increment) < Decimal(finest) else increment


def tick_frame(raw: pl.DataFrame, inst: Instrument) -> pl.DataFrame:
    """Integer ``*_ticks``/``volume_lots`` plus float prices ``= ticks * tick`` (what both
    engines and the strategies see, so they compute on identical floats)."""
    tick, lot = inst.tick_float, inst.lot_float

    def units(col: str, unit: str) -> pl.Expr:
        # Decimal division is exact; floats would turn 0.07 / 0.01 into 7.000000000000001.
        return (
            (pl.col(col).cast(pl.Decimal(38, 18)) / pl.lit(unit).cast(pl.Decimal(38, 18)))
            .round(0)
            .cast(pl.Int64)
        )

    try:
        frame = raw.select(
            "ts_event_ns",
            "interval_ns",
            *[units(c, inst.tick_size).alias(f"{c}_ticks") for c in _PRICES],
            units("volume", inst.lot_size).alias("volume_lots"),
        )
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"non-numeric or out-of-range OHLCV values: {exc}") from exc
    _check_tick(raw, inst)
    bad = frame.filter(
        (pl.col("low_ticks") <= 0) | (pl.col("high_ticks") < pl.col("low_ticks"))
    ).height
    if bad:
        raise DataError(f"{bad} bars with non-positive or inverted prices")
    return frame.with_columns(
        *[(pl.col(f"{c}_ticks").cast(pl.Float64) * tick).alias(c) for c in _PRICES],
        (pl.col("volume_lots").cast(pl.Float64) * lot).alias("volume"),
    )


# a price this close to a whole number of ticks (relative) is on the grid: a float's noise
# (0.09946999000000001 at 1e-8), not a price the tick cannot show
_TICK_TOLERANCE = 4 * sys.float_info.epsilon


def _check_tick(raw: pl.DataFrame, inst: Instrument) -> None:
    """Prices that are no whole number of ``inst``'s tick are the file's error, named with
    the first of them: rounded to the tick, a backtest traded prices the data never had
    (a tick of 0.3 on 0.1-tick data moved every price silently)."""
    tick = pl.lit(inst.tick_size).cast(pl.Decimal(38, 18))
    checks = []
    for col in _PRICES:
        q = pl.col(col).cast(pl.Decimal(38, 18)) / tick
        off = (q - q.round(0)).abs().cast(pl.Float64)
        checks.append((off > q.abs().cast(pl.Float64) * _TICK_TOLERANCE).alias(col))
    flags = raw.select(checks)
    bad = flags.select(pl.any_horizontal(pl.all()).alias("bad"))["bad"]
    count = int(bad.sum())
    if not count:
        return
    first = int(bad.arg_true()[0])
    col = next(c for c in _PRICES if flags[c][first])
    source = raw[SOURCE][0] if SOURCE in raw.columns else "the data"
    when = utc_text(int(raw["ts_event_ns"][first]))
    raise DataError(
        f"{source}: {count} bars with prices that are no whole number of the tick_size "
        f"{inst.tick_size} (the first: {col} {raw[col][first]} at {when}); a backtest "
        "would trade rounded prices the data never had"
    )


def bar_events(frame: pl.DataFrame, symbol: str) -> Iterator[Bar]:
    cols = ("ts_event_ns", "interval_ns", "open_ticks", "high_ticks", "low_ticks", "close_ticks")
    for ts, interval, o, h, low, c, v in frame.select(*cols, "volume_lots").iter_rows():
        yield Bar(
            ts_event_ns=ts + interval,  # the frame dates a bar by its open; known at its close
            symbol=symbol,
            interval_ns=interval,
            open_ticks=o,
            high_ticks=h,
            low_ticks=low,
            close_ticks=c,
            volume_lots=v,
        )


def session_events(
    paths: list[Path | str], inst: Instrument, session: str, limit: int | None = None
) -> list[AnyMarketEvent]:
    """The events of one recorded session through the product's loaders (``sapphire.data``:
    exchange time, the venue's sync fields such as Binance's ``pu`` kept, rejects counted),
    merged on exchange time. A session with no events is an error."""
    streams = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"data file not found: {path}")
        try:
            streams.append(open_stream(Path(path), {inst.symbol: inst}).tagged())
        except DataFileError as exc:
            raise DataError(str(exc)) from exc
    fixed = [i for i, path in enumerate(paths) if not has_recorder_clock(path)]
    out: list[AnyMarketEvent] = []
    for item in replay.merge(streams, key="ts_event_ns", fixed=fixed):
        if item.session == session:
            out.append(item.event)
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise DataError(f"no events for session {session!r} in {[str(p) for p in paths]}")
    return out


def hftbacktest_events(
    bbo_path: Path | str,
    trades_path: Path | str,
    inst: Instrument,
    session: str,
    limit: int | None = None,
) -> list[AnyMarketEvent]:
    """Quotes and trades of one hftbacktest session (see :func:`session_events`)."""
    return session_events([bbo_path, trades_path], inst, session, limit)


def hftbacktest_depth_events(
    depth_path: Path | str, inst: Instrument, session: str, until_ns: int | None = None
) -> list[AnyMarketEvent]:
    """The session's snapshot and depth diffs (see :func:`session_events`)."""
    events = session_events([depth_path], inst, session)
    if until_ns is not None:
        events = [e for e in events if e.ts_event_ns <= until_ns]
    return events


def merge_events(*streams: list[AnyMarketEvent]) -> list[AnyMarketEvent]:
    """Merge by ``ts_event_ns``; ties keep the order of ``streams`` (book before quotes)."""
    keyed = [(e.ts_event_ns, k, i, e) for k, s in enumerate(streams) for i, e in enumerate(s)]
    keyed.sort(key=lambda item: (item[0], item[1], item[2]))
    return [e for *_, e in keyed]
