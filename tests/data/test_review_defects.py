"""Damaged input found in review: each is one counted rejection or a one-line error naming
the file, never a traceback, never rows lost or invented without a count."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sapphire.cli import main
from sapphire.data.binance_json import RowBuffer, interval_ns
from sapphire.data.convert import EventBuilder, _units, _units_vector
from sapphire.data.registry import load_frame, stream_events
from sapphire.data.sample import sample_instrument, sample_paths
from sapphire.data.schemas import SCHEMAS, FrameKind
from sapphire.data.stream import Instruments
from sapphire.data.validation import DataFileError, RejectStats, RowReject
from sapphire.model import Instrument
from sapphire.model.events import AnyMarketEvent, Bar, BookDelta, BookSnapshot, Trade

SPOT = Instrument(symbol="BTCUSDT", venue="BINANCE", tick_size="0.01", lot_size="0.00001")
TRADES_H = (
    "session,local_ts_ns,event_ts_ms,trade_ts_ms,trade_id,price,qty,is_buyer_maker,taker_side"
)
T_MS = 1_723_075_200_001  # 2024-08-08: a file's first time before 2009 is refused (wrong unit)
T_NS = T_MS * 1_000_000


def _sample_lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).split(b"\n")


def _trades(n: int = 300) -> list[bytes]:
    """The header and the first ``n`` rows of the bundled sample's trades."""
    return _sample_lines(sample_paths().trades)[: n + 1]


def _write(path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    path.write_bytes(b"\n".join(lines) + end)
    return path


def _read(
    path: Path, instrument: Instruments | None = None
) -> tuple[list[AnyMarketEvent], RejectStats]:
    stream = stream_events(path, instrument)
    events = list(stream)
    assert stream.stats.balanced()
    return events, stream.stats


# -- 1. a stray '"' ----------------------------------------------------------------------
def test_a_stray_quote_costs_its_row_not_the_rest_of_the_file(tmp_path: Path) -> None:
    # the CSV reader took '"' as the start of a quoted field: the rest of the file became
    # one field of row 50 (49 of 300 rows delivered, nothing counted)
    lines = _trades()
    lines[50] = lines[50].replace(b",buy", b',"buy').replace(b",sell", b',"sell')
    assert b'"' in lines[50]
    path = _write(tmp_path / "hftbacktest_binance-usdm_BTCUSDT_trades.csv", lines)
    events, stats = _read(path, sample_instrument())
    assert len(events) == 299
    assert stats.counts == {RowReject.MALFORMED: 1}
    assert stats.examples[0][0] == 51  # its own line


def test_a_stray_quote_in_a_tardis_file(tmp_path: Path, shared_data: Path) -> None:
    # counted as 1 malformed row while the 9,900 rows after it were lost
    name = "nautilus_tardis_binance-futures_trades_BTCUSDT_2020-02-22.csv.gz"
    lines = gzip.decompress((shared_data / "trades" / name).read_bytes()).split(b"\n")
    lines[99] = lines[99].replace(b",buy,", b',"buy,').replace(b",sell,", b',"sell,')
    path = _write(tmp_path / name.removesuffix(".gz"), lines[:-1])
    events, stats = _read(path)
    assert len(events) == 9_998
    assert stats.counts == {RowReject.MALFORMED: 1}


# -- 2. timestamps in the wrong unit -------------------------------------------------------
def _ms_to_us_last_row(tmp_path: Path, shared_data: Path, name: str) -> Path:
    lines = gzip.decompress((shared_data / name).read_bytes()).split(b"\n")[:6]
    stamp, rest = lines[5].split(b",", 1)
    lines[5] = stamp + b"000," + rest  # ms written as µs: ns overflow Int64 (polars wraps)
    return _write(tmp_path / Path(name).name.removesuffix(".gz"), lines)


@pytest.mark.parametrize(
    "name",
    [
        "ohlcv/freqtrade_binance_XRP-ETH_5m_2019-10.csv.gz",
        "trades/freqtrade_binance_XRP-ETH_trades_2019-10.csv.gz",
    ],
)
def test_a_timestamp_past_int64_ns_is_malformed_not_wrapped(
    tmp_path: Path, shared_data: Path, name: str
) -> None:
    events, stats = _read(_ms_to_us_last_row(tmp_path, shared_data, name))
    assert stats.counts == {RowReject.MALFORMED: 1}  # was delivered, at a wrapped time
    assert len(events) == 4
    assert all(1_570_000_000 * 10**9 < e.ts_event_ns < 1_571_000_000 * 10**9 for e in events)


def test_bybit_and_nautilus_times_past_int64_are_malformed(tmp_path: Path) -> None:
    bybit = tmp_path / "BTCUSDT2024-08-08.csv"
    bybit.write_text(
        "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,"
        "foreignNotional\n"
        "1723075200.1234,BTCUSDT,Buy,0.001,61000.5,PlusTick,0a5fe8e1-85d6-5d72-96b4-4ab3f7d1b0d4,"
        "6100050000,0.001,61.0005\n"
        "1723075200623,BTCUSDT,Buy,0.001,61000.5,PlusTick,93b2d7c4-5e6f-5a70-b812-c3d4e5f60718,"
        "6100050000,0.001,61.0005\n"
    )
    events, stats = _read(bybit, SPOT)
    assert len(events) == 1 and stats.counts == {RowReject.MALFORMED: 1}
    depth = tmp_path / "nautilus_binance_depth_2022-11-01.csv"
    depth.write_text(
        "symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu\n"
        "BTCUSDT,1667260800000,1,5,b,snap,20000.01,1.5,0\n"
        "BTCUSDT,1667260800000,1,5,a,snap,20000.02,1.5,0\n"
        "BTCUSDT,1667260800100000,6,7,b,set,20000.01,1.0,5\n"
    )
    events, stats = _read(depth, SPOT)
    assert stats.counts == {RowReject.MALFORMED: 1}
    assert [type(e) for e in events] == [BookSnapshot]


# -- 3. invalid UTF-8 ----------------------------------------------------------------------
def test_an_invalid_byte_costs_its_row_not_the_block(tmp_path: Path) -> None:
    # the reader's whole 4 MiB block failed: every row, before the damage too, was lost as
    # one "truncated" row
    lines = _trades()
    lines[50] = lines[50].replace(b",buy", b",bu\xff").replace(b",sell", b",sel\xff")
    path = tmp_path / "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    events, stats = _read(path, sample_instrument())
    assert len(events) == 299
    assert stats.counts == {RowReject.MALFORMED: 1}
    line, _, detail = stats.examples[0]
    assert line == 51 and "invalid UTF-8" in detail


def test_invalid_utf8_keeps_every_line_number(tmp_path: Path) -> None:
    from sapphire.data.stream import csv_string_chunks

    lines = [b"a,b,c"] + [f"{i},{i},{i}".encode() for i in range(40)]
    lines[7] = b"6,\xe9,6"
    lines[30] = b"29,\xc3,29"
    path = _write(tmp_path / "x.csv", lines)
    stats = RejectStats()
    got = [
        (first + k, row[0])
        for first, frame in csv_string_chunks(path, stats, block_size=64)
        for k, row in enumerate(frame.rows())
    ]
    assert [n for n, _ in got] == [n for n in range(2, 42) if n not in (8, 31)]
    assert all(int(v) == n - 2 for n, v in got)
    assert [line for line, _, _ in stats.examples] == [8, 31]


# -- 4. a depth message with one corrupt side ----------------------------------------------
def test_a_snapshot_with_a_corrupt_side_is_no_book(tmp_path: Path, shared_data: Path) -> None:
    name = "cryptofeed_binance_spot_rest_depth1000_2021-10-12.log.gz"
    lines = gzip.decompress((shared_data / "exchange" / name).read_bytes()).decode().split("\n")
    at = lines[0].index('"asks":')
    bids = len(json.loads(lines[0][lines[0].index("{") :])["bids"])
    lines[0] = lines[0][:at] + '"asks":"oops"}'
    path = tmp_path / name
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    events, stats = _read(path)
    snaps = [e for e in events if isinstance(e, BookSnapshot)]
    assert len(snaps) == 3 and all(s.bids and s.asks for s in snaps)  # was 4: NKNUSDT bids only
    assert stats.counts == {RowReject.MALFORMED: bids + 1}
    assert "asks is not a list" in stats.examples[0][2]


def test_a_depth_update_with_one_bad_level_is_refused_whole() -> None:
    stats = RejectStats()
    buffer = RowBuffer(stats)
    msg = {
        "e": "depthUpdate",
        "E": 1,
        "s": "BTCUSDT",
        "U": 10,
        "u": 12,
        "b": [["61000.1", "1"], ["61000.0", "2"]],
        "a": [["61000.2", "1"], ["oops"]],
    }
    buffer.message(msg, 5, "s", "BTCUSDT", 7)
    assert buffer.count == 0 and buffer.take() == []  # three of four levels were kept
    assert stats.counts == {RowReject.MALFORMED: 4} and stats.balanced()


# -- 5. the grid tolerance -----------------------------------------------------------------
def test_an_off_grid_size_is_off_grid_however_large() -> None:
    # 712,345,678.5 lots: within 1e-6 + 1e-9 * units of a whole number, so rounded
    assert _units(7.123456785, 1e-8) is None
    assert _units(0.123456785, 1e-8) is None
    assert _units(7.12345678, 1e-8) == 712_345_678
    assert _units(0.07, 0.01) == 7  # float noise is still on the grid
    values = np.array([7.123456785, 7.12345678, 0.07, 61602.01])
    ok, units = _units_vector(values, 1e-8)
    assert ok.tolist() == [False, True, True, True]
    assert units.tolist()[1:] == [712_345_678, 7_000_000, 6_160_201_000_000]


def test_an_off_grid_trade_size_is_counted(tmp_path: Path) -> None:
    inst = Instrument(symbol="BTCUSDT", venue="BINANCE", tick_size="0.01", lot_size="0.00000001")
    rows = [
        f"s,{T_NS},{T_MS},{T_MS},1,61602.01,7.12345678,0,buy",
        f"s,{T_NS},{T_MS},{T_MS},2,61602.01,7.123456785,0,buy",
        f"s,{T_NS},{T_MS},{T_MS},3,61602.01,0.123456785,0,buy",
    ]
    path = tmp_path / "hftbacktest_binance-spot_BTCUSDT_trades.csv"
    path.write_text("\n".join([TRADES_H, *rows]) + "\n")
    events, stats = _read(path, inst)
    assert [e.trade_id for e in events if isinstance(e, Trade)] == [1] and len(events) == 1
    assert stats.counts == {RowReject.OFF_GRID: 2}


# -- 6. impossible bars on the system path -------------------------------------------------
def test_a_bar_outside_its_own_range_is_malformed(tmp_path: Path, shared_data: Path) -> None:
    name = "basana_bitstamp_BTC-USD_1m_2020-01-01.csv"
    lines = (shared_data / "ohlcv" / name).read_text().splitlines()
    r = lines[3].split(",")  # datetime,open,high,low,close,volume
    r[2] = str(float(r[3]) - 10)  # high below low
    lines[3] = ",".join(r)
    r = lines[5].split(",")
    r[4] = str(float(r[2]) + 500)  # close above high
    lines[5] = ",".join(r)
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    events, stats = _read(path)
    assert stats.counts == {RowReject.MALFORMED: 2}  # both were traded on
    assert len(events) == 1438
    assert all(
        isinstance(e, Bar) and e.low_ticks <= min(e.open_ticks, e.close_ticks) for e in events
    )


# -- 8. tracebacks -------------------------------------------------------------------------
def test_inspect_shows_rows_without_a_symbol(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "nautilus_tardis_huobi-dm-swap_quotes_BTC-USD_2020-05-01.csv"
    lines = (shared_data / "book" / name).read_text().splitlines()
    lines[2] = lines[2].replace(",BTC-USD,", ",,")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    assert main(["data", "inspect", str(path)]) == 0  # was a TypeError sorting None
    out = capsys.readouterr().out
    assert "symbols: ['BTC-USD'] (+1 rows with none)" in out
    blank = tmp_path / "hftbacktest_binance-usdm_BTCUSDT_trades.csv"
    trades = _trades(100)
    _write(blank, [*trades[:50], b"", *trades[50:]])
    assert main(["data", "inspect", str(blank)]) == 0
    # the blank line is no row of a session: the sessions of the rows that passed
    assert "sessions: ['2024-08-08']\n" in capsys.readouterr().out


def test_a_header_with_spaces_reads_every_row(tmp_path: Path) -> None:
    # the loader checked the stripped names, the CSV reader kept " local_ts_ns": a polars
    # ColumnNotFoundError traceback
    lines = _trades(200)
    lines[0] = lines[0].replace(b",", b", ")
    path = _write(tmp_path / "hftbacktest_binance-usdm_BTCUSDT_trades.csv", lines)
    events, stats = _read(path, sample_instrument())
    assert len(events) == 200 and stats.counts == {}
    frame = load_frame(path)  # the whole-file reader (data inspect, instrument inference)
    assert frame.height == 200 and frame["ts_event_ns"].null_count() == 0


# -- 9. files with no rows -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("hftbacktest_binance-usdm_BTCUSDT_trades.csv", TRADES_H + "\n"),
        ("hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz", TRADES_H + "\n\n"),
        (
            "nautilus_tardis_deribit_incremental_book_L2_BTC-PERPETUAL_2020-04-01.csv",
            "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n",
        ),
        ("usdm_btcusdt_20240808.gz", ""),
        ("usdm_btcusdt_20240809.gz", None),
    ],
)
def test_a_file_with_no_rows_is_an_error_naming_it(
    tmp_path: Path, name: str, content: str | None
) -> None:
    path = tmp_path / name
    if content is None:
        path.write_bytes(b"")  # 0 bytes, not even a gzip header
    elif name.endswith(".gz"):
        path.write_bytes(gzip.compress(content.encode()))
    else:
        path.write_text(content)
    with pytest.raises(DataFileError, match="no rows") as info:
        stream_events(path, sample_instrument())  # was a stream of nothing, rc 0
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_no_csv_reader_is_opened_on_a_header_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyarrow's streaming reader that saw no batch sometimes aborted the interpreter at exit
    import pyarrow.csv as pacsv

    from sapphire.data import stream

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a CSV reader was opened")

    monkeypatch.setattr(pacsv, "open_csv", refuse)
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n \n")
    assert list(stream.csv_string_chunks(path, RejectStats())) == []


# -- 10. one bad kline ---------------------------------------------------------------------
def test_one_bad_kline_costs_one_bar(tmp_path: Path, shared_data: Path) -> None:
    name = "cryptofeed_binance_usdm_ws_2021-07-22.log.gz"
    lines = gzip.decompress((shared_data / "book" / name).read_bytes()).split(b"\n")
    assert b'"i":"1m"' in lines[937]
    lines[937] = lines[937].replace(b'"i":"1m"', b'"i":"99999999999w"')
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    whole, _ = _read(shared_data / "book" / name)
    events, stats = _read(path)
    assert stats.counts == {RowReject.MALFORMED: 1}  # was every bar of the chunk
    assert len(events) == len(whole) - 1
    assert stats.examples[0][0] == 938
    with pytest.raises(ValueError, match="out of range"):
        interval_ns("99999999999w")


def test_a_row_that_will_not_load_costs_only_itself() -> None:
    stats = RejectStats()
    buffer = RowBuffer(stats)
    bar = (1_000, 0, "X", "s", 60_000_000_000, 1.0, 2.0, 0.5, 1.5, 3.0)
    buffer.add(FrameKind.BARS, (*bar, 1))
    buffer.add(FrameKind.BARS, (*bar[:4], 2**70, *bar[5:], 2))  # no Int64
    buffer.add(FrameKind.BARS, (*bar, 3))
    ((kind, frame),) = buffer.take()
    assert kind is FrameKind.BARS and frame["line"].to_list() == [1, 3]
    assert stats.counts == {RowReject.MALFORMED: 1} and stats.examples[0][0] == 2


# -- 11. a file cut at the end of a line's bytes -------------------------------------------
def test_a_last_line_cut_inside_is_truncated_not_a_row(tmp_path: Path) -> None:
    # qty last (columns go by name): "0.125" cut to "0.12" at a clean end of file was read
    # as a valid trade of the wrong size
    head = "session,local_ts_ns,event_ts_ms,trade_ts_ms,trade_id,price,taker_side,qty"
    rows = [f"s,{T_NS},{T_MS},{T_MS},{i},61602.01,buy,0.125" for i in range(1, 301)]
    path = tmp_path / "hftbacktest_binance-spot_BTCUSDT_trades.csv"
    path.write_text("\n".join([head, *rows])[:-1])
    events, stats = _read(path, SPOT)
    assert len(events) == 299 and isinstance(events[-1], Trade)
    assert events[-1].trade_id == 299
    assert stats.counts == {RowReject.TRUNCATED: 1}
    assert stats.examples[0][0] == 301 and "no end of line" in stats.examples[0][2]


def test_a_depth_message_at_a_cut_end_is_not_complete(tmp_path: Path) -> None:
    # row 30,001 holds qty "13.887": cut to "13.88" it was a valid level, and the message
    # held at the end of the file was given as complete (last_in_batch)
    data = b"\n".join(_sample_lines(sample_paths().depth)[:30_001])
    assert data.endswith(b",13.887")
    path = tmp_path / "hftbacktest_binance-usdm_BTCUSDT_depth.csv"
    path.write_bytes(data[:-1])
    events, stats = _read(path, sample_instrument())
    assert stats.counts == {RowReject.TRUNCATED: 1}
    last = events[-1]
    assert isinstance(last, BookDelta) and not last.last_in_batch
    assert all(e.qty_lots != 13_880 for e in events if isinstance(e, BookDelta))
    # a clean end of file (its last line ended) is trusted as a message's end
    path.write_bytes(data + b"\n")
    events, stats = _read(path, sample_instrument())
    last = events[-1]
    assert stats.counts == {} and isinstance(last, BookDelta) and last.last_in_batch


def test_a_snapshot_at_a_cut_end_is_not_a_book(tmp_path: Path) -> None:
    head = (
        "session,local_ts_ns,event_ts_ms,txn_ts_ms,is_snapshot,first_update_id,"
        "final_update_id,prev_final_update_id,side,price,qty"
    )
    row = "s,1723161253000000000,1723161253000,,1,0,100,0,{},{},{}"
    rows = [row.format("bid", "61602.01", "1.5"), row.format("ask", "61602.02", "1.0")]
    path = tmp_path / "hftbacktest_binance-spot_BTCUSDT_depth.csv"
    path.write_text("\n".join([head, *rows, row.format("ask", "61602.03", "2")[:-1]]))
    events, stats = _read(path, SPOT)
    assert events == []  # half a snapshot would replace the whole book
    assert stats.counts == {RowReject.TRUNCATED: 3}


# -- 12. rows of another session; an empty volume ------------------------------------------
def test_rows_of_another_session_spliced_in_are_counted(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "trades" / "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz"
    lines = gzip.decompress(src.read_bytes()).split(b"\n")
    ours = [line for line in lines if line.startswith(b"2024-08-08,")][:3000]
    other = [line for line in lines if line.startswith(b"2024-07-18,")][:20]
    path = _write(
        tmp_path / "hftbacktest_binance-usdm_BTCUSDT_trades.csv",
        [lines[0], *ours[:1500], *other, *ours[1500:]],
    )
    stream = stream_events(path, sample_instrument())
    tagged = list(stream.tagged())
    assert stream.stats.counts == {RowReject.OUT_OF_ORDER: 20}  # traded amid 2024-08-08
    assert len(tagged) == 3000 and {s for s, _ in tagged} == {"2024-08-08"}
    assert stream.stats.examples[0][0] == 1502


def test_an_empty_volume_among_filled_ones_is_counted(tmp_path: Path, shared_data: Path) -> None:
    lines = gzip.decompress(
        (shared_data / "ohlcv/freqtrade_ETH-BTC_5m_2018-01.csv.gz").read_bytes()
    )
    rows = lines.decode().splitlines()[:20]
    rows[4] = rows[4].rsplit(",", 1)[0] + ","
    path = tmp_path / "freqtrade_ETH-BTC_5m_2018-01.csv"
    path.write_text("\n".join(rows) + "\n")
    events, stats = _read(path)
    assert stats.counts == {RowReject.MALFORMED: 1}  # was a bar of volume 0, no count
    assert len(events) == 18


def test_the_builder_still_takes_one_session_per_file() -> None:
    # the splice check leaves files of several sessions one after the other alone
    schema = SCHEMAS[FrameKind.TRADES]
    frame = pl.DataFrame(
        {
            "ts_event_ns": [1, 2, 3, 4],
            "ts_recv_ns": [0, 0, 0, 0],
            "symbol": ["X"] * 4,
            "session": ["a", "a", "b", "b"],
            "price": [1.0] * 4,
            "qty": [1.0] * 4,
            "taker_side": [1] * 4,
            "trade_id": [1, 2, 3, 4],
        },
        schema=schema,
    )
    stats = RejectStats()
    inst = Instrument(symbol="X", tick_size="1", lot_size="1")
    builder = EventBuilder(FrameKind.TRADES, inst, stats)
    assert len(list(builder.feed(frame))) == 4 and stats.counts == {}


# -- times in another unit than the format's ----------------------------------------------
def test_a_file_in_seconds_where_milliseconds_are_expected_is_refused(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # freqtrade candles are in ms; the same file written in seconds read as 1970-01-18 and
    # a run would have marked, funded and stamped fills in 1970 without a word
    lines = gzip.decompress(
        (shared_data / "ohlcv" / "freqtrade_UNITTEST-BTC_1m_2017-11.csv.gz").read_bytes()
    ).splitlines()
    body = [lines[0]] + [
        b",".join([str(int(r.split(b",")[0]) // 1000).encode(), *r.split(b",")[1:]])
        for r in lines[1:]
    ]
    path = tmp_path / "freqtrade_UNITTEST-BTC_1m_2017-11.csv"
    path.write_bytes(b"\n".join(body) + b"\n")
    with pytest.raises(DataFileError, match=r"1970-01-18 11:23:56\.520 UTC is before any crypto"):
        list(stream_events(path))
    assert main(["data", "inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "freqtrade_ohlcv" in err
    # the file as recorded (ms) reads whole
    assert sum(1 for _ in stream_events(shared_data / "ohlcv" / f"{path.name}.gz")) == 13_681
