"""cryptofeed log of the Kraken Futures websocket (inverse contracts: books, trades, tickers).

Counts and time ranges are the ones ../shared/data/README.md states for the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sapphire.data.cryptofeed_kraken_futures import KrakenFuturesHandler
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError, RejectStats, RowReject
from sapphire.model.events import BookDelta, BookSnapshot, Trade
from tests.data import venue_checks as vc

KF = "book/cryptofeed_kraken-futures_inverse_ws_2021-07-22.log.gz"


def _messages(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line.partition(": ")[2]) for line in lines if not line.startswith("wss://")]


def _handler_pass(path: Path) -> tuple[KrakenFuturesHandler, RejectStats]:
    handler = KrakenFuturesHandler()
    return handler, vc.handler_pass(handler, path)


def test_counts_and_times_match_readme(shared_data: Path) -> None:
    path = shared_data / KF
    assert detect(path).name == "cryptofeed_kraken_futures"
    msgs = _messages(vc.log_lines(path))
    feeds = [m.get("feed") for m in msgs if "event" not in m]
    # README: 4 control, 10 snapshots, 7,014 deltas, 107 ticker_lite, 10 trade_snapshot
    # (1,000 trades), 3 trades, 31 events
    assert len(msgs) - len(feeds) == 31
    assert [feeds.count(f) for f in ("book_snapshot", "book", "ticker_lite", "trade")] == [
        10,
        7_014,
        107,
        3,
    ]
    snaps = [m for m in msgs if m.get("feed") == "book_snapshot"]
    levels = sum(len(m["bids"]) + len(m["asks"]) for m in snaps)
    frames = load_frames(path)
    depth, trades = frames[FrameKind.DEPTH], frames[FrameKind.TRADES]
    assert set(frames) == {FrameKind.DEPTH, FrameKind.TRADES}  # ticker_lite has no sizes
    assert depth.height == levels + 7_014
    assert depth["is_snapshot"].sum() == levels
    # the 10 trade_snapshot messages' 1,000 trades are history before the subscription
    assert trades.height == 3
    assert depth["symbol"].n_unique() == 10
    assert depth["symbol"].str.contains(r"^(PI|FI)_[A-Z]+USD").all()  # inverse perps, futures
    # trade_id is the per-product seq, and every trade is of the recorded window
    bch = trades.filter(trades["symbol"] == "FI_BCHUSD_210730")["trade_id"].to_list()
    assert bch == [1488]
    assert vc.utc(trades["ts_event_ns"].min()) >= "23:02:07.583"
    handler, stats = _handler_pass(path)
    assert stats.ignored == 4 + 31 + 107 + 10
    assert handler.absent_deletes == 0
    recv = [*depth["ts_recv_ns"], *trades["ts_recv_ns"]]
    # README's 23:02:07.583 is the info event; the first market data arrives at .690
    assert vc.utc(min(recv)).startswith("23:02:07.690")
    assert vc.utc(max(recv)).startswith("23:02:38.156")
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    assert sum(isinstance(e, BookSnapshot) for e in events) == 10
    assert sum(isinstance(e, BookDelta) for e in events) == 7_014
    assert sum(isinstance(e, Trade) for e in events) == 3


def test_ticker_lite_matches_the_rebuilt_book(shared_data: Path) -> None:
    """Every ticker arrives after its product's snapshot; all 107 equal the rebuilt best."""
    handler, _ = _handler_pass(shared_data / KF)
    assert handler.ticker_unchecked == 0
    assert (handler.ticker_matches, handler.ticker_mismatches) == (107, 0)


def test_ticker_check_sees_a_wrong_book(shared_data: Path, tmp_path: Path) -> None:
    lines = vc.log_lines(shared_data / KF)
    target = next(i for i, line in enumerate(lines) if '"feed":"ticker_lite","product_id"' in line)
    msg = json.loads(lines[target].partition(": ")[2])
    msg["bid"] = msg["bid"] - 1000
    lines[target] = lines[target].partition(": ")[0] + ": " + json.dumps(msg)
    handler, _ = _handler_pass(vc.write_log(tmp_path, "x.log.gz", lines))
    assert (handler.ticker_matches, handler.ticker_mismatches) == (106, 1)
    assert handler.mismatch_lines == [target + 1]


def test_rebuilt_books_never_cross_and_updates_chain(shared_data: Path) -> None:
    events = list(stream_events(shared_data / KF))
    # one level per Kraken Futures book message: every delta is a complete message
    assert all(e.last_in_batch for e in events if isinstance(e, BookDelta))
    assert vc.check_rebuilt_books(events, absent_deletes=True) == 7_014


def test_seq_gap_is_counted(shared_data: Path, tmp_path: Path) -> None:
    lines = vc.log_lines(shared_data / KF)
    target = next(i for i, line in enumerate(lines) if '"feed":"book","product_id"' in line)
    msg = json.loads(lines[target].partition(": ")[2])
    product, seq = msg["product_id"], msg["seq"]
    del lines[target]  # a lost update: the next one of the product skips a seq
    path = vc.write_log(tmp_path, "recording.log.gz", lines)  # neutral name: detected by content
    stream = stream_events(path)
    list(stream)
    stats = stream.stats
    assert stats.balanced() and set(stats.counts) == {RowReject.SEQUENCE_GAP}
    assert f"{product}: seq {seq + 1} != {seq}" in stats.examples[0][2]
    # no snapshot follows in the file, so every later update of the product is a gap
    later = [
        m
        for m in _messages(lines[target:])
        if m.get("feed") == "book" and m.get("product_id") == product
    ]
    assert stats.counts[RowReject.SEQUENCE_GAP] == len(later) > 1


def test_venue_detected_by_content(shared_data: Path, tmp_path: Path) -> None:
    lines = vc.log_lines(shared_data / KF)
    misnamed = "cryptofeed_kraken_x.log.gz"
    vc.check_detected_by_content(
        lines, tmp_path, misnamed, "cryptofeed_kraken_futures", "kraken_futures"
    )


def test_log_without_market_data_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    lines = vc.log_lines(shared_data / KF)
    path = vc.write_log(tmp_path, Path(KF).name, lines[:10])  # control lines and events only
    vc.check_no_market_data(path, stream=False)
    with pytest.raises(DataFileError, match="no market-data"):
        list(stream_events(path, {}))


def test_truncated_file_counts_a_reject(shared_data: Path, tmp_path: Path) -> None:
    vc.check_truncations(shared_data / KF, tmp_path, 3 / 4, last_line_cut=None)


def _xrp(lines: list[bytes]) -> list[bytes]:
    keep = [line for line in lines if b'"feed":"book_snapshot","product_id":"PI_XRPUSD"' in line]
    keep += [
        line for line in lines if b'"product_id":"PI_XRPUSD"' in line and b"book_s" not in line
    ]
    return lines[:5] + keep[:25]


SEED = vc.seed_lines(KF, _xrp)


(
    test_mutated_kraken_futures_logs_never_raise,
    test_random_bytes_in_kraken_futures_logs_never_raise,
) = vc.fuzz_tests([(Path(KF).name, SEED)])


def test_inspect_kraken_futures_log(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vc.check_inspect(shared_data / KF, "cryptofeed_kraken_futures", ("depth", "trades"), capsys)
