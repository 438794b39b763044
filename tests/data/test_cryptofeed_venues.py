"""cryptofeed websocket logs of Bybit (legacy linear/inverse) and OKX v5, on the real recordings.

Counts and time ranges are the ones ../shared/data/README.md states for each file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest

from sapphire.data.cryptofeed import sniff_venue
from sapphire.data.cryptofeed_okx import OkxHandler, okx_checksum
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError, RejectStats, RowReject
from sapphire.model.events import BookDelta, BookSnapshot, Quote, Trade
from tests.data import venue_checks as vc

LINEAR = "book/cryptofeed_bybit_linear_ws_2021-04-17.log.gz"
INVERSE = "book/cryptofeed_bybit_inverse_ws_2021-04-17.log.gz"
OKX = "book/cryptofeed_okx_ws_2022-05-13.log.gz"

# file, format, README: snapshots, delta messages, trade messages, trades, first/last times
README = [
    (LINEAR, "cryptofeed_bybit", 8, 3_252, 66, 101, "16:43:04.976", "16:43:36.403"),
    (INVERSE, "cryptofeed_bybit", 2, 1_016, 76, 150, "16:43:05", "16:43:36.4"),
    (OKX, "cryptofeed_okx", 3, 287, 74, 74, "16:27:05", "16:27:16.1"),
]


@pytest.mark.parametrize(
    ("rel", "fmt", "snaps", "deltas", "trade_msgs", "trades", "first", "last"),
    README,
    ids=["bybit-linear", "bybit-inverse", "okx"],
)
def test_counts_and_times_match_readme(
    shared_data: Path,
    rel: str,
    fmt: str,
    snaps: int,
    deltas: int,
    trade_msgs: int,
    trades: int,
    first: str,
    last: str,
) -> None:
    path = shared_data / rel
    assert detect(path).name == fmt
    frames = load_frames(path)
    depth = frames[FrameKind.DEPTH]
    messages = depth.select("symbol", "is_snapshot", "final_update_id").unique()
    assert messages["is_snapshot"].sum() == snaps
    assert (~messages["is_snapshot"]).sum() == deltas
    assert frames[FrameKind.TRADES].height == trades
    assert frames[FrameKind.TRADES]["ts_recv_ns"].n_unique() == trade_msgs
    # README ranges of the book messages are exchange times (timestamp_e6, OKX ts)
    assert vc.utc(int(depth["ts_event_ns"].min())).startswith(first)  # type: ignore[arg-type]
    assert vc.utc(int(depth["ts_event_ns"].max())).startswith(last)  # type: ignore[arg-type]
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    assert stream.stats.rows_out == sum(f.height for f in frames.values())
    assert sum(isinstance(e, BookSnapshot) for e in events) == snaps
    assert sum(isinstance(e, BookDelta) and e.last_in_batch for e in events) == deltas
    assert sum(isinstance(e, Trade) for e in events) == trades


def test_okx_tickers_are_quotes_in_venue_units(shared_data: Path) -> None:
    stream = stream_events(shared_data / OKX)
    quotes = [e for e in stream if isinstance(e, Quote)]
    assert len(quotes) == 28  # README: 28 tickers
    assert {q.symbol for q in quotes} == {"BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT"}
    inst = stream.instrument
    assert isinstance(inst, dict)
    # Contracts stay contracts: whole numbers on the swap and the future, BTC on spot.
    assert inst["UNI-USD-SWAP"].lot_size == inst["BTC-USD-220527"].lot_size == "1"
    assert inst["BTC-USDT"].lot_size != "1"
    assert {i.venue for i in inst.values()} == {"OKX"}


def test_bybit_inverse_sizes_are_usd_contracts(shared_data: Path) -> None:
    trades = load_frames(shared_data / INVERSE)[FrameKind.TRADES]
    assert (trades["qty"] == trades["qty"].round(0)).all()
    btc = trades.filter(pl.col("symbol") == "BTCUSD")
    assert btc["price"].min() > 50_000  # type: ignore[operator]
    linear = load_frames(shared_data / LINEAR)[FrameKind.TRADES]
    assert not (linear["qty"] == linear["qty"].round(0)).all()  # base coin, fractional


@pytest.mark.parametrize("rel", [LINEAR, INVERSE, OKX])
def test_rebuilt_books_never_cross(shared_data: Path, rel: str) -> None:
    """Rebuilt with L2Book and with a plain dict (no crossing rule): both agree and never cross
    after any complete message; every delta chains onto the previous message. Bybit deletes
    name a held id; OKX also deletes levels beyond the 400 it sent."""

    def bybit_depth(_: str, plain: vc.Plain, __: object) -> None:
        bids, asks = plain
        assert len(bids) == len(asks) == 25  # README: 25 levels per side after every message

    checked = vc.check_rebuilt_books(
        stream_events(shared_data / rel),
        two_sided=True,
        absent_deletes="okx" in rel,
        after_message=bybit_depth if "bybit" in rel else None,
    )
    assert checked > 250


def _okx_pass(path: Path) -> tuple[OkxHandler, RejectStats]:
    handler = OkxHandler()
    return handler, vc.handler_pass(handler, path)


def test_okx_checksum_verifies_every_book_message(shared_data: Path) -> None:
    handler, stats = _okx_pass(shared_data / OKX)
    # README: the checksum matches for all 290 books messages (3 snapshots + 287 updates).
    assert (handler.checksums_ok, handler.checksum_mismatches, handler.unverified) == (290, 0, 0)
    assert stats.rejected == 0


def test_okx_checksum_function_is_order_and_string_sensitive() -> None:
    bids, asks = [("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")]
    value = okx_checksum(bids, asks)
    assert -(2**31) <= value < 2**31
    assert value != okx_checksum(asks, bids)
    assert value != okx_checksum([("3366.10", "7"), ("3366", "6")], asks)


def test_okx_corrupted_update_is_a_checksum_reject_then_gap(
    shared_data: Path, tmp_path: Path
) -> None:
    lines = vc.log_lines(shared_data / OKX)
    target = next(
        i
        for i, line in enumerate(lines)
        if '"action":"update"' in line and '"UNI-USD-SWAP"' in line and '"bids":[[' in line
    )
    stamp, _, body = lines[target].partition(": ")
    msg = json.loads(body)
    bid = msg["data"][0]["bids"][0]
    bid[1] = str(int(bid[1]) + 1) if bid[1] != "0" else "1"  # a size the venue never sent
    lines[target] = f"{stamp}: {json.dumps(msg, separators=(',', ':'))}"
    bad = vc.write_log(tmp_path, "cryptofeed_okx_ws_2022-05-13.log.gz", lines)
    handler, stats = _okx_pass(bad)
    assert (
        handler.checksum_mismatches == 1
        and handler.checksums_ok == 290 - 1 - (_later_updates(lines, target, "UNI-USD-SWAP")[0])
    )
    levels = len(msg["data"][0]["bids"]) + len(msg["data"][0]["asks"])
    assert stats.counts[RowReject.CHECKSUM_MISMATCH] == levels
    later_msgs, later_levels = _later_updates(lines, target, "UNI-USD-SWAP")
    assert later_msgs > 0
    assert stats.counts.get(RowReject.SEQUENCE_GAP, 0) == later_levels
    stream = stream_events(bad)
    list(stream)
    assert stream.stats.balanced() and stream.stats.counts[RowReject.CHECKSUM_MISMATCH] == levels


def _later_updates(lines: list[str], after: int, inst: str) -> tuple[int, int]:
    msgs = levels = 0
    for line in lines[after + 1 :]:
        if f'"channel":"books","instId":"{inst}"}}' in line and '"action"' in line:
            data = json.loads(line.partition(": ")[2])["data"][0]
            msgs += 1
            levels += len(data["bids"]) + len(data["asks"])
    return msgs, levels


def test_okx_seq_ids_chain_when_present(shared_data: Path, tmp_path: Path) -> None:
    """Later OKX versions send seqId/prevSeqId: a broken chain is a gap until a snapshot."""
    lines = vc.log_lines(shared_data / OKX)
    seq: dict[str, int] = defaultdict(int)
    broken = None
    for i, line in enumerate(lines):
        if '"action"' not in line:
            continue
        stamp, _, body = line.partition(": ")
        msg = json.loads(body)
        inst = msg["arg"]["instId"]
        item = msg["data"][0]
        item["prevSeqId"] = -1 if msg["action"] == "snapshot" else seq[inst]
        seq[inst] += 10
        item["seqId"] = seq[inst]
        if broken is None and inst == "BTC-USDT" and msg["action"] == "update" and seq[inst] > 50:
            item["prevSeqId"] += 1
            broken = i
        lines[i] = f"{stamp}: {json.dumps(msg, separators=(',', ':'))}"
    assert broken is not None
    handler, stats = _okx_pass(vc.write_log(tmp_path, "cryptofeed_okx_ws.log.gz", lines))
    assert handler.checksum_mismatches == 0
    _, levels = _later_updates(lines, broken, "BTC-USDT")
    body = json.loads(lines[broken].partition(": ")[2])["data"][0]
    assert stats.counts == {RowReject.SEQUENCE_GAP: levels + len(body["bids"]) + len(body["asks"])}


def test_bybit_unknown_id_is_a_gap_until_next_snapshot(shared_data: Path, tmp_path: Path) -> None:
    lines = vc.log_lines(shared_data / INVERSE)
    target = next(
        i
        for i, line in enumerate(lines)
        if '"type":"delta"' in line and "orderBookL2_25.BTCUSD" in line
    )
    lines[target] = lines[target].replace('"id":', '"id":9', 1)  # an id the book never had
    path = vc.write_log(tmp_path, "recording.log.gz", lines)  # neutral name: detected by content
    assert detect(path).name == "cryptofeed_bybit"
    stream = stream_events(path)
    list(stream)
    stats = stream.stats
    assert stats.balanced() and set(stats.counts) == {RowReject.SEQUENCE_GAP}
    assert "unknown id 9" in stats.examples[0][2]
    later = sum(
        1 for line in lines[target:] if '"topic":"orderBookL2_25.BTCUSD"' in line
    )  # no later BTCUSD snapshot in this file: every later delta waits for one
    assert later > 100
    clean = load_frames(shared_data / INVERSE)[FrameKind.DEPTH]
    first_bad = float(lines[target].partition(": ")[0]) * 1e9
    expected = clean.filter(
        (pl.col("symbol") == "BTCUSD") & (pl.col("ts_recv_ns") >= int(first_bad) - 1_000)
    ).height
    assert stats.counts[RowReject.SEQUENCE_GAP] == expected


def test_venue_detected_by_content_not_name(shared_data: Path, tmp_path: Path) -> None:
    okx = vc.log_lines(shared_data / OKX)
    misnamed = vc.write_log(tmp_path, "cryptofeed_binance_usdm_ws_x.log.gz", okx)
    assert detect(misnamed).name == "cryptofeed_okx"
    no_url = [line for line in okx if not line.startswith("wss://")]  # shapes only
    assert sniff_venue(vc.write_log(tmp_path, "cryptofeed_x.log.gz", no_url)) == "okx"
    bybit = [line for line in vc.log_lines(shared_data / LINEAR) if not line.startswith("wss://")]
    assert sniff_venue(vc.write_log(tmp_path, "cryptofeed_y.log.gz", bybit)) == "bybit"
    huobi = ["wss://api.hbdm.com/swap-ws <-> 1626993367.388005", *no_url]  # no loader yet
    with pytest.raises(DataFileError, match="unsupported venue"):
        detect(vc.write_log(tmp_path, "cryptofeed_huobi_ws.log.gz", huobi))


def test_a_renamed_log_keeps_its_session_label(shared_data: Path, tmp_path: Path) -> None:
    # the label came from the name's date alone: renamed, the log's rows were session ""
    # and data.sessions selected none of them; now the first stamped message's UTC date
    renamed = tmp_path / "okx_capture.log.gz"
    renamed.write_bytes((shared_data / OKX).read_bytes())
    assert detect(renamed).name == "cryptofeed_okx"
    for frame in load_frames(renamed).values():
        assert frame["session"].unique().to_list() == ["2022-05-13"]


@pytest.mark.parametrize("rel", [LINEAR, OKX])
def test_log_without_market_data_is_an_error(shared_data: Path, tmp_path: Path, rel: str) -> None:
    head = [
        line for line in vc.log_lines(shared_data / rel) if '"success"' in line or "event" in line
    ]
    path = vc.write_log(tmp_path, Path(rel).name, vc.log_lines(shared_data / rel)[:1] + head)
    vc.check_no_market_data(path)
    inst = {"BTCUSD": stream_events(shared_data / INVERSE).instrument}
    stream = stream_events(path, inst["BTCUSD"])
    with pytest.raises(DataFileError, match="no market-data"):
        list(stream)


@pytest.mark.parametrize("rel", [LINEAR, INVERSE, OKX])
def test_truncated_file_counts_a_reject(shared_data: Path, tmp_path: Path, rel: str) -> None:
    vc.check_truncations(shared_data / rel, tmp_path, 1 / 2, last_line_cut=0)


SEEDS = [
    (Path(rel).name, vc.seed_lines(rel, lambda lines: lines[:40])) for rel in (LINEAR, INVERSE, OKX)
]


test_mutated_venue_logs_never_raise, test_random_bytes_in_venue_logs_never_raise = vc.fuzz_tests(
    SEEDS
)


@pytest.mark.parametrize(
    ("rel", "fmt"),
    [(LINEAR, "cryptofeed_bybit"), (INVERSE, "cryptofeed_bybit"), (OKX, "cryptofeed_okx")],
)
def test_inspect_venue_logs(
    shared_data: Path, rel: str, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    vc.check_inspect(shared_data / rel, fmt, ("depth", "trades"), capsys)


def test_a_non_finite_bybit_size_is_left_to_the_level_checks_not_raised() -> None:
    # round(inf / step) raised OverflowError out of the loader: a traceback, not a count
    from sapphire.data.cryptofeed_bybit import snap_size

    assert snap_size(float("inf"), 0.001) is None
    assert snap_size(float("nan"), 0.001) is None
