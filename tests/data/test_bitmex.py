"""cryptofeed log of the BitMEX realtime websocket (orderBookL2, quote, trade).

Counts and time ranges are the ones ../shared/data/README.md states for the file.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.book.l2 import DeltaResult, L2Book
from sapphire.cli import main
from sapphire.data.cryptofeed import sniff_venue
from sapphire.data.cryptofeed_bitmex import iso_ns
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError, RowReject
from sapphire.model.events import BookDelta, BookSnapshot, Quote, Side, Trade

BITMEX = "book/cryptofeed_bitmex_ws_2021-07-22.log.gz"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%H:%M:%S.%f")


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def _write(tmp: Path, name: str, lines: list[str]) -> Path:
    path = tmp / name
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_counts_and_times_match_readme(shared_data: Path) -> None:
    path = shared_data / BITMEX
    assert detect(path).name == "cryptofeed_bitmex"
    frames = load_frames(path)
    depth = frames[FrameKind.DEPTH]
    messages = depth.select("symbol", "is_snapshot", "final_update_id").unique()
    # README: book partial 10, insert 445, update 1,090, delete 434 (one symbol per message)
    assert messages["is_snapshot"].sum() == 10
    assert (~messages["is_snapshot"]).sum() == 445 + 1_090 + 434
    xbt = depth.filter(pl.col("is_snapshot") & (pl.col("symbol") == "XBTUSD"))
    assert xbt.height == 9_346
    assert frames[FrameKind.BBO].height == 436  # 93 quote messages
    assert frames[FrameKind.BBO]["ts_recv_ns"].n_unique() == 93
    assert frames[FrameKind.TRADES].height == 27  # 17 trade messages
    assert frames[FrameKind.TRADES]["ts_recv_ns"].n_unique() == 17
    recv = pl.concat([f.select("ts_recv_ns") for f in frames.values()])["ts_recv_ns"]
    assert _utc(int(recv.min())) >= "22:36:07.875"  # type: ignore[arg-type]
    assert _utc(int(recv.max())).startswith("22:36:38.468")  # type: ignore[arg-type]
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    assert stream.stats.ignored == 4 + 31  # control lines, acks and info
    assert sum(isinstance(e, BookSnapshot) for e in events) == 10
    assert sum(isinstance(e, BookDelta) and e.last_in_batch for e in events) == 1_969
    assert sum(isinstance(e, Quote) for e in events) == 436


def test_rebuilt_books_never_cross(shared_data: Path) -> None:
    """L2Book and a plain dict agree and never cross after any message; every update and
    delete hits a held level (README: every update/delete hits a known id)."""
    books: dict[str, L2Book] = {}
    plain: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    checked = 0
    for event in stream_events(shared_data / BITMEX):
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
                assert not book.is_crossed()
                if bids and asks:
                    assert max(bids) < min(asks)
                    assert book.best_bid() == (max(bids), bids[max(bids)])
                    assert book.best_ask() == (min(asks), asks[min(asks)])
                checked += 1
    assert checked == 1_969
    assert all(b.gaps == b.stale == b.rejected == 0 for b in books.values())


def test_sizes_stay_contracts(shared_data: Path) -> None:
    """XBTUSD is inverse: size is a count of 1-USD contracts (foreignNotional = size, value in
    satoshi ~ size * 1e8 / price), not BTC."""
    raw = [
        row
        for line in _lines(shared_data / BITMEX)
        if '"table":"trade"' in line
        for row in json.loads(line.partition(": ")[2])["data"]
        if row["symbol"] == "XBTUSD"
    ]
    assert raw
    trades = load_frames(shared_data / BITMEX)[FrameKind.TRADES].filter(
        pl.col("symbol") == "XBTUSD"
    )
    assert trades["qty"].to_list() == [float(r["size"]) for r in raw]
    for row, qty, price in zip(raw, trades["qty"], trades["price"], strict=True):
        assert row["foreignNotional"] == qty
        # one contract's value is rounded to whole satoshi: at most 1 satoshi off per contract
        assert abs(row["grossValue"] - qty * 1e8 / price) <= qty
    inst = stream_events(shared_data / BITMEX).instrument
    assert isinstance(inst, dict) and inst["XBTUSD"].venue == "BITMEX"
    assert inst["XBTUSD"].lot_size == "1"


def test_iso_timestamps_are_exact() -> None:
    assert iso_ns("2021-07-22T22:36:10.014Z") == 1_626_993_370_014_000_000
    with pytest.raises(ValueError):
        iso_ns("2021-07-22T22:36:10.014")  # no zone: ambiguous


def test_unknown_id_is_a_gap_until_next_partial(shared_data: Path, tmp_path: Path) -> None:
    lines = _lines(shared_data / BITMEX)
    target = next(
        i
        for i, line in enumerate(lines)
        if '"action":"update"' in line and '"symbol":"XBTUSD"' in line
    )
    lines[target] = lines[target].replace('"id":', '"id":9', 1)  # an id the book never had
    path = _write(tmp_path, "recording.log.gz", lines)  # neutral name: detected by content
    assert detect(path).name == "cryptofeed_bitmex"
    stream = stream_events(path)
    list(stream)
    stats = stream.stats
    assert stats.balanced() and set(stats.counts) == {RowReject.SEQUENCE_GAP}
    assert "XBTUSD: update of unknown id 9" in stats.examples[0][2]
    # no later XBTUSD partial in this file: every later XBTUSD book row waits for one
    later = [
        json.loads(line.partition(": ")[2])
        for line in lines[target:]
        if '"table":"orderBookL2"' in line and '"symbol":"XBTUSD"' in line
    ]
    assert len(later) > 100 and all(m["action"] != "partial" for m in later)
    assert stats.counts[RowReject.SEQUENCE_GAP] == sum(len(m["data"]) for m in later)


def test_venue_detected_by_content(shared_data: Path, tmp_path: Path) -> None:
    lines = _lines(shared_data / BITMEX)
    assert detect(_write(tmp_path, "cryptofeed_okx_ws_x.log.gz", lines)).name == "cryptofeed_bitmex"
    no_url = [line for line in lines if not line.startswith("wss://")]
    assert sniff_venue(_write(tmp_path, "cryptofeed_x.log.gz", no_url)) == "bitmex"


def test_log_without_market_data_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    lines = _lines(shared_data / BITMEX)
    head = [line for line in lines if '"success"' in line or '"info"' in line]
    path = _write(tmp_path, Path(BITMEX).name, lines[:1] + head)
    with pytest.raises(DataFileError, match="no market-data"):
        load_frames(path)


def test_truncated_file_counts_a_reject(shared_data: Path, tmp_path: Path) -> None:
    raw = (shared_data / BITMEX).read_bytes()
    cut = tmp_path / Path(BITMEX).name
    cut.write_bytes(raw[: len(raw) * 3 // 4])  # gzip stream ends mid-member
    stream = stream_events(cut)
    assert list(stream) and stream.stats.balanced()
    assert stream.stats.counts[RowReject.MALFORMED] >= 1
    text = gzip.decompress(raw).rstrip(b"\n")
    half = tmp_path / f"half_{Path(BITMEX).name}"
    half.write_bytes(gzip.compress(text[: len(text) - 20]))  # last JSON line cut in two
    stream = stream_events(half)
    list(stream)
    assert stream.stats.balanced() and stream.stats.counts[RowReject.MALFORMED] == 1


def _seed(n: int) -> bytes:
    from tests.conftest import shared_data_dir

    path = shared_data_dir() / BITMEX
    if not path.is_file():
        return b""
    # the head plus a slice of small book/quote/trade messages (the XBTUSD partial is huge)
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    small = [line for line in lines[36:] if len(line) < 600]
    return b"\n".join(lines[:5] + small[:n]) + b"\n"


SEED = _seed(40)


def _consume(payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(BITMEX).name
        path.write_bytes(gzip.compress(payload))
        try:
            stream = stream_events(path)
            list(stream)
        except DataFileError:
            return
        assert stream.stats.balanced()


@FAST
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12))
def test_mutated_bitmex_logs_never_raise(flips: list[tuple[int, int]]) -> None:
    buf = bytearray(SEED)
    for pos, value in flips:
        if buf:
            buf[pos % len(buf)] = value
    _consume(bytes(buf))


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_in_bitmex_logs_never_raise(payload: bytes) -> None:
    _consume(payload)


def test_inspect_bitmex_log(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "inspect", str(shared_data / BITMEX)]) == 0
    out = capsys.readouterr().out
    assert "format:  cryptofeed_bitmex" in out
    assert "[depth]" in out and "[trades]" in out and "[bbo]" in out and "rejected" not in out


def test_trades_are_typed_with_taker_side(shared_data: Path) -> None:
    trades = [e for e in stream_events(shared_data / BITMEX) if isinstance(e, Trade)]
    assert len(trades) == 27 and len({t.trade_id for t in trades}) == 27
    first = next(t for t in trades if t.symbol == "UNIUSDT" and t.taker_side is Side.BUY)
    assert first.ts_event_ns <= first.ts_recv_ns
