"""Typed-event streams on the bundled sample and on deliberately corrupted copies of it."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import polars as pl
import pytest

from sapphire.data.hftbacktest import load_depth_frame, stream_hftbacktest
from sapphire.data.instruments import with_ticks
from sapphire.data.registry import stream_events
from sapphire.data.sample import sample_instrument, sample_paths
from sapphire.data.validation import DataFileError, RowReject
from sapphire.model.events import BookDelta, BookSnapshot, Quote, Side, Trade


def _lines(path: Path, n: int | None = None) -> list[str]:
    text = gzip.decompress(path.read_bytes()).decode().splitlines()
    return text if n is None else text[:n]


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_sample_rebuilds_book_matching_bbo() -> None:
    """Binance sync rule on the sample: rebuilt top of book equals the bookTicker."""
    paths, inst = sample_paths(), sample_instrument()
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    last_id = last_u = 0
    batches = 0
    for event in stream_events(paths.depth, inst):
        if isinstance(event, BookSnapshot):
            bids, asks, last_id = dict(event.bids), dict(event.asks), event.update_id
            assert len(event.bids) == len(event.asks) == 1000
        elif isinstance(event, BookDelta) and last_id and event.final_update_id > last_id:
            book = bids if event.side is Side.BUY else asks
            if event.qty_lots:
                book[event.price_ticks] = event.qty_lots
            else:
                book.pop(event.price_ticks, None)
            last_u = event.final_update_id
            batches += event.last_in_batch
    assert batches > 100 and last_u > last_id > 0
    quotes = [q for q in stream_events(paths.bbo, inst) if isinstance(q, Quote)]
    ref = max((q for q in quotes if q.update_id <= last_u), key=lambda q: q.update_id)
    assert (max(bids), min(asks)) == (ref.bid_ticks, ref.ask_ticks)


def test_depth_frame_ticks_are_numpy_ready() -> None:
    frame = with_ticks(load_depth_frame(sample_paths().depth), sample_instrument())
    assert frame.schema["price_ticks"] == pl.Int64 and frame.schema["qty_lots"] == pl.Int64
    assert frame.schema["side"] == pl.Int8 and frame.schema["is_snapshot"] == pl.Boolean
    assert frame["is_snapshot"].sum() == 2000
    assert frame["price_ticks"].null_count() == 0
    assert (frame["price_ticks"].to_numpy() * 0.1 - frame["price"].to_numpy()).max() < 1e-6


def test_last_in_batch_marks_message_ends() -> None:
    stream = stream_events(sample_paths().depth, sample_instrument())
    deltas = [e for e in stream if isinstance(e, BookDelta)]
    frame = load_depth_frame(sample_paths().depth).filter(~pl.col("is_snapshot"))
    messages = frame.select("ts_recv_ns", "final_update_id").unique().height
    assert sum(d.last_in_batch for d in deltas) == messages
    for a, b in itertools.pairwise(deltas):
        same = (a.ts_recv_ns, a.final_update_id) == (b.ts_recv_ns, b.final_update_id)
        assert a.last_in_batch is not same
    assert deltas[-1].last_in_batch


def test_corrupted_trades_are_rejected_with_reasons(tmp_path: Path) -> None:
    lines = _lines(sample_paths().trades, 40)
    cols = lines[5].split(",")

    def mutate(i: int, **changes: str) -> None:
        names = lines[0].split(",")
        row = lines[i].split(",")
        for key, value in changes.items():
            row[names.index(key)] = value
        lines[i] = ",".join(row)

    mutate(3, price="abc")
    mutate(4, price="nan")
    mutate(6, price="-5")
    mutate(7, qty="0")
    mutate(8, qty="-1")
    mutate(9, local_ts_ns="1")
    lines[10] = "garbage,line"
    lines.insert(12, lines[11])  # the same trade twice
    lines.insert(13, ",".join(cols[:3]))
    path = _write(tmp_path, "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz", lines)
    stream = stream_hftbacktest(path, sample_instrument())
    trades = list(stream)
    stats = stream.stats
    assert stats.balanced()
    assert stats.counts == {
        RowReject.MALFORMED: 3,
        RowReject.NON_FINITE: 1,
        RowReject.NON_POSITIVE_PRICE: 1,
        RowReject.ZERO_QTY: 1,
        RowReject.NEGATIVE_QTY: 1,
        RowReject.OUT_OF_ORDER: 1,
        RowReject.DUPLICATE_TRADE_ID: 1,
    }
    assert len(trades) == stats.rows_out == len(lines) - 1 - 9
    assert all(isinstance(t, Trade) and t.qty_lots > 0 for t in trades)
    assert any(line == 4 for line, _, _ in stats.examples)  # 1-based line of "abc"


def test_crossed_bbo_and_depth_gap(tmp_path: Path) -> None:
    bbo = _lines(sample_paths().bbo, 20)
    row = bbo[5].split(",")
    row[5], row[7] = row[7], row[5]  # bid_px <-> ask_px
    bbo[5] = ",".join(row)
    stream = stream_hftbacktest(
        _write(tmp_path, "hftbacktest_binance-usdm_BTCUSDT_bbo.csv.gz", bbo), sample_instrument()
    )
    assert len(list(stream)) == 18
    assert stream.stats.counts == {RowReject.CROSSED_BOOK: 1}

    depth = _lines(sample_paths().depth, 6000)
    names = depth[0].split(",")
    rows = [r.split(",") for r in depth[1:]]
    diff_u = sorted({r[names.index("final_update_id")] for r in rows if r[4] == "0"}, key=int)
    victim = diff_u[len(diff_u) // 2]
    n_victim = 0
    for r in rows:
        if r[names.index("final_update_id")] == victim:
            r[names.index("prev_final_update_id")] = "1"
            n_victim += 1
    path = _write(
        tmp_path,
        "hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz",
        [depth[0], *(",".join(r) for r in rows)],
    )
    stream = stream_hftbacktest(path, sample_instrument())
    events = list(stream)
    assert stream.stats.counts == {RowReject.SEQUENCE_GAP: n_victim}
    assert stream.stats.balanced() and len(events) == stream.stats.events_out


def test_missing_and_garbage_files_raise_data_file_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError):
        stream_events(tmp_path / "nope.csv.gz")
    weird = tmp_path / "mystery.bin"
    weird.write_bytes(b"\x00\x01")
    with pytest.raises(DataFileError):
        stream_events(weird)


def test_instrument_mapping_and_merge_events() -> None:
    from sapphire.data.registry import open_stream
    from sapphire.data.replay import merge_events
    from sapphire.data.sample import event_files, instrument_file

    inst = sample_instrument()
    assert instrument_file() == sample_paths().instrument
    streams = [open_stream(p, {inst.symbol: inst}) for p in event_files()]
    events = list(merge_events(streams, order_by="ts_recv_ns"))
    assert len(events) == sum(s.stats.events_out for s in streams) > 100_000
    assert all(s.stats.rejected == 0 for s in streams)
    other = stream_events(sample_paths().trades, {"ETHUSDT": inst})
    assert list(other) == []
    assert other.stats.counts == {RowReject.UNKNOWN_SYMBOL: other.stats.rows_in}


def test_timestamps_and_prices_beyond_int64_are_rejected_not_wrapped(tmp_path: Path) -> None:
    # a millisecond time of 99999999999999 is 1e20 ns: polars wraps the product around, so
    # it was delivered at a made-up time; a price of 1e300 became a 303-digit tick count
    lines = _lines(sample_paths().trades, 20)
    names = lines[0].split(",")

    def mutate(i: int, **changes: str) -> None:
        row = lines[i].split(",")
        for key, value in changes.items():
            row[names.index(key)] = value
        lines[i] = ",".join(row)

    mutate(3, trade_ts_ms="99999999999999", event_ts_ms="99999999999999")
    mutate(5, price="1e300")
    path = _write(tmp_path, "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz", lines)
    stream = stream_hftbacktest(path, sample_instrument())
    trades = list(stream)
    stats = stream.stats
    assert stats.balanced() and stats.rows_out == len(lines) - 1 - 2
    assert sum(stats.counts.values()) == 2
    assert all(0 < t.ts_event_ns < 2**62 and 0 < t.price_ticks < 2**62 for t in trades)
