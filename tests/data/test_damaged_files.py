"""Damaged and odd files through the loaders: every readable row is kept, every lost one is
counted on the line it sits on, and nothing vanishes without a count."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pytest

from sapphire.data.registry import stream_events
from sapphire.data.validation import DataFileError, RowReject
from sapphire.model import Instrument
from sapphire.model.events import BookSnapshot

SPOT = Instrument(symbol="BTCUSDT", venue="BINANCE", tick_size="0.01", lot_size="0.00001")
TRADES_H = (
    "session,local_ts_ns,event_ts_ms,trade_ts_ms,trade_id,price,qty,is_buyer_maker,taker_side"
)


def _complete_rows(gz: bytes) -> int:
    text = zlib.decompressobj(31).decompress(gz)
    return text[: text.rfind(b"\n") + 1].count(b"\n") - 1  # minus the header


# a cut .csv.gz loses every readable row of the damaged block (and of the blocks read ahead)
def test_truncated_gzip_keeps_rows_before_the_cut(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "trades" / "hftbacktest_binance-spot_BTCUSDT_trades.csv.gz"
    cut = tmp_path / src.name
    cut.write_bytes(src.read_bytes()[:150_000])
    stream = stream_events(cut)
    events = list(stream)
    assert len(events) == _complete_rows(cut.read_bytes())  # 11,111; was 0
    # told apart from a bad row: the file's rest was never read (the summary says so)
    assert stream.stats.counts == {RowReject.TRUNCATED: 1}


def test_truncated_tardis_keeps_rows_before_the_cut(tmp_path: Path, shared_data: Path) -> None:
    src = (
        shared_data / "trades" / "nautilus_tardis_binance-futures_trades_BTCUSDT_2020-02-22.csv.gz"
    )
    cut = tmp_path / src.name
    cut.write_bytes(src.read_bytes()[:70_000])
    assert len(list(stream_events(cut))) == _complete_rows(cut.read_bytes())  # 4,989; was 0


# rejected-row line numbers after a skipped (wrong field count) or blank line
def _trades_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "hftbacktest_binance-spot_BTCUSDT_trades.csv.gz"
    path.write_bytes(gzip.compress(("\n".join([TRADES_H, *lines]) + "\n").encode()))
    return path


# 2024-08-08 in ms and ns: a file whose first time is before 2009 is refused (wrong unit)
GOOD = "s,1723075200001000000,1723075200001,1723075200001,{i},61602.01,0.001,0,buy"
BAD_PRICE = "s,1723075200009000000,1723075200009,1723075200009,9,abc,0.001,0,buy"


def test_line_after_invalid_row(tmp_path: Path) -> None:
    stream = stream_events(
        _trades_file(tmp_path, [GOOD.format(i=1), GOOD.format(i=2) + ",x", BAD_PRICE]), SPOT
    )
    list(stream)
    assert [line for line, _, _ in stream.stats.examples] == [3, 4]  # was [3, 3]


def test_line_after_blank_line(tmp_path: Path) -> None:
    stream = stream_events(_trades_file(tmp_path, [GOOD.format(i=1), "", BAD_PRICE]), SPOT)
    list(stream)
    assert [line for line, _, _ in stream.stats.examples] == [4]  # was [3]


# basana levels that do not parse vanish from the stream's stats; and since a depth message
# is one book state, a bad level refuses the whole message (every level counted), never a
# diff applied with holes in it
def test_basana_bad_levels_are_counted(tmp_path: Path, shared_data: Path) -> None:
    msg = json.loads((shared_data / "book" / "basana_binance_depth_update.json").read_text())
    levels = len(msg["b"]) + len(msg["a"])
    msg["b"] = [["abc", "1.0"], ["no-size"], *msg["b"]]
    path = tmp_path / "basana_binance_depth_update.json"
    path.write_text(json.dumps(msg))
    stream = stream_events(path)
    assert list(stream) == []
    assert stream.stats.counts == {RowReject.MALFORMED: levels + 2}  # was None, then 2
    assert stream.stats.balanced()


# a snapshot listing one price twice: last size wins silently, both rows "delivered"
def test_snapshot_repeated_price(tmp_path: Path) -> None:
    head = (
        "session,local_ts_ns,event_ts_ms,txn_ts_ms,is_snapshot,first_update_id,"
        "final_update_id,prev_final_update_id,side,price,qty"
    )
    row = "s,1723161253000000000,1723161253000,,1,0,100,0,{},{},{}"
    rows = [
        row.format("bid", "61602.01", "1.5"),
        row.format("bid", "61602.01", "2.0"),
        row.format("ask", "61602.02", "1.0"),
    ]
    path = tmp_path / "hftbacktest_binance-spot_BTCUSDT_depth.csv.gz"
    path.write_bytes(gzip.compress(("\n".join([head, *rows]) + "\n").encode()))
    stream = stream_events(path, SPOT)
    (snap,) = [e for e in stream if isinstance(e, BookSnapshot)]
    levels = len(snap.bids) + len(snap.asks)
    assert stream.stats.rows_out == levels  # was rows_out 3, levels 2
    assert stream.stats.counts.get(RowReject.MALFORMED) == 1  # was no reject at all


def test_lines_keep_their_numbers_across_blocks(tmp_path: Path) -> None:
    # the parser reads a block ahead: the invalid lines of the next block were taken for this
    # one's, and every later row was numbered a line off
    from sapphire.data.stream import csv_string_chunks
    from sapphire.data.validation import RejectStats

    lines = [f"{i},{i},{i}" if i % 7 else "bad" for i in range(40)] + ["", "", "z,z,z"]
    path = tmp_path / "blocks.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(["a,b,c", *lines]) + "\n").encode()))
    stats = RejectStats(source=str(path))
    rows = [
        (first + k, row[0])
        for first, frame in csv_string_chunks(path, stats, block_size=64)
        for k, row in enumerate(frame.rows())
    ]
    # file line n + 2 holds lines[n] (line 1 is the header)
    expected = [(n + 2, text.split(",")[0]) for n, text in enumerate(lines) if "," in text]
    assert rows == expected
    assert [line for line, _, _ in stats.examples] == [2, 9, 16, 23, 30]
    assert stats.counts == {RowReject.MALFORMED: 6}


def test_a_row_of_empty_fields_is_counted_not_dropped_as_a_blank_line(tmp_path: Path) -> None:
    stream = stream_events(
        _trades_file(tmp_path, [GOOD.format(i=1), ",,,,,,,,", "", BAD_PRICE]), SPOT
    )
    assert len(list(stream)) == 1
    assert [line for line, _, _ in stream.stats.examples] == [3, 5]  # the blank line 4: no row


DEPTH_H = (
    "session,local_ts_ns,event_ts_ms,txn_ts_ms,is_snapshot,first_update_id,"
    "final_update_id,prev_final_update_id,side,price,qty"
)


def _snapshot_with(tmp_path: Path, field: str, value: str) -> Path:
    """A 4-level snapshot whose third level has ``field`` set to ``value``."""
    row = {
        "session": "s",
        "local_ts_ns": "1723161253000000000",
        "event_ts_ms": "1723161253000",
        "txn_ts_ms": "",
        "is_snapshot": "1",
        "first_update_id": "0",
        "final_update_id": "100",
        "prev_final_update_id": "0",
    }
    levels = [("bid", "61602.01"), ("bid", "61602.00"), ("ask", "61602.02"), ("ask", "61602.03")]
    lines = [DEPTH_H]
    for i, (side, price) in enumerate(levels):
        fields = dict(row, side=side, price=price, qty="1.0")
        if i == 2:
            fields[field] = value
        lines.append(",".join(fields[c] for c in DEPTH_H.split(",")))
    path = tmp_path / f"{field}/hftbacktest_binance-spot_BTCUSDT_depth.csv.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


@pytest.mark.parametrize(
    "field",
    ["event_ts_ms", "local_ts_ns", "final_update_id", "first_update_id", "prev_final_update_id"],
)
def test_an_unparseable_field_is_a_counted_row_and_keeps_the_snapshot_whole(
    tmp_path: Path, field: str
) -> None:
    # the loader filled such fields (an id 0, the event time from the receive time) before
    # checking them: the row was delivered as another message, which cut the snapshot in
    # two and the second part, a snapshot of its own, replaced the book with one side
    stream = stream_events(_snapshot_with(tmp_path, field, "abc"), SPOT)
    events = list(stream)
    assert stream.stats.counts == {RowReject.MALFORMED: 1}
    (snap,) = events
    assert isinstance(snap, BookSnapshot) and (len(snap.bids), len(snap.asks)) == (2, 1)


def test_a_rejected_row_inside_a_snapshot_does_not_cut_it(tmp_path: Path) -> None:
    # a parseable but earlier receive time: out of order, rejected; the snapshot stays one
    stream = stream_events(_snapshot_with(tmp_path, "local_ts_ns", "1723161252000000000"), SPOT)
    events = list(stream)
    assert stream.stats.counts == {RowReject.OUT_OF_ORDER: 1}
    (snap,) = events
    assert isinstance(snap, BookSnapshot) and (len(snap.bids), len(snap.asks)) == (2, 1)


def test_trades_need_one_aggressor_column_not_both(tmp_path: Path) -> None:
    head = "session,local_ts_ns,event_ts_ms,trade_ts_ms,trade_id,price,qty"
    row = "s,1723161253000000000,1723161253000,1723161253000,7,61602.01,0.5"
    for extra, value in (("taker_side", "buy"), ("is_buyer_maker", "1")):
        path = tmp_path / extra / "hftbacktest_binance-spot_BTCUSDT_trades.csv"
        path.parent.mkdir()
        path.write_text(f"{head},{extra}\n{row},{value}\n")
        assert len(list(stream_events(path, SPOT))) == 1
    bare = tmp_path / "hftbacktest_binance-spot_BTCUSDT_trades.csv"
    bare.write_text(f"{head}\n{row}\n")
    with pytest.raises(DataFileError, match="taker_side"):
        list(stream_events(bare, SPOT))


def test_one_far_future_timestamp_costs_one_row_not_the_rest_of_the_file(
    tmp_path: Path,
) -> None:
    """A corrupt timestamp (years ahead) became the file's time: every good row after it was
    "out of order", the whole rest of the file rejected. Now that row alone is."""
    base = 1_723_100_000_000_000_000

    def row(i: int, local_ns: int) -> str:
        return f"s,{local_ns},{local_ns // 10**6},{local_ns // 10**6},{i},61602.01,0.001,0,buy"

    rows = [row(i, base + i * 10**6) for i in range(1, 7)]
    rows.insert(3, row(99, base + 10**17))  # three years ahead
    stream = stream_events(_trades_file(tmp_path, rows), SPOT)
    events = list(stream)
    assert [e.trade_id for e in events] == [1, 2, 3, 4, 5, 6]  # type: ignore[union-attr]
    assert stream.stats.counts == {RowReject.OUT_OF_ORDER: 1}
    assert stream.stats.examples[0][0] == 5 and "ahead" in stream.stats.examples[0][2]
    # a real gap (a day with no trades) is no jump: the rows after it do not come back
    gap = [row(1, base), row(2, base + 86_400 * 10**9), row(3, base + 86_401 * 10**9)]
    stream = stream_events(_trades_file(tmp_path, gap), SPOT)
    assert len(list(stream)) == 3 and not stream.stats.counts


def test_one_row_placed_seconds_early_costs_that_row_not_the_seconds_after_it(
    tmp_path: Path,
) -> None:
    """A row 30 s ahead of its neighbours (a row moved up a file): taken as the run's time, the
    1,000 good rows of the next 30 s after it were all "out of order". Now that row alone is;
    two rows merely swapped still cost the later one, as before."""
    base = 1_723_100_000_000_000_000

    def row(i: int, local_ns: int) -> str:
        return f"s,{local_ns},{local_ns // 10**6},{local_ns // 10**6},{i},61602.01,0.001,0,buy"

    rows = [row(i, base + i * 30 * 10**6) for i in range(1, 1_002)]  # every 30 ms
    rows.insert(10, row(99_999, base + 30_300 * 10**6))  # 30 s past the row before it
    stream = stream_events(_trades_file(tmp_path, rows), SPOT)
    events = list(stream)
    assert len(events) == 1_001 and 99_999 not in {e.trade_id for e in events}  # type: ignore[union-attr]
    assert stream.stats.counts == {RowReject.OUT_OF_ORDER: 1}
    assert "30.000 s ahead" in stream.stats.examples[0][2]
    swapped = [
        row(1, base),
        row(3, base + 3 * 10**6),
        row(2, base + 2 * 10**6),
        row(4, base + 4 * 10**6),
    ]
    stream = stream_events(_trades_file(tmp_path, swapped), SPOT)
    assert [e.trade_id for e in stream] == [1, 3, 4]  # type: ignore[union-attr]
    assert stream.stats.counts == {RowReject.OUT_OF_ORDER: 1}


def test_a_block_of_misplaced_rows_costs_those_rows_not_the_time_after_them(
    tmp_path: Path,
) -> None:
    """Two rows moved up a file together (30 s ahead), three with a far-future year: each
    block alone is out of order, not the good rows until time caught up with it. A block
    that fewer rows come back from than it holds is not taken for misplaced: two rows ahead
    of one late row cost the late one, as the order check always did."""
    base = 1_723_100_000_000_000_000

    def row(i: int, local_ns: int) -> str:
        return f"s,{local_ns},{local_ns // 10**6},{local_ns // 10**6},{i},61602.01,0.001,0,buy"

    rows = [row(i, base + i * 30 * 10**6) for i in range(1, 2_002)]  # every 30 ms
    rows[500:500] = [row(90_001, base + 30_300 * 10**6), row(90_002, base + 30_301 * 10**6)]
    far = base + 50 * 365 * 86_400 * 10**9  # 50 years on
    rows[1_500:1_500] = [row(90_003 + j, far + j) for j in range(3)]
    stream = stream_events(_trades_file(tmp_path, rows), SPOT)
    ids = [e.trade_id for e in stream]  # type: ignore[union-attr]
    assert ids == list(range(1, 2_002))  # every good row, in order
    assert stream.stats.counts == {RowReject.OUT_OF_ORDER: 5}
    assert [x[2] for x in stream.stats.examples[:2]] == [
        "time jumps 15.300 s ahead; the rows around it agree",  # of the row before the block
        "time jumps 15.301 s ahead; the rows around it agree",
    ]
    # two rows ahead, one row back, then the file goes on past them: not a misplaced block
    # (one row does not outvote two): the late row is the one out of order
    short = [
        row(1, base),
        row(2, base + 10 * 10**6),
        row(3, base + 11 * 10**6),
        row(4, base + 5 * 10**6),
        row(5, base + 12 * 10**6),
        row(6, base + 13 * 10**6),
    ]
    stream = stream_events(_trades_file(tmp_path, short), SPOT)
    assert [e.trade_id for e in stream] == [1, 2, 3, 5, 6]  # type: ignore[union-attr]
    assert stream.stats.counts == {RowReject.OUT_OF_ORDER: 1}


def test_a_data_file_error_is_one_line_without_the_parsers_own_hints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Renamed columns: polars says 'Did you mean "trade_ms"?' on a line of its own; a
    command's error is one line (kept, joined), and a hint naming polars' own API
    ("Consider setting 'truncate_ragged_lines=True'") is no help to a command's user."""
    import gzip

    from sapphire.cli import main
    from sapphire.data.sample import sample_paths
    from sapphire.data.validation import DataFileError

    text = gzip.decompress(sample_paths().trades.read_bytes()).decode()
    head, _, body = text.partition("\n")
    path = tmp_path / sample_paths().trades.name.removesuffix(".gz")
    short = "session,local_ts,event_ms,trade_ms,id,px,size,ibm,side"  # a user's own names
    assert len(head.split(",")) == len(short.split(","))
    path.write_text(short + "\n" + body)
    assert main(["data", "inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'Did you mean "trade_ms"?' in err
    joined = DataFileError("f.csv: cannot read CSV: bad\n\nConsider setting 'x=True'.\n")
    assert str(joined) == "f.csv: cannot read CSV: bad"


def test_diffs_stamped_early_by_the_recorders_clock_keep_their_chain(tmp_path: Path) -> None:
    """The recorder's clock stepped back 0.5 s under three depth messages whose exchange
    times and update ids run on: they were dropped as out of order, the chain broke there,
    and the venue's book stayed out of sync until the next snapshot (5,628 orders expired).
    They are kept; a message that does not carry the chain on is still refused."""
    from sapphire.data.registry import stream_events
    from sapphire.data.sample import sample_instrument, sample_paths
    from sapphire.data.validation import RejectStats, RowReject
    from sapphire.model.events import BookDelta

    text = gzip.decompress(sample_paths().depth.read_bytes()).decode().splitlines()
    head, rows = text[0], [r.split(",") for r in text[1:20_000]]
    finals = list(dict.fromkeys(r[6] for r in rows if r[4] == "0"))
    mid = len(finals) // 2
    early = set(finals[mid : mid + 3])  # three diffs, each a whole message
    for r in rows:
        if r[6] in early:
            r[1] = str(int(r[1]) - 500_000_000)

    def stream(name: str, lines: list[list[str]]) -> tuple[list[object], RejectStats]:
        path = tmp_path / name / sample_paths().depth.name
        path.parent.mkdir()
        path.write_bytes(gzip.compress(("\n".join([head, *map(",".join, lines)]) + "\n").encode()))
        events = stream_events(path, {"BTCUSDT": sample_instrument()})
        return list(events), events.stats

    kept, stats = stream("early", rows)
    assert stats.counts == {}, stats.counts  # no out_of_order, no sequence_gap
    clean, _ = stream("clean", [r.split(",") for r in text[1:20_000]])
    ids = lambda evs: [e.final_update_id for e in evs if isinstance(e, BookDelta)]  # noqa: E731
    assert ids(kept) == ids(clean)
    # a message early by the clock that does not carry the chain on is still refused
    broken = [list(r) for r in rows]
    for r in broken:
        if r[6] == finals[mid + 10]:
            r[1], r[7] = str(int(r[1]) - 500_000_000), "1"  # and its pu names no message
    _, stats = stream("broken", broken)
    assert stats.counts.get(RowReject.OUT_OF_ORDER) == 1
    assert [line for line, why, _ in stats.examples if why is RowReject.OUT_OF_ORDER] == [
        next(i for i, r in enumerate(broken, start=2) if r[6] == finals[mid + 10])
    ]
