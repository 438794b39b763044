"""cryptofeed logs of Kraken spot websocket v1 (book-1000 with CRC32 checksums, ticker, trade).

Counts and time ranges are the ones ../shared/data/README.md states for each file.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.book.l2 import DeltaResult, L2Book
from sapphire.cli import main
from sapphire.data.cryptofeed import sniff_venue, venue_line_parser
from sapphire.data.cryptofeed_kraken import KrakenHandler, kraken_checksum
from sapphire.data.hftbacktest_raw import chunked
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError, RejectStats, RowReject
from sapphire.model.events import BookDelta, BookSnapshot, Quote, Side, Trade

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
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%H:%M:%S.%f")


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def _write(tmp: Path, name: str, lines: list[str]) -> Path:
    path = tmp / name
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def _pass(path: Path) -> tuple[KrakenHandler, RejectStats]:
    handler, stats = KrakenHandler(), RejectStats()
    for _ in chunked(path, stats, venue_line_parser(handler, "s")):
        pass
    return handler, stats


def test_book_counts_and_times_match_readme(shared_data: Path) -> None:
    path = shared_data / BOOK
    assert detect(path).name == "cryptofeed_kraken"
    depth = load_frames(path)[FrameKind.DEPTH]
    messages = depth.select("symbol", "is_snapshot", "final_update_id").unique()
    # README: 10 snapshots, 4,269 updates, 42 events + 2 control lines
    assert messages["is_snapshot"].sum() == 10
    assert (~messages["is_snapshot"]).sum() == 4_269
    assert set(depth["symbol"].unique()) == PAIRS
    assert _utc(int(depth["ts_recv_ns"].min())) >= "16:48:52.825"  # type: ignore[arg-type]
    assert _utc(int(depth["ts_recv_ns"].max())).startswith("16:49:23.372")  # type: ignore[arg-type]
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
    lines = _lines(shared_data / BOOK)
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
    bad = _write(tmp_path, "recording.log.gz", lines)  # neutral name: detected by content
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
    assert not any(
        isinstance(e, BookDelta)
        and e.symbol == "XMR/USD"
        and e.ts_recv_ns >= float(stamp) * 1e9 - 1_000
        for e in events
    )


def test_shallow_channel_trims_and_emits_deletes(shared_data: Path, tmp_path: Path) -> None:
    """The same messages on a 50-deep channel: levels pushed past 50 are forgotten (as Kraken
    does) and emitted as deletes; the top-10 checksums still verify because no forgotten level
    comes back into the top 10. At depth 25 one does (OMG/USD), and exactly that message is a
    checksum reject: a consumer that trims must resubscribe, the loader reports it."""
    src = _lines(shared_data / BOOK)
    shallow = [line.replace('"book-1000"', '"book-25"') for line in src]
    handler, stats = _pass(_write(tmp_path, "shallow.log.gz", shallow))
    assert handler.checksum_mismatches == 1 and stats.counts[RowReject.CHECKSUM_MISMATCH] >= 1
    assert stats.examples[0][2].startswith("OMG/USD: checksum")
    assert set(stats.counts) == {RowReject.CHECKSUM_MISMATCH, RowReject.SEQUENCE_GAP}
    lines = [line.replace('"book-1000"', '"book-50"') for line in src]
    path = _write(tmp_path, "recording.log.gz", lines)
    handler, stats = _pass(path)
    assert handler.trimmed > 1_000 and stats.rejected == 0
    assert handler.checksums_ok == 4_269
    books: dict[str, L2Book] = {}
    for event in stream_events(path):
        if isinstance(event, BookSnapshot):
            books[event.symbol] = L2Book(event.symbol)
            books[event.symbol].apply_snapshot(event)
            assert len(event.bids) <= 50 and len(event.asks) <= 50
        elif isinstance(event, BookDelta):
            assert books[event.symbol].apply_delta(event) is DeltaResult.APPLIED
            if event.last_in_batch:
                book = books[event.symbol]
                assert len(book.levels(Side.BUY)) <= 50 and len(book.levels(Side.SELL)) <= 50


def test_rebuilt_books_never_cross(shared_data: Path) -> None:
    """L2Book and a plain dict agree and never cross after any message; every delete names a
    level the book holds; every delta chains onto the previous message of its pair."""
    books: dict[str, L2Book] = {}
    plain: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    checked = 0
    for event in stream_events(shared_data / BOOK):
        if isinstance(event, BookSnapshot):
            books[event.symbol] = L2Book(event.symbol)
            books[event.symbol].apply_snapshot(event)
            plain[event.symbol] = (dict(event.bids), dict(event.asks))
        elif isinstance(event, BookDelta):
            assert books[event.symbol].apply_delta(event) is DeltaResult.APPLIED
            side = plain[event.symbol][0 if event.side is Side.BUY else 1]
            if event.qty_lots:
                side[event.price_ticks] = event.qty_lots
            else:
                assert side.pop(event.price_ticks, None) is not None
            if event.last_in_batch:
                bids, asks = plain[event.symbol]
                book = books[event.symbol]
                assert max(bids) < min(asks)
                assert not book.is_crossed()
                assert book.best_bid() == (max(bids), bids[max(bids)])
                assert book.best_ask() == (min(asks), asks[min(asks)])
                checked += 1
    assert checked == 4_269
    assert all(b.gaps == b.stale == b.rejected == 0 for b in books.values())


def test_ticker_and_trade_logs(shared_data: Path) -> None:
    stream = stream_events(shared_data / TICKER)
    assert detect(shared_data / TICKER).name == "cryptofeed_kraken"
    quotes = [e for e in stream if isinstance(e, Quote)]
    assert len(quotes) == 18 and stream.stats.ignored == 42 + 2  # README: 18 tickers, 42 events
    assert all(q.bid_ticks < q.ask_ticks for q in quotes) and {q.symbol for q in quotes} <= PAIRS
    assert min(_utc(q.ts_recv_ns) for q in quotes) >= "16:48:52.845"
    assert max(_utc(q.ts_recv_ns) for q in quotes) <= "16:49:23.183"
    stream = stream_events(shared_data / TRADE)
    trades = [e for e in stream if isinstance(e, Trade)]
    # README: 8 trade messages, 10 trades (SC/EUR, XMR/USD), recv 16:48:52.831 -> 16:49:22.660
    assert len(trades) == 10 and len({t.ts_recv_ns for t in trades}) == 8
    assert {t.symbol for t in trades} == {"SC/EUR", "XMR/USD"}
    assert all("16:48:52.831" <= _utc(t.ts_recv_ns) <= "16:49:22.660" for t in trades)
    assert all(t.ts_event_ns <= t.ts_recv_ns for t in trades)
    first = trades[0]  # ["354.11000000","0.89594024","1618678142.557535","s","l",""]
    assert first.taker_side is Side.SELL and first.ts_event_ns == 1_618_678_142_557_535_000
    assert stream.stats.balanced() and stream.stats.rejected == 0


def test_venue_detected_by_content(shared_data: Path, tmp_path: Path) -> None:
    lines = _lines(shared_data / BOOK)
    misnamed = _write(tmp_path, "cryptofeed_binance_usdm_ws_x.log.gz", lines)
    assert detect(misnamed).name == "cryptofeed_kraken"
    no_url = [line for line in lines if not line.startswith("wss://")]
    assert sniff_venue(_write(tmp_path, "cryptofeed_x.log.gz", no_url)) == "kraken"


def test_log_without_market_data_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    events_only = [line for line in _lines(shared_data / TRADE) if '"event"' in line]
    path = _write(tmp_path, Path(TRADE).name, _lines(shared_data / TRADE)[:1] + events_only)
    with pytest.raises(DataFileError, match="no market-data"):
        load_frames(path)
    with pytest.raises(DataFileError, match="no market-data"):
        stream_events(path)


@pytest.mark.parametrize("rel", [BOOK, TRADE])
def test_truncated_file_counts_a_reject(shared_data: Path, tmp_path: Path, rel: str) -> None:
    raw = (shared_data / rel).read_bytes()
    cut = tmp_path / Path(rel).name
    cut.write_bytes(raw[: len(raw) * 3 // 4])  # gzip stream ends mid-member
    stream = stream_events(cut)
    assert list(stream) and stream.stats.balanced()
    assert stream.stats.counts[RowReject.MALFORMED] >= 1
    text = gzip.decompress(raw).rstrip(b"\n")
    half = tmp_path / f"half_{Path(rel).name}"
    half.write_bytes(gzip.compress(text[: len(text) - 20]))  # last JSON line cut in two
    stream = stream_events(half)
    list(stream)
    assert stream.stats.balanced() and stream.stats.counts[RowReject.MALFORMED] == 1


def _seed(rel: str, n: int) -> bytes:
    from tests.conftest import shared_data_dir

    path = shared_data_dir() / rel
    if not path.is_file():
        return b""
    return b"\n".join(gzip.decompress(path.read_bytes()).split(b"\n")[:n]) + b"\n"


SEEDS = [(Path(BOOK).name, _seed(BOOK, 40)), (Path(TRADE).name, _seed(TRADE, 24))]


def _consume(name: str, payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(gzip.compress(payload))
        try:
            stream = stream_events(path)
            list(stream)
        except DataFileError:
            return
        assert stream.stats.balanced()


@FAST
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12),
)
def test_mutated_kraken_logs_never_raise(
    seed: tuple[str, bytes], flips: list[tuple[int, int]]
) -> None:
    name, data = seed
    buf = bytearray(data)
    for pos, value in flips:
        if buf:
            buf[pos % len(buf)] = value
    _consume(name, bytes(buf))


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_in_kraken_logs_never_raise(payload: bytes) -> None:
    _consume(Path(BOOK).name, payload)


@pytest.mark.parametrize(("rel", "kind"), [(BOOK, "depth"), (TICKER, "bbo"), (TRADE, "trades")])
def test_inspect_kraken_logs(
    shared_data: Path, rel: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "inspect", str(shared_data / rel)]) == 0
    out = capsys.readouterr().out
    assert "format:  cryptofeed_kraken" in out
    assert f"[{kind}]" in out and "rejected" not in out
