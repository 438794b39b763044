"""Hyperliquid REST bodies: l2Book snapshot, candleSnapshot bars, fundingHistory rates.

Counts and time ranges are the ones ../shared/data/README.md states for the files.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.book.l2 import L2Book
from sapphire.cli import main
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError, RowReject
from sapphire.model.events import Bar, BookSnapshot, FundingRate
from sapphire.model.times import utc_text
from tests.data import venue_checks as vc

BOOK = "book/hyperliquid-sdk_hyperliquid_DYDX_l2Book_rest_2023-07-17.json"
CANDLES = "ohlcv/hyperliquid-sdk_hyperliquid_kPEPE_1h_candleSnapshot_2023-05-21.json"
FUNDING = "ohlcv/hyperliquid-sdk_hyperliquid_BTC_fundingHistory_2023-05-12_2023-07-17.json.gz"
HOUR_NS = 3_600 * 10**9


def _body(path: Path) -> object:
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.name.endswith(".gz") else raw)


def test_l2book_is_one_uncrossed_snapshot(shared_data: Path) -> None:
    path = shared_data / BOOK
    assert detect(path).name == "hyperliquid_l2book"
    depth = load_frames(path)[FrameKind.DEPTH]
    assert depth.height == 40 and depth["is_snapshot"].all()
    assert {s: n for s, n in Counter(depth["side"].to_list()).items()} == {1: 20, -1: 20}
    assert utc_text(int(depth["ts_event_ns"].min()), 6).startswith("2023-07-17 21:43:23.930")  # type: ignore[arg-type]
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    assert len(events) == 1 and isinstance(events[0], BookSnapshot)
    snap = events[0]
    assert (snap.symbol, len(snap.bids), len(snap.asks)) == ("DYDX", 20, 20)
    book = L2Book("DYDX")
    book.apply_snapshot(snap)
    assert not book.is_crossed()
    best_bid, best_ask = book.best_bid(), book.best_ask()
    assert best_bid is not None and best_ask is not None
    raw = _body(path)
    assert isinstance(raw, dict)
    # the body lists the best level first on each side
    assert best_bid[0] == round(float(raw["levels"][0][0]["px"]) * 10_000)  # tick 0.0001
    assert best_ask[0] == round(float(raw["levels"][1][0]["px"]) * 10_000)


def test_candles_match_readme(shared_data: Path) -> None:
    path = shared_data / CANDLES
    assert detect(path).name == "hyperliquid_candles"
    bars = load_frames(path)[FrameKind.BARS]
    assert bars.height == 24 and bars["symbol"].unique().to_list() == ["kPEPE"]
    assert utc_text(int(bars["ts_event_ns"].min()), 6).startswith("2023-05-21 20:00")  # type: ignore[arg-type]
    assert utc_text(int(bars["ts_event_ns"].max()), 6).startswith("2023-05-22 19:00")  # type: ignore[arg-type]
    assert bars["interval_ns"].unique().to_list() == [HOUR_NS]
    assert bars["ts_event_ns"].diff().drop_nulls().unique().to_list() == [HOUR_NS]
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    assert len(events) == 24 and all(isinstance(e, Bar) for e in events)
    for e in events:
        assert isinstance(e, Bar)
        assert e.low_ticks <= min(e.open_ticks, e.close_ticks) <= e.high_ticks
        assert max(e.open_ticks, e.close_ticks) <= e.high_ticks


def test_funding_matches_readme(shared_data: Path) -> None:
    path = shared_data / FUNDING
    assert detect(path).name == "hyperliquid_funding"
    funding = load_frames(path)[FrameKind.FUNDING]
    assert funding.height == 1_038
    ts = funding["ts_event_ns"]
    assert utc_text(int(ts.min()), 6).startswith("2023-05-12 00:00:00.048")  # type: ignore[arg-type]
    assert utc_text(int(ts.max()), 6).startswith("2023-07-17 21:00:00.065")  # type: ignore[arg-type]
    # README: 955 gaps of 1 h, 79 of 8 h, 3 irregular (to the nearest minute: the funding
    # times jitter by up to about 5 s)
    gaps = Counter(round(g / 60e9) for g in ts.diff().drop_nulls().to_list())
    assert (gaps[60], gaps[8 * 60], sum(gaps.values()) - gaps[60] - gaps[8 * 60]) == (
        955,
        79,
        3,
    )
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    assert len(events) == 1_038 and all(isinstance(e, FundingRate) for e in events)
    first = _body(path)
    assert isinstance(first, list) and isinstance(events[0], FundingRate)
    assert float(events[0].rate) == float(first[0]["fundingRate"])


def test_detected_by_content(shared_data: Path, tmp_path: Path) -> None:
    for rel, name in ((BOOK, "hyperliquid_l2book"), (CANDLES, "hyperliquid_candles")):
        renamed = tmp_path / "response.json"
        renamed.write_bytes((shared_data / rel).read_bytes())
        assert detect(renamed).name == name
    renamed = tmp_path / "response.json.gz"
    renamed.write_bytes((shared_data / FUNDING).read_bytes())
    assert detect(renamed).name == "hyperliquid_funding"


def test_bad_entries_are_counted_rejects(shared_data: Path, tmp_path: Path) -> None:
    body = _body(shared_data / CANDLES)
    assert isinstance(body, list)
    body[3]["o"] = "not a price"
    body[5]["T"] = body[5]["T"] + 1  # close time that disagrees with the interval
    del body[7]["v"]
    body[9]["c"] = "NaN"
    path = tmp_path / "candles.json"
    path.write_text(json.dumps(body))
    stream = stream_events(path)
    assert len(list(stream)) == 20
    assert stream.stats.balanced()
    assert stream.stats.counts == {RowReject.MALFORMED: 3, RowReject.NON_FINITE: 1}


def test_empty_or_truncated_bodies_are_errors(shared_data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "hyperliquid_funding.json"
    empty.write_text("[]")
    with pytest.raises(DataFileError):
        load_frames(empty)
    book = tmp_path / "book.json"
    raw = (shared_data / BOOK).read_bytes()
    book.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFileError):
        stream_events(book)
    no_levels = tmp_path / "nolevels.json"
    no_levels.write_text(json.dumps({"coin": "X", "levels": [[], []], "time": 1}))
    with pytest.raises(DataFileError, match="without levels"):
        load_frames(no_levels)


def _seed(rel: str) -> bytes:
    from tests.conftest import shared_data_dir

    path = shared_data_dir() / rel
    return path.read_bytes() if path.is_file() else b""


SEEDS = [_seed(BOOK), _seed(CANDLES)]


@vc.FAST
@given(
    st.sampled_from([0, 1]),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12),
)
def test_mutated_hyperliquid_bodies_never_raise(which: int, flips: list[tuple[int, int]]) -> None:
    vc.consume("x.json", vc.flip_bytes(SEEDS[which], flips), gz=False)


@vc.FAST
@given(st.binary(max_size=300))
def test_random_bytes_in_hyperliquid_json_never_raise(payload: bytes) -> None:
    vc.consume("x.json", payload, gz=False)
    vc.consume("x.json.gz", payload)


@pytest.mark.parametrize(
    ("rel", "section"), [(BOOK, "[depth]"), (CANDLES, "[bars]"), (FUNDING, "[funding]")]
)
def test_inspect_hyperliquid(
    shared_data: Path, capsys: pytest.CaptureFixture[str], rel: str, section: str
) -> None:
    assert main(["data", "inspect", str(shared_data / rel)]) == 0
    out = capsys.readouterr().out
    assert "format:  hyperliquid_" in out and section in out
