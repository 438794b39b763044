"""Coinbase Exchange websocket messages (level2/level2_batch, matches, ticker), bare or in a
cryptofeed log.

No Coinbase recording is shared, so the messages are written by hand from the shapes the
venue documents for ``wss://ws-feed.exchange.coinbase.com``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sapphire.book.l2 import L2Book
from sapphire.data.coinbase import BareLineParser, CoinbaseHandler, time_ns
from sapphire.data.cryptofeed import sniff_venue
from sapphire.data.hftbacktest_raw import chunked
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError, RejectStats, RowReject
from sapphire.model import Instrument
from sapphire.model.events import AnyMarketEvent, BookDelta, BookSnapshot, Quote, Side, Trade
from tests.data import venue_checks as vc

T0 = "2024-01-02T03:04:05"
URL = "wss://ws-feed.exchange.coinbase.com"


def _t(ms: int) -> str:
    return f"{T0}.{ms:03d}000Z"


def _match(kind: str, tid: int, maker_side: str, size: str, price: str, seq: int, ms: int) -> Any:
    return {
        "type": kind,
        "trade_id": tid,
        "maker_order_id": f"m{tid}",
        "taker_order_id": f"t{tid}",
        "side": maker_side,
        "size": size,
        "price": price,
        "product_id": "BTC-USD",
        "sequence": seq,
        "time": _t(ms),
    }


def _l2(ms: int, *changes: list[str], product: str = "BTC-USD") -> Any:
    return {"type": "l2update", "product_id": product, "changes": list(changes), "time": _t(ms)}


SUBSCRIBED = {
    "type": "subscriptions",
    "channels": [
        {"name": name, "product_ids": ["BTC-USD"]} for name in ("level2_batch", "matches", "ticker")
    ],
}
TICKER = {
    "type": "ticker",
    "sequence": 61,
    "product_id": "BTC-USD",
    "price": "100.25",
    "open_24h": "98.00",
    "volume_24h": "1234.5",
    "low_24h": "97.00",
    "high_24h": "102.00",
    "volume_30d": "40000.0",
    "best_bid": "100.00",
    "best_bid_size": "1.0",
    "best_ask": "100.25",
    "best_ask_size": "0.4",
    "side": "buy",
    "time": _t(260),
    "trade_id": 11,
    "last_size": "0.3",
}
LATE = _match("match", 9, "sell", "0.1", "100.25", 55, 270)  # sequence 55 < 60
NO_SNAPSHOT = _l2(280, ["buy", "10.00", "1.0"], product="ETH-USD")
# The messages in arrival order; None is a line cut in two.
MESSAGES: list[Any] = [
    SUBSCRIBED,
    {
        "type": "snapshot",
        "product_id": "BTC-USD",
        "bids": [["100.00", "1.5"], ["99.50", "2.0"]],
        "asks": [["100.50", "1.0"], ["101.00", "3.0"]],
    },
    _match("last_match", 10, "buy", "0.5", "100.00", 50, 0),  # a seller hit the 100.00 bid
    _l2(100, ["buy", "100.00", "1.0"], ["sell", "100.50", "0"]),  # "0" removes the level
    _l2(200, ["sell", "100.25", "0.7"]),
    _match("match", 11, "sell", "0.3", "100.25", 60, 250),  # a buyer lifted the 100.25 ask
    _l2(250, ["sell", "100.25", "0.4"]),
    TICKER,
    {"type": "heartbeat", "sequence": 61, "last_trade_id": 11, "product_id": "BTC-USD"},
    None,
    LATE,
    NO_SNAPSHOT,
    # an older feed's ticker: no sizes, so no BBO row, but it still checks the book
    {k: v for k, v in TICKER.items() if not k.endswith("_size")} | {"sequence": 62},
    _l2(400, ["buy", "99.50", "0"], ["buy", "99.75", "2.5"]),  # level2_batch: two changes
]
BIDS = {100.0: 1.0, 99.75: 2.5}
ASKS = {100.25: 0.4, 101.0: 3.0}


def _bare_lines() -> list[str]:
    cut = json.dumps(_l2(300, ["buy", "99.00", "1.0"]))[:40]
    return [cut if m is None else json.dumps(m) for m in MESSAGES]


def _clean_lines() -> list[str]:
    """The messages without those that make rejects."""
    return [
        json.dumps(m) for m in MESSAGES if m is not None and m is not LATE and m is not NO_SNAPSHOT
    ]


def _cryptofeed_lines(bare: list[str] | None = None) -> list[str]:
    request = {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch"]}
    lines = [f"{URL} <-> 1704164644.9", f"{URL} <- 1704164644.95: {json.dumps(request)}"]
    for i, line in enumerate(_bare_lines() if bare is None else bare):
        lines.append(f"1704164645.{500 + i:03d}: {line}")
    return lines


def _write_bare(tmp: Path, name: str = "coinbase_btc.jsonl") -> Path:
    path = tmp / name
    path.write_text("\n".join(_bare_lines()) + "\n")
    return path


def _check_stream(path: Path, fmt: str, ignored: int) -> tuple[list[AnyMarketEvent], Instrument]:
    assert detect(path).name == fmt
    stream = stream_events(path)
    events = list(stream)
    stats = stream.stats
    assert stats.balanced()
    assert stats.counts == {
        RowReject.MALFORMED: 1,  # the line cut in two
        RowReject.OUT_OF_ORDER: 1,  # the late match
        RowReject.SEQUENCE_GAP: 1,  # an update of a book with no snapshot
    }
    assert stats.rows_out == 4 + 6 + 2 + 1  # snapshot levels, changes, trades, one BBO
    assert stats.ignored == ignored
    assert isinstance(stream.instrument, dict) and stream.instrument["BTC-USD"].venue == "COINBASE"
    return events, stream.instrument["BTC-USD"]


def _final_book(events: list[AnyMarketEvent]) -> vc.Plain:
    final: dict[str, vc.Plain] = {}

    def keep(symbol: str, plain: vc.Plain, _: L2Book) -> None:
        final[symbol] = (dict(plain[0]), dict(plain[1]))

    assert vc.check_rebuilt_books(events, two_sided=True, after_message=keep) == 4
    return final["BTC-USD"]


@pytest.mark.parametrize("container", ["bare", "cryptofeed"])
def test_book_trades_and_quotes_from_documented_messages(tmp_path: Path, container: str) -> None:
    if container == "bare":
        # subscriptions, heartbeat, the sizeless ticker
        events, inst = _check_stream(_write_bare(tmp_path), "coinbase_json", ignored=3)
    else:  # plus the connection and request lines
        path = vc.write_log(tmp_path, "cryptofeed_coinbase_ws.log.gz", _cryptofeed_lines())
        events, inst = _check_stream(path, "cryptofeed_coinbase", ignored=5)
    snaps = [e for e in events if isinstance(e, BookSnapshot)]
    assert len(snaps) == 1 and len(snaps[0].bids) == len(snaps[0].asks) == 2
    bids, asks = _final_book(events)
    tick, lot = float(inst.tick_size), float(inst.lot_size)
    assert {round(p * tick, 8): round(q * lot, 8) for p, q in bids.items()} == BIDS
    assert {round(p * tick, 8): round(q * lot, 8) for p, q in asks.items()} == ASKS
    trades = [e for e in events if isinstance(e, Trade)]
    # ``side`` in a match is the maker's: the aggressor is the other side
    assert [(t.trade_id, t.taker_side) for t in trades] == [(10, Side.SELL), (11, Side.BUY)]
    assert trades[1].ts_event_ns == time_ns(_t(250))
    quotes = [e for e in events if isinstance(e, Quote)]
    assert len(quotes) == 1 and quotes[0].ts_event_ns == time_ns(_t(260))
    deltas = [e for e in events if isinstance(e, BookDelta)]
    assert sum(1 for d in deltas if d.qty_lots == 0) == 2  # 100.50 ask and 99.50 bid removed


def test_tickers_check_the_rebuilt_book(tmp_path: Path) -> None:
    path = vc.write_log(tmp_path, "x.log.gz", _cryptofeed_lines())
    handler = CoinbaseHandler()
    stats = vc.handler_pass(handler, path)
    checks = (handler.ticker_matches, handler.ticker_mismatches, handler.ticker_unchecked)
    assert checks == (2, 0, 0) and handler.absent_deletes == 0
    assert stats.counts[RowReject.OUT_OF_ORDER] == 1
    lines = _cryptofeed_lines()
    at = next(i for i, line in enumerate(lines) if '"best_bid_size"' in line)
    lines[at] = lines[at].replace('"best_bid": "100.00"', '"best_bid": "99.75"')
    handler = CoinbaseHandler()
    vc.handler_pass(handler, vc.write_log(tmp_path, "y.log.gz", lines))
    assert (handler.ticker_matches, handler.ticker_mismatches) == (1, 1)
    assert handler.mismatch_lines == [at + 1]


def _bare(tmp: Path, lines: list[str], name: str = "feed.jsonl") -> Path:
    path = tmp / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_update_before_snapshot_waits_for_one(tmp_path: Path) -> None:
    lines = [json.dumps(m) for m in (MESSAGES[3], MESSAGES[1], MESSAGES[4])]
    stream = stream_events(_bare(tmp_path, lines))
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.counts == {RowReject.SEQUENCE_GAP: 2}
    assert "without a snapshot" in stream.stats.examples[0][2]
    assert sum(isinstance(e, BookSnapshot) for e in events) == 1
    assert sum(isinstance(e, BookDelta) for e in events) == 1


def test_late_repeated_and_broken_messages(tmp_path: Path) -> None:
    """A match seen twice is a duplicate, a late sized ticker is out of order, and an update
    with a bad field loses the book until the next snapshot."""
    snapshot, first = MESSAGES[1], MESSAGES[2]
    late_ticker = TICKER | {"sequence": 40, "time": _t(500)}
    bad = _l2(600, ["up", "100.00", "1.0"], ["buy", "99.00", "1.0"])
    after = _l2(700, ["buy", "98.00", "1.0"])
    lines = [json.dumps(m) for m in (snapshot, first, first, TICKER, late_ticker, bad, after)]
    stream = stream_events(_bare(tmp_path, lines))
    events = list(stream)
    assert stream.stats.balanced()
    assert stream.stats.counts == {
        RowReject.DUPLICATE_TRADE_ID: 1,
        RowReject.OUT_OF_ORDER: 1,
        RowReject.MALFORMED: 2,  # both changes of the broken update
        RowReject.SEQUENCE_GAP: 1,  # the next update: no book until a snapshot
    }
    assert sum(isinstance(e, Trade) for e in events) == 1
    assert sum(isinstance(e, Quote) for e in events) == 1


def test_detected_by_content(tmp_path: Path) -> None:
    lines = _cryptofeed_lines()
    # cryptofeed's own file name, no "cryptofeed_" prefix: line 1's host says Coinbase
    plain = tmp_path / "COINBASE.ws.3.0"
    plain.write_text("\n".join(lines) + "\n")
    assert detect(plain).name == "cryptofeed_coinbase"
    headed = tmp_path / "COINBASE.ws.4.0"  # after cryptofeed's settings header
    headed.write_text("\n".join(['configuration: {"x": 1}', *lines]) + "\n")
    assert detect(headed).name == "cryptofeed_coinbase"
    no_url = [line for line in lines if not line.startswith("wss://")]
    assert sniff_venue(vc.write_log(tmp_path, "cryptofeed_x.log.gz", no_url)) == "coinbase"
    assert detect(_write_bare(tmp_path, "messages.log")).name == "coinbase_json"


def test_url_lines_are_never_timestamps(tmp_path: Path) -> None:
    """The reported failure: ``wss://ws-feed...`` prefixes read as receive times. With a
    byte-order mark before line 1 the log is still Coinbase's and its URL lines are ignored."""
    lines = _cryptofeed_lines()
    lines[0] = "\ufeff" + lines[0]
    settings = 'configuration: {"log": {"filename": "feedhandler.log"}}'  # cryptofeed's header
    lines.insert(1, settings)
    path = vc.write_log(tmp_path, "feed_with_bom.log.gz", lines)  # a name that says nothing
    assert detect(path).name == "cryptofeed_coinbase"
    stream = stream_events(path)
    list(stream)
    assert stream.stats.balanced() and stream.stats.ignored == 6
    assert not any("wss://" in detail for _, _, detail in stream.stats.examples)


def test_untimed_messages_wait_for_a_time(tmp_path: Path) -> None:
    """A bare snapshot takes the first exchange time after it; with none it is rejected."""
    stats = RejectStats()
    parser = BareLineParser()
    path = _bare(tmp_path, [json.dumps(MESSAGES[0]), json.dumps(MESSAGES[1])])
    for _ in chunked(path, stats, parser):
        pass
    parser.finish(stats)
    assert stats.counts == {RowReject.MALFORMED: 4} and stats.ignored == 1
    frames = load_frames(_write_bare(tmp_path, "coinbase_2024-01-02.jsonl"))
    snapshot = frames[FrameKind.DEPTH].filter(frames[FrameKind.DEPTH]["is_snapshot"])
    assert snapshot["ts_recv_ns"].unique().to_list() == [time_ns(_t(0))]
    assert snapshot["session"].unique().to_list() == ["2024-01-02"]  # from the name


def test_times_are_utc() -> None:
    assert time_ns("2024-01-02T03:04:05.123456Z") == 1_704_164_645_123_456_000
    assert time_ns("2024-01-02T03:04:05.123456") == time_ns("2024-01-02T03:04:05.123456Z")
    assert time_ns("2024-01-02T04:04:05.1+01:00") == 1_704_164_645_100_000_000
    with pytest.raises(ValueError):
        time_ns("yesterday")


def test_file_without_market_data_is_an_error(tmp_path: Path) -> None:
    path = vc.write_log(tmp_path, "cryptofeed_coinbase_ws.log.gz", _cryptofeed_lines()[:3])
    with pytest.raises(DataFileError, match="no market-data"):
        load_frames(path)


@pytest.mark.parametrize("container", ["bare", "cryptofeed"])
def test_truncated_file_counts_a_reject(tmp_path: Path, container: str) -> None:
    lines = _clean_lines() if container == "bare" else _cryptofeed_lines(_clean_lines())
    (tmp_path / "src").mkdir()
    src = vc.write_log(tmp_path / "src", f"{container}_coinbase.log.gz", lines)
    vc.check_truncations(src, tmp_path, 0.9, last_line_cut=20)


SEEDS = [
    ("coinbase.jsonl.gz", ("\n".join(_bare_lines()) + "\n").encode()),
    ("cryptofeed_coinbase.log.gz", ("\n".join(_cryptofeed_lines()) + "\n").encode()),
]


test_mutated_coinbase_files_never_raise, test_random_bytes_in_coinbase_files_never_raise = (
    vc.fuzz_tests(SEEDS)
)


@pytest.mark.parametrize("container", ["bare", "cryptofeed"])
def test_inspect(tmp_path: Path, container: str, capsys: pytest.CaptureFixture[str]) -> None:
    if container == "bare":
        path, fmt = _bare(tmp_path, _clean_lines()), "coinbase_json"
    else:
        path = vc.write_log(
            tmp_path, "cryptofeed_coinbase.log.gz", _cryptofeed_lines(_clean_lines())
        )
        fmt = "cryptofeed_coinbase"
    vc.check_inspect(path, fmt, ("depth", "trades", "bbo"), capsys)
