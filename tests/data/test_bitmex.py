"""cryptofeed log of the BitMEX realtime websocket (orderBookL2, quote, trade).

Counts and time ranges are the ones ../shared/data/README.md states for the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from sapphire.data.cryptofeed_bitmex import iso_ns
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import RowReject
from sapphire.model.events import BookDelta, BookSnapshot, Quote, Side, Trade
from tests.data import venue_checks as vc

BITMEX = "book/cryptofeed_bitmex_ws_2021-07-22.log.gz"


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
    assert vc.utc(int(recv.min())) >= "22:36:07.875"  # type: ignore[arg-type]
    assert vc.utc(int(recv.max())).startswith("22:36:38.468")  # type: ignore[arg-type]
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
    assert vc.check_rebuilt_books(stream_events(shared_data / BITMEX)) == 1_969


def test_sizes_stay_contracts(shared_data: Path) -> None:
    """XBTUSD is inverse: size is a count of 1-USD contracts (foreignNotional = size, value in
    satoshi ~ size * 1e8 / price), not BTC."""
    raw = [
        row
        for line in vc.log_lines(shared_data / BITMEX)
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
    lines = vc.log_lines(shared_data / BITMEX)
    target = next(
        i
        for i, line in enumerate(lines)
        if '"action":"update"' in line and '"symbol":"XBTUSD"' in line
    )
    lines[target] = lines[target].replace('"id":', '"id":9', 1)  # an id the book never had
    path = vc.write_log(tmp_path, "recording.log.gz", lines)  # neutral name: detected by content
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
    lines = vc.log_lines(shared_data / BITMEX)
    misnamed = "cryptofeed_okx_ws_x.log.gz"
    vc.check_detected_by_content(lines, tmp_path, misnamed, "cryptofeed_bitmex", "bitmex")


def test_log_without_market_data_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    lines = vc.log_lines(shared_data / BITMEX)
    head = [line for line in lines if '"success"' in line or '"info"' in line]
    path = vc.write_log(tmp_path, Path(BITMEX).name, lines[:1] + head)
    vc.check_no_market_data(path, stream=False)


def test_truncated_file_counts_a_reject(shared_data: Path, tmp_path: Path) -> None:
    vc.check_truncations(shared_data / BITMEX, tmp_path, 3 / 4, last_line_cut=20)


def _small(lines: list[bytes]) -> list[bytes]:
    # the head plus a slice of small book/quote/trade messages (the XBTUSD partial is huge)
    return lines[:5] + [line for line in lines[36:] if len(line) < 600][:40]


SEED = vc.seed_lines(BITMEX, _small)


test_mutated_bitmex_logs_never_raise, test_random_bytes_in_bitmex_logs_never_raise = vc.fuzz_tests(
    [(Path(BITMEX).name, SEED)]
)


def test_inspect_bitmex_log(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vc.check_inspect(shared_data / BITMEX, "cryptofeed_bitmex", ("depth", "trades", "bbo"), capsys)


def test_trades_are_typed_with_taker_side(shared_data: Path) -> None:
    trades = [e for e in stream_events(shared_data / BITMEX) if isinstance(e, Trade)]
    assert len(trades) == 27 and len({t.trade_id for t in trades}) == 27
    first = next(t for t in trades if t.symbol == "UNIUSDT" and t.taker_side is Side.BUY)
    assert first.ts_event_ns <= first.ts_recv_ns
