"""Binance COIN-M raw feeds in hftbacktest's collector layout, and COIN-M symbols in names.

COIN-M symbols hold an underscore (BTCUSD_PERP); the lines are the USDT-M raw format of
``book/raw_hftbacktest`` (``<local ns> <json>``) with COIN-M streams, written by hand.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from sapphire.data.hftbacktest import parse_name as csv_name
from sapphire.data.hftbacktest_raw import content_symbol, parse_name
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import RowReject
from sapphire.model.events import BookSnapshot, Quote, Trade
from tests.data import venue_checks as vc

E0 = 1723161600000  # 2024-08-09 00:00:00 UTC, ms


def _line(ns: int, msg: Any) -> str:
    return f"{ns} {json.dumps(msg, separators=(',', ':'))}"


def _diff(n: int, U: int, u: int, pu: int, b: list[list[str]], a: list[list[str]]) -> str:
    data = {"e": "depthUpdate", "E": E0 + n, "T": E0 + n, "s": "BTCUSD_PERP", "ps": "BTCUSD"}
    data |= {"U": U, "u": u, "pu": pu, "b": b, "a": a}
    return _line((E0 + n) * 1_000_000 + 5, {"stream": "btcusd_perp@depth@0ms", "data": data})


LINES = [
    _line(
        E0 * 1_000_000 - 10,
        {
            "stream": "btcusd_perp@trade",
            "data": {
                "e": "trade",
                "E": E0 - 1,
                "T": E0 - 1,
                "s": "BTCUSD_PERP",
                "t": 7,
                "p": "61000.0",
                "q": "3",
                "X": "MARKET",
                "m": True,
            },
        },
    ),
    _line(
        E0 * 1_000_000,
        {
            "lastUpdateId": 1000,
            "E": E0,
            "T": E0,
            "bids": [["61000.0", "120"], ["60999.9", "40"]],
            "asks": [["61000.1", "80"], ["61000.5", "10"]],
        },
    ),
    _diff(1, 995, 1001, 990, [["61000.0", "0"], ["60999.8", "7"]], []),  # straddles the snapshot
    _diff(2, 1002, 1003, 1001, [], [["61000.1", "95"]]),
    _diff(3, 1004, 1005, 1003, [["61000.1", "2"]], [["61000.1", "0"], ["61000.3", "11"]]),
    _line(
        (E0 + 4) * 1_000_000,
        {
            "stream": "btcusd_perp@bookTicker",
            "data": {
                "e": "bookTicker",
                "u": 1005,
                "s": "BTCUSD_PERP",
                "ps": "BTCUSD",
                "b": "61000.1",
                "B": "2",
                "a": "61000.3",
                "A": "11",
                "T": E0 + 4,
                "E": E0 + 4,
            },
        },
    ),
    _line(
        (E0 + 5) * 1_000_000,
        {
            "stream": "btcusd_perp@trade",
            "data": {
                "e": "trade",
                "E": E0 + 5,
                "T": E0 + 5,
                "s": "BTCUSD_PERP",
                "t": 8,
                "p": "61000.3",
                "q": "1",
                "X": "MARKET",
                "m": False,
            },
        },
    ),
    "garbage line",
]


@pytest.mark.parametrize(
    "name",
    ["coinm_btcusd_perp_20240809.gz", "cm_btcusd_perp_20240809.gz", "btcusd_perp_20240809.gz"],
)
def test_coinm_raw_feed(tmp_path: Path, name: str) -> None:
    assert parse_name(name) == ("binance-coinm", "BTCUSD_PERP", "2024-08-09")
    path = vc.write_log(tmp_path, name, LINES)
    assert detect(path).name == "hftbacktest_raw"
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.counts == {RowReject.MALFORMED: 1}
    assert {e.symbol for e in events} == {"BTCUSD_PERP"}
    snap = next(e for e in events if isinstance(e, BookSnapshot))
    assert snap.symbol == "BTCUSD_PERP" and snap.update_id == 1000
    assert vc.check_rebuilt_books(events, two_sided=True) == 3
    trades = [e for e in events if isinstance(e, Trade)]
    assert [t.trade_id for t in trades] == [7, 8]
    quote = next(e for e in events if isinstance(e, Quote))
    assert quote.symbol == "BTCUSD_PERP"


def test_symbol_from_content_when_the_name_has_none(tmp_path: Path) -> None:
    # A renamed file: the market prefix says COIN-M, the symbol comes from the stream names.
    path = vc.write_log(tmp_path, "coinm_btcusd_perp_20240809.gz", LINES[1:])
    assert content_symbol(path) == "BTCUSD_PERP"
    frames = load_frames(path)
    assert frames[FrameKind.DEPTH]["symbol"].unique().to_list() == ["BTCUSD_PERP"]
    other = vc.write_log(tmp_path, "cm_ethusd_perp_20240809.gz", LINES)
    assert content_symbol(other) == "BTCUSD_PERP"  # the content wins over a wrong name
    assert load_frames(other)[FrameKind.DEPTH]["symbol"].unique().to_list() == ["BTCUSD_PERP"]


def test_unrelated_names_are_not_coinm() -> None:
    assert parse_name("btcusdt_20240808.gz") == ("", "", "")
    assert parse_name("usdm_btcusdt_20240808.gz") == ("binance-usdm", "BTCUSDT", "2024-08-08")
    assert parse_name("x/cm_btcusd_240927_20240808.gz")[1] == "BTCUSD_240927"


def test_coinm_csv_symbol_is_not_perp(tmp_path: Path) -> None:
    assert csv_name("hftbacktest_binance-coinm_BTCUSD_PERP_depth.csv.gz")[:2] == (
        "binance-coinm",
        "BTCUSD_PERP",
    )
    assert csv_name("hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz")[:2] == (
        "binance-usdm",
        "BTCUSDT",
    )
    path = tmp_path / "hftbacktest_binance-coinm_BTCUSD_PERP_trades.csv.gz"
    header = (
        "session,local_ts_ns,event_ts_ms,trade_ts_ms,trade_id,price,qty,is_buyer_maker,taker_side"
    )
    row = f"2024-08-09,{E0 * 1_000_000},{E0},{E0},7,61000.0,3,1,sell"
    path.write_bytes(gzip.compress(f"{header}\n{row}\n".encode()))
    frame = load_frames(path)[FrameKind.TRADES]
    assert frame["symbol"].to_list() == ["BTCUSD_PERP"]
