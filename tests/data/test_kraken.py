"""cryptofeed logs of Kraken spot websocket v1 (book-1000 with CRC32 checksums, ticker, trade).

Counts and time ranges are the ones ../shared/data/README.md states for each file.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from sapphire.book.l2 import L2Book
from sapphire.data.cryptofeed_kraken import KrakenHandler, kraken_checksum
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import BREAK_PREV, FrameKind
from sapphire.data.validation import RejectStats, RowReject
from sapphire.model.events import BookDelta, BookSnapshot, Quote, Side, Trade
from tests.data import venue_checks as vc

BOOK = "book/cryptofeed_kraken_spot_ws_book1000_2021-04-17.log.gz"
TICKER = "book/cryptofeed_kraken_spot_ws_ticker_2021-04-17.log.gz"
TRADE = "trades/cryptofeed_kraken_spot_ws_trade_2021-04-17.log.gz"
PAIRS = {
    "WAVES/EUR",
    "XMR/USD",
    "KSM/XBT",
    "GRT/ETH",
    "SC/EUR",
    "ETH/CHF",
    "OCEAN/XBT",
    "OMG/USD",
    "XBT/CHF",
    "ADA/XBT",
}


def _pass(path: Path) -> tuple[KrakenHandler, RejectStats]:
    handler = KrakenHandler()
    return handler, vc.handler_pass(handler, path)


def test_book_counts_and_times_match_readme(shared_data: Path) -> None:
    path = shared_data / BOOK
    assert detect(path).name == "cryptofeed_kraken"
    depth = load_frames(path)[FrameKind.DEPTH]
    messages = depth.select("symbol", "is_snapshot", "final_update_id").unique()
    # README: 10 snapshots, 4,269 updates, 42 events + 2 control lines
    assert messages["is_snapshot"].sum() == 10
    assert (~messages["is_snapshot"]).sum() == 4_269
    assert set(depth["symbol"].unique()) == PAIRS
    assert vc.utc(int(depth["ts_recv_ns"].min())) >= "16:48:52.825"  # type: ignore[arg-type]
    assert vc.utc(int(depth["ts_recv_ns"].max())).startswith("16:49:23.372")  # type: ignore[arg-type]
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    assert stream.stats.ignored == 44
    assert stream.stats.rows_out == depth.height
    assert sum(isinstance(e, BookSnapshot) for e in events) == 10
    assert sum(isinstance(e, BookDelta) and e.last_in_batch for e in events) == 4_269


def test_every_recorded_update_verifies_its_checksum(shared_data: Path) -> None:
    handler, stats = _pass(shared_data / BOOK)
    # README: the Kraken spot checksum matches for all 4,269 book updates.
    assert (handler.checksums_ok, handler.checksum_mismatches, handler.unverified) == (4_269, 0, 0)
    assert handler.mismatch_lines == [] and stats.rejected == 0
    assert handler.trimmed == 0  # no book reached 1,000 levels in 30 s


def test_checksum_function_strips_points_and_leading_zeros() -> None:
    # Kraken's guide: "0.05005" -> "5005", volume "0.00000500" -> "500"; asks then bids.
    asks = [("0.05005", "0.00000500"), ("0.05010", "1.20000000")]
    bids = [("0.05000", "0.00000500"), ("10.04995", "25.00000000")]
    text = "5005500" + "5010120000000" + "5000500" + "1004995" + "2500000000"
    assert kraken_checksum(asks, bids) == zlib.crc32(text.encode())
    assert kraken_checksum(bids, asks) != kraken_checksum(asks, bids)
    # the strings are used as sent: a trailing zero changes the checksum
    assert kraken_checksum([("0.050050", "0.00000500")], []) != kraken_checksum(asks[:1], [])


def _later_updates(lines: list[str], after: int, pair: str) -> tuple[int, int]:
    msgs = levels = 0
    for line in lines[after + 1 :]:
        if line.endswith(f'"book-1000","{pair}"]'):
            msg = json.loads(line.partition(": ")[2])
            msgs += 1
            levels += sum(len(p.get("a", [])) + len(p.get("b", [])) for p in msg[1:-2])
    return msgs, levels


def test_corrupted_update_is_a_checksum_reject_then_gap(shared_data: Path, tmp_path: Path) -> None:
    lines = vc.log_lines(shared_data / BOOK)
    target = next(
        i
        for i, line in enumerate(lines)
        if line.endswith('"book-1000","XMR/USD"]') and '{"b":[["' in line and '"as"' not in line
    )
    stamp, _, body = lines[target].partition(": ")
    msg = json.loads(body)
    level = msg[1]["b"][0]
    level[1] = "7.00000000" if level[1] != "7.00000000" else "8.00000000"  # never sent
    lines[target] = f"{stamp}: {json.dumps(msg, separators=(',', ':'))}"
    bad = vc.write_log(tmp_path, "recording.log.gz", lines)  # neutral name: detected by content
    handler, stats = _pass(bad)
    later_msgs, later_levels = _later_updates(lines, target, "XMR/USD")
    assert later_msgs > 10
    assert handler.checksum_mismatches == 1 and handler.mismatch_lines == [target + 1]
    assert handler.checksums_ok == 4_269 - 1 - later_msgs
    assert stats.counts[RowReject.CHECKSUM_MISMATCH] == len(msg[1]["b"])
    assert stats.counts[RowReject.SEQUENCE_GAP] == later_levels
    stream = stream_events(bad)
    events = list(stream)
    assert stream.format == "cryptofeed_kraken" and stream.stats.balanced()
    later = [
        e
        for e in events
        if isinstance(e, BookDelta)
        and e.symbol == "XMR/USD"
        and e.ts_recv_ns >= float(stamp) * 1e9 - 1_000
    ]
    # nothing of the pair from the mismatch on but one break marker (no source row), which
    # takes a venue's book out of sync there: no later XMR/USD snapshot in this file
    assert [e.prev_final_update_id for e in later] == [BREAK_PREV]
    assert stream.stats.breaks == 1 and stream.stats.rows_in == 11_745
    book = L2Book("XMR/USD")
    for e in events:
        if isinstance(e, BookSnapshot) and e.symbol == "XMR/USD":
            book.apply_snapshot(e)
        elif isinstance(e, BookDelta) and e.symbol == "XMR/USD":
            book.apply_delta(e)
    assert not book.is_synced and book.gaps == 1


def test_shallow_channel_trims_and_emits_deletes(shared_data: Path, tmp_path: Path) -> None:
    """The same messages on a 50-deep channel: levels pushed past 50 are forgotten (as Kraken
    does) and emitted as deletes; the top-10 checksums still verify because no forgotten level
    comes back into the top 10. At depth 25 one does (OMG/USD), and exactly that message is a
    checksum reject: a consumer that trims must resubscribe, the loader reports it."""
    src = vc.log_lines(shared_data / BOOK)
    shallow = [line.replace('"book-1000"', '"book-25"') for line in src]
    handler, stats = _pass(vc.write_log(tmp_path, "shallow.log.gz", shallow))
    assert handler.checksum_mismatches == 1 and stats.counts[RowReject.CHECKSUM_MISMATCH] >= 1
    assert stats.examples[0][2].startswith("OMG/USD: checksum")
    assert set(stats.counts) == {RowReject.CHECKSUM_MISMATCH, RowReject.SEQUENCE_GAP}
    lines = [line.replace('"book-1000"', '"book-50"') for line in src]
    path = vc.write_log(tmp_path, "recording.log.gz", lines)
    handler, stats = _pass(path)
    assert handler.trimmed > 1_000 and stats.rejected == 0
    assert handler.checksums_ok == 4_269

    def within_depth(_: str, plain: vc.Plain, book: L2Book) -> None:
        assert len(plain[0]) <= 50 and len(plain[1]) <= 50
        assert len(book.levels(Side.BUY)) <= 50 and len(book.levels(Side.SELL)) <= 50

    events = list(stream_events(path))
    snapshots = [e for e in events if isinstance(e, BookSnapshot)]
    assert snapshots and all(len(e.bids) <= 50 and len(e.asks) <= 50 for e in snapshots)
    # a level trimmed here may still be deleted by Kraken later: absent deletes are expected
    assert vc.check_rebuilt_books(events, absent_deletes=True, after_message=within_depth) == 4_269


def test_rebuilt_books_never_cross(shared_data: Path) -> None:
    """L2Book and a plain dict agree and never cross after any message; every delete names a
    level the book holds; every delta chains onto the previous message of its pair."""
    assert vc.check_rebuilt_books(stream_events(shared_data / BOOK), two_sided=True) == 4_269


def test_ticker_and_trade_logs(shared_data: Path) -> None:
    stream = stream_events(shared_data / TICKER)
    assert detect(shared_data / TICKER).name == "cryptofeed_kraken"
    quotes = [e for e in stream if isinstance(e, Quote)]
    assert len(quotes) == 18 and stream.stats.ignored == 42 + 2  # README: 18 tickers, 42 events
    assert all(q.bid_ticks < q.ask_ticks for q in quotes) and {q.symbol for q in quotes} <= PAIRS
    assert min(vc.utc(q.ts_recv_ns) for q in quotes) >= "16:48:52.845"
    assert max(vc.utc(q.ts_recv_ns) for q in quotes) <= "16:49:23.183"
    stream = stream_events(shared_data / TRADE)
    trades = [e for e in stream if isinstance(e, Trade)]
    # README: 8 trade messages, 10 trades (SC/EUR, XMR/USD), recv 16:48:52.831 -> 16:49:22.660
    assert len(trades) == 10 and len({t.ts_recv_ns for t in trades}) == 8
    assert {t.symbol for t in trades} == {"SC/EUR", "XMR/USD"}
    assert all("16:48:52.831" <= vc.utc(t.ts_recv_ns) <= "16:49:22.660" for t in trades)
    assert all(t.ts_event_ns <= t.ts_recv_ns for t in trades)
    first = trades[0]  # ["354.11000000","0.89594024","1618678142.557535","s","l",""]
    assert first.taker_side is Side.SELL and first.ts_event_ns == 1_618_678_142_557_535_000
    assert stream.stats.balanced() and stream.stats.rejected == 0


def test_venue_detected_by_content(shared_data: Path, tmp_path: Path) -> None:
    lines = vc.log_lines(shared_data / BOOK)
    misnamed = "cryptofeed_binance_usdm_ws_x.log.gz"
    vc.check_detected_by_content(lines, tmp_path, misnamed, "cryptofeed_kraken", "kraken")


def test_log_without_market_data_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    events_only = [line for line in vc.log_lines(shared_data / TRADE) if '"event"' in line]
    path = vc.write_log(
        tmp_path, Path(TRADE).name, vc.log_lines(shared_data / TRADE)[:1] + events_only
    )
    vc.check_no_market_data(path)


@pytest.mark.parametrize("rel", [BOOK, TRADE])
def test_truncated_file_counts_a_reject(shared_data: Path, tmp_path: Path, rel: str) -> None:
    vc.check_truncations(shared_data / rel, tmp_path, 3 / 4, last_line_cut=20)


SEEDS = [
    (Path(BOOK).name, vc.seed_lines(BOOK, lambda lines: lines[:40])),
    (Path(TRADE).name, vc.seed_lines(TRADE, lambda lines: lines[:24])),
]


test_mutated_kraken_logs_never_raise, test_random_bytes_in_kraken_logs_never_raise = vc.fuzz_tests(
    SEEDS, [Path(BOOK).name]
)


@pytest.mark.parametrize(("rel", "kind"), [(BOOK, "depth"), (TICKER, "bbo"), (TRADE, "trades")])
def test_inspect_kraken_logs(
    shared_data: Path, rel: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    vc.check_inspect(shared_data / rel, "cryptofeed_kraken", (kind,), capsys)
