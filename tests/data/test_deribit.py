"""cryptofeed log of the Deribit JSON-RPC websocket (options books and tickers).

Counts and time ranges are the ones ../shared/data/README.md states for the file.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.book.l2 import DeltaResult, L2Book
from sapphire.cli import main
from sapphire.data.cryptofeed import sniff_venue, venue_line_parser
from sapphire.data.cryptofeed_deribit import DeribitHandler
from sapphire.data.hftbacktest_raw import chunked
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError, RejectStats, RowReject
from sapphire.model.events import BookDelta, BookSnapshot, Quote, Side

DERIBIT = "book/cryptofeed_deribit_options_ws_2021-07-22.log.gz"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%H:%M:%S.%f")


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def _write(tmp: Path, name: str, lines: list[str]) -> Path:
    path = tmp / name
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def _books(lines: list[str]) -> list[dict[str, object]]:
    return [
        json.loads(line.partition(": ")[2])["params"]["data"]
        for line in lines
        if '"channel":"book.' in line
    ]


def test_counts_and_times_match_readme(shared_data: Path) -> None:
    path = shared_data / DERIBIT
    assert detect(path).name == "cryptofeed_deribit"
    raw = _books(_lines(path))
    snaps = [b for b in raw if b["type"] == "snapshot"]
    # README: 10 snapshots, 36 changes, 89 tickers, 1 subscribe result, 2 control lines
    assert len(snaps) == 10 and len(raw) - len(snaps) == 36
    empty = sum(1 for b in snaps if not b["bids"] and not b["asks"])  # a book with no orders
    frames = load_frames(path)
    depth = frames[FrameKind.DEPTH]
    messages = depth.select("symbol", "is_snapshot", "final_update_id").unique()
    assert messages["is_snapshot"].sum() == 10 - empty
    assert (~messages["is_snapshot"]).sum() == 36
    handler, stats = DeribitHandler(), RejectStats()
    for _ in chunked(path, stats, venue_line_parser(handler, "s")):
        pass
    assert frames[FrameKind.BBO].height + handler.one_sided == 89
    assert stats.ignored == 2 + 1 + handler.one_sided
    recv = [*depth["ts_recv_ns"], *frames[FrameKind.BBO]["ts_recv_ns"]]
    assert _utc(min(recv)).startswith("22:42:03.804")
    assert _utc(max(recv)).startswith("22:42:34.165")
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    assert sum(isinstance(e, BookDelta) and e.last_in_batch for e in events) == 36
    quotes = [e for e in events if isinstance(e, Quote)]
    assert all(q.bid_ticks < q.ask_ticks for q in quotes)


def test_rebuilt_books_never_cross_and_changes_chain(shared_data: Path) -> None:
    books: dict[str, L2Book] = {}
    plain: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    checked = 0
    for event in stream_events(shared_data / DERIBIT):
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
                assert not books[event.symbol].is_crossed()
                if bids and asks:
                    assert max(bids) < min(asks)
                checked += 1
    assert checked == 36
    assert all(b.gaps == b.stale == b.rejected == 0 for b in books.values())


def test_broken_change_chain_is_a_gap(shared_data: Path, tmp_path: Path) -> None:
    lines = _lines(shared_data / DERIBIT)
    target = next(i for i, line in enumerate(lines) if '"type":"change"' in line)
    name = json.loads(lines[target].partition(": ")[2])["params"]["data"]["instrument_name"]
    lines[target] = lines[target].replace('"prev_change_id":', '"prev_change_id":1', 1)
    path = _write(tmp_path, "recording.log.gz", lines)  # neutral name: detected by content
    stream = stream_events(path)
    list(stream)
    stats = stream.stats
    assert stats.balanced() and set(stats.counts) == {RowReject.SEQUENCE_GAP}
    assert f"{name}: prev_change_id 1" in stats.examples[0][2]
    later = [
        b for b in _books(lines[target:]) if b["instrument_name"] == name and b["type"] == "change"
    ]
    assert stats.counts[RowReject.SEQUENCE_GAP] == sum(
        len(b["bids"]) + len(b["asks"])  # type: ignore[arg-type]
        for b in later
    )


def test_venue_detected_by_content(shared_data: Path, tmp_path: Path) -> None:
    lines = _lines(shared_data / DERIBIT)
    assert detect(_write(tmp_path, "cryptofeed_bybit_x.log.gz", lines)).name == "cryptofeed_deribit"
    no_url = [line for line in lines if not line.startswith("wss://")]
    assert sniff_venue(_write(tmp_path, "cryptofeed_x.log.gz", no_url)) == "deribit"


def test_log_without_market_data_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    lines = _lines(shared_data / DERIBIT)
    path = _write(tmp_path, Path(DERIBIT).name, lines[:3])  # control lines and the RPC result
    with pytest.raises(DataFileError, match="no market-data"):
        load_frames(path)


def test_truncated_file_counts_a_reject(shared_data: Path, tmp_path: Path) -> None:
    raw = (shared_data / DERIBIT).read_bytes()
    cut = tmp_path / Path(DERIBIT).name
    cut.write_bytes(raw[: len(raw) * 3 // 4])
    stream = stream_events(cut)
    assert list(stream) and stream.stats.balanced()
    assert stream.stats.counts[RowReject.MALFORMED] >= 1


def _seed() -> bytes:
    from tests.conftest import shared_data_dir

    path = shared_data_dir() / DERIBIT
    if not path.is_file():
        return b""
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    return b"\n".join(lines[:3] + [line for line in lines[3:] if b'"book.' in line][:20]) + b"\n"


SEED = _seed()


def _consume(payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(DERIBIT).name
        path.write_bytes(gzip.compress(payload))
        try:
            stream = stream_events(path)
            list(stream)
        except DataFileError:
            return
        assert stream.stats.balanced()


@FAST
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12))
def test_mutated_deribit_logs_never_raise(flips: list[tuple[int, int]]) -> None:
    buf = bytearray(SEED)
    for pos, value in flips:
        if buf:
            buf[pos % len(buf)] = value
    _consume(bytes(buf))


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_in_deribit_logs_never_raise(payload: bytes) -> None:
    _consume(payload)


def test_inspect_deribit_log(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "inspect", str(shared_data / DERIBIT)]) == 0
    out = capsys.readouterr().out
    assert "format:  cryptofeed_deribit" in out
    assert "[depth]" in out and "[bbo]" in out and "rejected" not in out
