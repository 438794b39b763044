"""Bybit public-archive order book (``*_ob500.data``, v5 ``orderbook.N`` lines) and trade CSVs.

No usable archive is shared (the one found is held out), so the files are written by hand
from the shapes Bybit documents for the v5 ``orderbook.{depth}.{symbol}`` stream and the
``public.bybit.com/trading`` CSV header.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sapphire.data.bybit_archive import BOOK_FORMAT, TRADES_FORMAT, BookParser
from sapphire.data.hftbacktest_raw import chunked
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError, RejectStats, RowReject
from sapphire.model.events import BookDelta, BookSnapshot, Side, Trade
from tests.data import venue_checks as vc

T0 = 1723075200000  # 2024-08-08 00:00:00 UTC, ms


def _ob(kind: str, u: int, b: list[list[str]], a: list[list[str]], dt: int) -> str:
    msg: dict[str, Any] = {
        "topic": "orderbook.500.BTCUSDT",
        "type": kind,
        "ts": T0 + dt,
        "data": {"s": "BTCUSDT", "b": b, "a": a, "u": u, "seq": 9_000_000 + 7 * u},
        "cts": T0 + dt - 2,
    }
    return json.dumps(msg, separators=(",", ":"))


BOOK_LINES = [
    _ob(
        "snapshot",
        100,
        [["61000.10", "1.500"], ["61000.00", "2.000"]],
        [["61000.20", "0.700"], ["61000.50", "3.100"]],
        0,
    ),
    _ob("delta", 101, [["61000.10", "0"], ["61000.05", "0.300"]], [], 100),  # delete + insert
    _ob("delta", 102, [], [["61000.20", "0.900"]], 200),  # update
    _ob("delta", 102, [["60999.00", "5.000"]], [], 250),  # duplicate u: out_of_order (1 row)
    "{not json",  # malformed (1 row)
    # The bid moves through the old best ask within one message: the ask delete comes first.
    _ob("delta", 104, [["61000.20", "0.100"]], [["61000.20", "0"], ["61000.30", "1.000"]], 300),
    # Restart: u == 1 snapshot resets the book (a higher, smaller book).
    _ob("snapshot", 1, [["61010.00", "1.000"]], [["61010.50", "2.000"]], 400),
    _ob("delta", 2, [["61010.00", "0"], ["61009.90", "0.400"]], [], 500),
    _ob("delta", 3, [], [["61010.40", "0.250"]], 600),
]


def _write(tmp: Path, name: str, lines: list[str]) -> Path:
    path = tmp / name
    text = ("\n".join(lines) + "\n").encode()
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text))
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(name.removesuffix(".zip"), text)
    else:
        path.write_bytes(text)
    return path


@pytest.mark.parametrize(
    "name",
    ["2024-08-08_BTCUSDT_ob500.data", "2024-08-08_BTCUSDT_ob200.data.zip", "book_copy.gz"],
)
def test_book_rebuilds_uncrossed_with_counted_rejects(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name, BOOK_LINES)
    assert detect(path).name == BOOK_FORMAT  # by content, whatever the name
    stream = stream_events(path)
    events = list(stream)
    stats = stream.stats
    assert stats.balanced()
    assert stats.counts == {RowReject.OUT_OF_ORDER: 1, RowReject.MALFORMED: 1}
    snaps = [e for e in events if isinstance(e, BookSnapshot)]
    assert [s.update_id for s in snaps] == [100, 1]
    tops: list[tuple[int, int]] = []

    def keep(_: str, plain: vc.Plain, book: Any) -> None:
        tops.append((max(plain[0]), min(plain[1])))

    assert vc.check_rebuilt_books(events, two_sided=True, after_message=keep) == 5
    tick = 0.01  # inferred from the prices
    assert [(round(b * tick, 2), round(a * tick, 2)) for b, a in tops] == [
        (61000.05, 61000.20),
        (61000.05, 61000.20),
        (61000.20, 61000.30),
        (61009.90, 61010.50),
        (61009.90, 61010.40),
    ]
    first = next(e for e in events if isinstance(e, BookDelta))
    assert first.side is Side.SELL or first.qty_lots == 0  # deletes are emitted first
    assert first.ts_event_ns == (T0 + 98) * 1_000_000  # cts
    assert first.ts_recv_ns == (T0 + 100) * 1_000_000  # Bybit's push time


def test_book_parser_counts_restarts_and_jumps(tmp_path: Path) -> None:
    path = _write(tmp_path, "x_ob500.data", BOOK_LINES)
    parser = BookParser("s")
    for _ in chunked(path, RejectStats(), parser):
        pass
    assert parser.restarts == 1
    assert parser.u_jumps == 1  # 102 -> 104 is accepted, counted
    assert parser.last_u == {"BTCUSDT": 3}


def test_delta_before_snapshot_is_a_gap_and_no_rows_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "y_ob200.data", [BOOK_LINES[1], *BOOK_LINES[:3]])
    stream = stream_events(path)
    list(stream)
    assert stream.stats.counts == {RowReject.SEQUENCE_GAP: 2} and stream.stats.balanced()
    only_acks = _write(tmp_path, "z_ob500.data", [BOOK_LINES[0].replace("snapshot", "nope")])
    with pytest.raises(DataFileError):
        load_frames(only_acks)


TRADE_HEADER = (
    "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,"
    "foreignNotional"
)
TRADE_ROWS = [
    "1723075200.1234,BTCUSDT,Buy,0.005,61000.2,PlusTick,8a1f4f7e-7b8c-5d3e-9f0a-1b2c3d4e5f60,3.05e+10,0.005,305.001",
    "1723075200.5,BTCUSDT,Sell,0.120,61000.1,MinusTick,0b2c3d4e-5f60-5a1f-8e7b-6c5d4e3f2a10,7.32e+11,0.12,7320.012",
    "1723075201,BTCUSDT,Sell,0.001,61000.0,MinusTick,1c2d3e4f-5a6b-5c7d-8e9f-0a1b2c3d4e5f,6.1e+09,0.001,61.0",
    "1723075201.75,BTCUSDT,Hold,0.001,61000.0,ZeroMinusTick,2c2d3e4f-5a6b-5c7d-8e9f-0a1b2c3d4e5f,6.1e+09,0.001,61.0",
]


@pytest.mark.parametrize("newest_first", [False, True])
def test_trades_csv_both_sides(tmp_path: Path, newest_first: bool) -> None:
    rows = TRADE_ROWS[::-1] if newest_first else TRADE_ROWS
    path = _write(tmp_path, "BTCUSDT2024-08-08.csv.gz", [TRADE_HEADER, *rows])
    assert detect(path).name == TRADES_FORMAT
    stream = stream_events(path)
    trades = [e for e in stream if isinstance(e, Trade)]
    assert stream.stats.counts == {RowReject.MALFORMED: 1} and stream.stats.balanced()
    assert [t.ts_event_ns for t in trades] == [
        1723075200_123400000,
        1723075200_500000000,
        1723075201_000000000,
    ]
    assert [t.taker_side for t in trades] == [Side.BUY, Side.SELL, Side.SELL]
    assert len({t.trade_id for t in trades}) == 3
    frame = load_frames(path)[FrameKind.TRADES]
    assert frame["symbol"].unique().to_list() == ["BTCUSDT"]
    assert frame["session"].unique().to_list() == ["2024-08-08"]


def test_inspect_trades(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "BTCUSDT2024-08-08.csv.gz", [TRADE_HEADER, *TRADE_ROWS[:3]])
    vc.check_inspect(path, TRADES_FORMAT, ("trades",), capsys)


def test_inspect_book(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "2024-08-08_BTCUSDT_ob500.data", [BOOK_LINES[0], *BOOK_LINES[5:]])
    vc.check_inspect(path, BOOK_FORMAT, ("depth",), capsys)


def test_truncated_book_archive(tmp_path: Path) -> None:
    src = _write(tmp_path, "2024-08-08_BTCUSDT_ob500.data.gz", [BOOK_LINES[0], *BOOK_LINES[5:]] * 3)
    out = tmp_path / "cut"
    out.mkdir()
    vc.check_truncations(src, out, 0.8, last_line_cut=7)


_SEEDS = [
    ("2024-08-08_BTCUSDT_ob500.data", ("\n".join(BOOK_LINES) + "\n").encode()),
    ("BTCUSDT2024-08-08.csv", ("\n".join([TRADE_HEADER, *TRADE_ROWS]) + "\n").encode()),
]
_NAMES = [
    *(name for name, _ in _SEEDS),
    "x_ob500.data.zip",
    "x_ob500.data.gz",
    "BTCUSD2020-01-01.csv.gz",
]
test_mutated_bybit_archive, test_random_bytes_bybit_archive = vc.fuzz_tests(
    _SEEDS, _NAMES, gz=False
)


def test_bad_snapshot_drops_the_book_and_numeric_trade_ids(tmp_path: Path) -> None:
    bad_snapshot = BOOK_LINES[6].replace('"61010.00"', '{"x":1}')
    path = _write(tmp_path, "b_ob500.data", [*BOOK_LINES[:3], bad_snapshot, *BOOK_LINES[7:]])
    stream = stream_events(path)
    list(stream)
    # The restart snapshot is lost: its two deltas cannot go onto the old book.
    assert stream.stats.counts == {RowReject.MALFORMED: 2, RowReject.SEQUENCE_GAP: 3}
    rows = [r.replace("8a1f4f7e-7b8c-5d3e-9f0a-1b2c3d4e5f60", "123456789") for r in TRADE_ROWS[:3]]
    trades = _write(tmp_path, "BTCUSDT2024-08-08.csv", [TRADE_HEADER, *rows])
    ids = [e.trade_id for e in stream_events(trades) if isinstance(e, Trade)]
    assert ids[0] == 123456789 and len(set(ids)) == 3


def test_corrupt_zip_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "2024-08-08_BTCUSDT_ob500.data.zip"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataFileError, match="unknown data format"):
        stream_events(path)
