"""cryptofeed log of the Deribit JSON-RPC websocket (options books and tickers).

Counts and time ranges are the ones ../shared/data/README.md states for the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sapphire.data.cryptofeed_deribit import DeribitHandler
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import RowReject
from sapphire.model.events import BookDelta, Quote
from tests.data import venue_checks as vc

DERIBIT = "book/cryptofeed_deribit_options_ws_2021-07-22.log.gz"


def _books(lines: list[str]) -> list[dict[str, object]]:
    return [
        json.loads(line.partition(": ")[2])["params"]["data"]
        for line in lines
        if '"channel":"book.' in line
    ]


def test_counts_and_times_match_readme(shared_data: Path) -> None:
    path = shared_data / DERIBIT
    assert detect(path).name == "cryptofeed_deribit"
    raw = _books(vc.log_lines(path))
    snaps = [b for b in raw if b["type"] == "snapshot"]
    # README: 10 snapshots, 36 changes, 89 tickers, 1 subscribe result, 2 control lines
    assert len(snaps) == 10 and len(raw) - len(snaps) == 36
    empty = sum(1 for b in snaps if not b["bids"] and not b["asks"])  # a book with no orders
    frames = load_frames(path)
    depth = frames[FrameKind.DEPTH]
    messages = depth.select("symbol", "is_snapshot", "final_update_id").unique()
    assert messages["is_snapshot"].sum() == 10 - empty
    assert (~messages["is_snapshot"]).sum() == 36
    handler = DeribitHandler()
    stats = vc.handler_pass(handler, path)
    assert frames[FrameKind.BBO].height + handler.one_sided == 89
    assert stats.ignored == 2 + 1 + handler.one_sided
    recv = [*depth["ts_recv_ns"], *frames[FrameKind.BBO]["ts_recv_ns"]]
    assert vc.utc(min(recv)).startswith("22:42:03.804")
    assert vc.utc(max(recv)).startswith("22:42:34.165")
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    assert sum(isinstance(e, BookDelta) and e.last_in_batch for e in events) == 36
    quotes = [e for e in events if isinstance(e, Quote)]
    assert all(q.bid_ticks < q.ask_ticks for q in quotes)


def test_rebuilt_books_never_cross_and_changes_chain(shared_data: Path) -> None:
    assert vc.check_rebuilt_books(stream_events(shared_data / DERIBIT)) == 36


def test_broken_change_chain_is_a_gap(shared_data: Path, tmp_path: Path) -> None:
    lines = vc.log_lines(shared_data / DERIBIT)
    target = next(i for i, line in enumerate(lines) if '"type":"change"' in line)
    name = json.loads(lines[target].partition(": ")[2])["params"]["data"]["instrument_name"]
    lines[target] = lines[target].replace('"prev_change_id":', '"prev_change_id":1', 1)
    path = vc.write_log(tmp_path, "recording.log.gz", lines)  # neutral name: detected by content
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
    lines = vc.log_lines(shared_data / DERIBIT)
    misnamed = "cryptofeed_bybit_x.log.gz"
    vc.check_detected_by_content(lines, tmp_path, misnamed, "cryptofeed_deribit", "deribit")


def test_log_without_market_data_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    lines = vc.log_lines(shared_data / DERIBIT)
    path = vc.write_log(tmp_path, Path(DERIBIT).name, lines[:3])  # control lines and the RPC result
    vc.check_no_market_data(path, stream=False)


def test_truncated_file_counts_a_reject(shared_data: Path, tmp_path: Path) -> None:
    vc.check_truncations(shared_data / DERIBIT, tmp_path, 3 / 4, last_line_cut=None)


SEED = vc.seed_lines(
    DERIBIT, lambda lines: lines[:3] + [x for x in lines[3:] if b'"book.' in x][:20]
)


test_mutated_deribit_logs_never_raise, test_random_bytes_in_deribit_logs_never_raise = (
    vc.fuzz_tests([(Path(DERIBIT).name, SEED)])
)


def test_inspect_deribit_log(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vc.check_inspect(shared_data / DERIBIT, "cryptofeed_deribit", ("depth", "bbo"), capsys)
