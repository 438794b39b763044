"""Tardis.dev CSVs: the shared samples, book rebuilding, reject reasons, content detection, fuzz."""

from __future__ import annotations

import gzip
import itertools
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.book.l2 import L2Book
from sapphire.data.registry import detect, load_frame, stream_events
from sapphire.data.tardis import stream_tardis
from sapphire.data.validation import DataFileError, RowReject
from sapphire.model import Instrument
from sapphire.model.events import BookDelta, BookSnapshot, FundingRate, Quote, Side, Trade

FILES = {
    "book/nautilus_tardis_binance-futures_book_snapshot_5_BTCUSDT_2020-09-01.csv": (
        "tardis_book_snapshot",
        "BTCUSDT",
    ),
    "book/nautilus_tardis_binance-futures_book_snapshot_25_BTCUSDT_2020-09-01.csv": (
        "tardis_book_snapshot",
        "BTCUSDT",
    ),
    "book/nautilus_tardis_binance-futures_quotes_BTCUSDT_2020-02-22.csv.gz": (
        "tardis_quotes",
        "BTCUSDT",
    ),
    "book/nautilus_tardis_huobi-dm-swap_quotes_BTC-USD_2020-05-01.csv": (
        "tardis_quotes",
        "BTC-USD",
    ),
    "book/nautilus_tardis_deribit_incremental_book_L2_BTC-PERPETUAL_2020-04-01.csv": (
        "tardis_incremental_book_L2",
        "BTC-PERPETUAL",
    ),
    "trades/nautilus_tardis_binance-futures_trades_BTCUSDT_2020-02-22.csv.gz": (
        "tardis_trades",
        "BTCUSDT",
    ),
    "trades/nautilus_tardis_bitmex_trades_XBTUSD_2020-03-01.csv": ("tardis_trades", "XBTUSD"),
}
HEAD = "exchange,symbol,timestamp,local_timestamp"
INST = Instrument(symbol="BTCUSDT", venue="TEST", tick_size="0.5", lot_size="1")


# The rows below are written in microseconds from this instant (2020-09-13): a file whose first
# time is before any crypto market is refused as a time column in the wrong unit.
T0_US = 1_600_000_000_000_000
T0_NS = T0_US * 1000


def _dated(row: str, fields: tuple[int, ...]) -> str:
    parts = row.split(",")
    for i in fields:
        if i < len(parts) and parts[i].isdigit():
            parts[i] = str(T0_US + int(parts[i]))
    return ",".join(parts)


def _write(
    tmp: Path, name: str, header: str, rows: list[str], times: tuple[int, ...] = (2, 3)
) -> Path:
    path = tmp / name
    text = "\n".join([f"{HEAD},{header}", *(_dated(r, times) for r in rows)]) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    return path


@pytest.mark.parametrize("rel", sorted(FILES))
def test_shared_tardis_file_streams_clean(shared_data: Path, rel: str) -> None:
    fmt, symbol = FILES[rel]
    path = shared_data / rel
    assert detect(path).name == fmt
    frame = load_frame(path)
    stream = stream_events(path)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    assert stream.stats.rows_out == frame.height > 0
    assert {e.symbol for e in events} == {symbol}
    # µs -> ns on both clocks; Tardis receives after the exchange stamps.
    assert all(e.ts_event_ns % 1000 == 0 and e.ts_recv_ns >= e.ts_event_ns for e in events)


def test_binance_trades_ids_and_sides(shared_data: Path) -> None:
    path = shared_data / "trades/nautilus_tardis_binance-futures_trades_BTCUSDT_2020-02-22.csv.gz"
    trades = [e for e in stream_events(path) if isinstance(e, Trade)]
    ids = [t.trade_id for t in trades]
    assert ids == list(range(42_377_944, 42_387_943))  # README: no gaps
    raw = gzip.decompress(path.read_bytes()).decode().splitlines()[1:]
    assert [t.taker_side for t in trades] == [
        Side.BUY if r.split(",")[5] == "buy" else Side.SELL for r in raw
    ]
    assert {t.taker_side for t in trades} == {Side.BUY, Side.SELL}


def test_inverse_sizes_stay_in_venue_units(shared_data: Path) -> None:
    """BitMEX XBTUSD amounts are 1-USD contracts, Deribit's USD: no conversion to BTC."""
    bitmex = stream_events(
        shared_data / "trades/nautilus_tardis_bitmex_trades_XBTUSD_2020-03-01.csv"
    )
    trades = [e for e in bitmex if isinstance(e, Trade)]
    assert isinstance(bitmex.instrument, dict)
    assert bitmex.instrument["XBTUSD"].lot_size == "1"
    assert trades[0].qty_lots == 2152 and trades[0].trade_id == 0  # UUID ids have no int
    deribit = stream_events(
        shared_data
        / "book/nautilus_tardis_deribit_incremental_book_L2_BTC-PERPETUAL_2020-04-01.csv"
    )
    (snap,) = list(deribit)
    assert isinstance(snap, BookSnapshot) and not snap.bids and len(snap.asks) == 15
    assert snap.asks[0] == (64_215, 18_640)  # tick 0.1 inferred; 18640 USD
    assert all(qty % 10 == 0 for _, qty in snap.asks)


def _check_book(events: Sequence[object]) -> tuple[dict[int, int], dict[int, int], int]:
    """Rebuild a book with plain dicts and assert it is uncrossed after every applied message;
    an L2Book fed the same updates must agree (its crossing rule never had to fire)."""
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    book = L2Book("X")
    checks = 0
    for event in events:
        if isinstance(event, BookSnapshot):
            bids, asks = dict(event.bids), dict(event.asks)
            book.clear()
            book.apply_snapshot(event)
        elif isinstance(event, BookDelta):
            side = bids if event.side is Side.BUY else asks
            if event.qty_lots:
                side[event.price_ticks] = event.qty_lots
            else:
                side.pop(event.price_ticks, None)
            book.set_level(event.side, event.price_ticks, event.qty_lots)
            if not event.last_in_batch:
                continue
        else:
            continue
        checks += 1
        assert not (bids and asks and max(bids) >= min(asks)), f"crossed after {event}"
        assert book.levels(Side.BUY) == sorted(bids.items(), reverse=True)
        assert book.levels(Side.SELL) == sorted(asks.items())
    return bids, asks, checks


@pytest.mark.parametrize("depth", [5, 25])
def test_snapshot_n_books_never_cross(shared_data: Path, depth: int) -> None:
    name = f"nautilus_tardis_binance-futures_book_snapshot_{depth}_BTCUSDT_2020-09-01.csv"
    events = list(stream_events(shared_data / "book" / name))
    assert all(isinstance(e, BookSnapshot) for e in events)
    assert all(len(e.bids) == len(e.asks) == depth for e in events if isinstance(e, BookSnapshot))
    assert _check_book(events)[2] == 10


def test_snapshot_5_top_equals_snapshot_25_top(shared_data: Path) -> None:
    book = shared_data / "book"
    five, twenty_five = (
        {
            e.ts_event_ns: e
            for e in stream_events(
                book / f"nautilus_tardis_binance-futures_book_snapshot_{n}_BTCUSDT_2020-09-01.csv",
                Instrument(symbol="BTCUSDT", venue="T", tick_size="0.01", lot_size="0.001"),
            )
            if isinstance(e, BookSnapshot)
        }
        for n in (5, 25)
    )
    common = sorted(five.keys() & twenty_five.keys())
    assert len(common) == 4
    for ts in common:
        assert five[ts].bids == twenty_five[ts].bids[:5]
        assert five[ts].asks == twenty_five[ts].asks[:5]


INCREMENTAL = [
    # first snapshot run: spans two timestamps and is one book
    "deribit,BTCUSDT,1000,1100,true,bid,100,5",
    "deribit,BTCUSDT,1000,1100,true,bid,99.5,3",
    "deribit,BTCUSDT,1001,1101,true,ask,101,4",
    "deribit,BTCUSDT,1001,1101,true,ask,102,6",
    # one message: new best ask, delete old best bid
    "deribit,BTCUSDT,2000,2100,false,ask,100.5,2",
    "deribit,BTCUSDT,2000,2100,false,bid,100,0",
    "deribit,BTCUSDT,3000,3100,false,bid,100,7",
    # a second run replaces the whole book (levels 99.5/101/102 must disappear)
    "deribit,BTCUSDT,4000,4100,true,bid,90,1",
    "deribit,BTCUSDT,4000,4100,true,ask,91,1",
    "deribit,BTCUSDT,5000,5100,false,ask,92,8",
]


@pytest.mark.parametrize("block_size", [80, 1 << 22])
def test_incremental_l2_snapshot_runs_replace_the_book(tmp_path: Path, block_size: int) -> None:
    """Small blocks put runs and messages across chunk boundaries: same events either way."""
    path = _write(tmp_path, "l2.csv", "is_snapshot,side,price,amount", INCREMENTAL)
    assert detect(path).name == "tardis_incremental_book_L2"
    stream = stream_tardis(path, INST, block_size=block_size)
    events = list(stream)
    assert stream.stats.balanced() and stream.stats.rejected == 0
    snaps = [e for e in events if isinstance(e, BookSnapshot)]
    assert len(snaps) == 2
    assert snaps[0].bids == ((200, 5), (199, 3)) and snaps[0].asks == ((202, 4), (204, 6))
    assert (snaps[0].ts_event_ns, snaps[0].ts_recv_ns) == (T0_NS + 1_000_000, T0_NS + 1_100_000)
    bids, asks, checks = _check_book(events)
    assert checks == 5  # 2 snapshots + 3 delta messages
    assert (bids, asks) == ({180: 1}, {182: 1, 184: 8})
    deltas = [e for e in events if isinstance(e, BookDelta)]
    assert [d.last_in_batch for d in deltas] == [False, True, True, True]


@pytest.mark.parametrize("block_size", [80, 1 << 22])
def test_incremental_l2_updates_before_the_first_snapshot_are_skipped_and_counted(
    tmp_path: Path, block_size: int
) -> None:
    """Tardis: skip updates until the first snapshot. Applied, a file cut mid-day gave the
    venue a partial book (here crossed: bid 103 over ask 101) that it took as synced."""
    early = [
        "deribit,BTCUSDT,500,600,false,bid,103,1",
        "deribit,BTCUSDT,700,800,false,ask,98,2",
        "deribit,BTCUSDT,900,950,false,bid,103,0",
    ]
    path = _write(tmp_path, "l2.csv", "is_snapshot,side,price,amount", early + INCREMENTAL)
    stream = stream_tardis(path, INST, block_size=block_size)
    events = list(stream)
    assert stream.stats.counts == {RowReject.BEFORE_SNAPSHOT: len(early)}
    assert stream.stats.balanced() and stream.stats.rows_in == len(early) + len(INCREMENTAL)
    # the book is the one the rows from the snapshot on make, as without the early rows
    assert _check_book(events)[:2] == ({180: 1}, {182: 1, 184: 8})
    assert isinstance(events[0], BookSnapshot)


def test_incremental_l2_shared_file_book(shared_data: Path) -> None:
    path = (
        shared_data
        / "book/nautilus_tardis_deribit_incremental_book_L2_BTC-PERPETUAL_2020-04-01.csv"
    )
    bids, asks, checks = _check_book(list(stream_events(path)))
    assert checks == 1 and not bids and len(asks) == 15  # the README's truncated snapshot


def test_rejects_are_counted_with_reasons(tmp_path: Path) -> None:
    rows = [
        "x,BTCUSDT,1000,1100,1,buy,100,2",
        "x,BTCUSDT,2000,2100,2,sell,nan,2",  # non-finite
        "x,BTCUSDT,2000,2100,3,buy,100,-1",  # negative size
        "x,BTCUSDT,3000,3100,4,buy,100,1,extra",  # wrong field count
        "x,BTCUSDT,abc,3100,5,buy,100,1",  # unparseable timestamp
        "x,BTCUSDT,4000,4100,6,unknown,100,1",  # no taker side
        "x,BTCUSDT,500,600,7,buy,100,1",  # out of order (receive time)
        "x,BTCUSDT,5000,5100,8,buy,100.25,1",  # off the 0.5 grid
        "x,BTCUSDT,6000,6100,1,buy,100,1",  # duplicate id
        "x,BTCUSDT,7000,7100,9,sell,100.5,3",
    ]
    stream = stream_events(_write(tmp_path, "t.csv.gz", "id,side,price,amount", rows), INST)
    trades = [e for e in stream if isinstance(e, Trade)]
    assert [t.trade_id for t in trades] == [1, 9]
    assert stream.stats.counts == {
        RowReject.NON_FINITE: 1,
        RowReject.NEGATIVE_QTY: 1,
        RowReject.MALFORMED: 3,
        RowReject.OUT_OF_ORDER: 1,
        RowReject.OFF_GRID: 1,
        RowReject.DUPLICATE_TRADE_ID: 1,
    }
    assert stream.stats.balanced() and stream.stats.rows_in == len(rows)


def test_quotes_and_snapshot_rejects(tmp_path: Path) -> None:
    quotes = _write(
        tmp_path,
        "q.csv",
        "ask_amount,ask_price,bid_price,bid_amount",
        ["x,BTCUSDT,1,2,1,101,100,1", "x,BTCUSDT,3,4,1,100,100,1", "x,BTCUSDT,5,6,1,,100,1"],
    )
    stream = stream_events(quotes, INST)
    assert [type(e) for e in stream] == [Quote]
    assert stream.stats.counts == {RowReject.CROSSED_BOOK: 1, RowReject.MALFORMED: 1}
    header = "asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,"
    header += "asks[1].price,asks[1].amount,bids[1].price,bids[1].amount"
    snaps = _write(
        tmp_path,
        "s.csv",
        header,
        [
            "x,BTCUSDT,1,2,101,1,100,2,102,3,,",  # thin bid side: 3 levels, no reject
            "x,BTCUSDT,3,4,101,1,100,-2,102,3,99,1",  # one negative level
            "x,BTCUSDT,5,6,101,1,101.5,2,102,3,99,1",  # crossed: no book takes it
        ],
    )
    stream = stream_events(snaps, INST)
    books = [e for e in stream if isinstance(e, BookSnapshot)]
    assert len(books) == 2
    assert books[0].bids == ((200, 2),) and books[0].asks == ((202, 1), (204, 3))
    assert books[1].bids == ((198, 1),)
    # the crossed one whole (its 4 levels), counted; a venue fed it stopped the run
    assert stream.stats.counts == {RowReject.NEGATIVE_QTY: 1, RowReject.CROSSED_BOOK: 4}
    assert stream.stats.balanced()
    assert stream.stats.rows_in == 11 and stream.stats.balanced()


def test_derivative_ticker_funding_is_one_event_per_settled_period(tmp_path: Path) -> None:
    """A ticker row re-sends the open period's rate every second or so: a position pays it
    once, when the period ends (``funding_timestamp``), at the last rate announced."""
    header = "funding_timestamp,funding_rate,predicted_funding_rate,open_interest,last_price"
    rows = [
        "x,BTCUSDT,1,2,9,0.0001,0.0002,5,100",
        "x,BTCUSDT,3,4,9,,,5,100",  # no rate: a mark/OI update
        "x,BTCUSDT,5,6,9,x,,5,1",  # malformed
        "x,BTCUSDT,7,8,9,0.0002,,5,1",  # the period's rate moved
        "x,BTCUSDT,10,11,17,0.0003,,5,1",  # the next period began: the one ending at 9 settled
        "x,BTCUSDT,12,13,17,0.0004,,5,1",
        "x,BTCUSDT,14,15,q,0.0004,,5,1",  # malformed funding_timestamp
    ]
    stream = stream_events(_write(tmp_path, "d.csv", header, rows, times=(2, 3, 4)))
    assert stream.format == "tardis_derivative_ticker"
    events = [e for e in stream if isinstance(e, FundingRate)]
    assert [(e.ts_event_ns, e.rate) for e in events] == [(T0_NS + 9_000, "0.0002")]
    assert events[0].ts_recv_ns == T0_NS + 11_000  # when it became known
    assert stream.stats.counts == {RowReject.MALFORMED: 2}
    assert stream.stats.ignored == 4 and stream.stats.balanced()
    without = _write(tmp_path, "e.csv", "funding_rate,last_price", ["x,BTCUSDT,1,2,0.1,3"])
    with pytest.raises(DataFileError, match="funding_timestamp"):
        list(stream_events(without))


def test_a_funding_rate_without_a_settlement_time_is_counted_never_charged(
    tmp_path: Path,
) -> None:
    """Deribit's funding accrues continuously: Tardis's rows carry ``current_funding`` and no
    ``funding_timestamp``. Each row became a payment (a position paid the rate at every
    ticker update, ~86,400 times a day); now each is counted as settling nothing."""
    header = "funding_timestamp,funding_rate,last_price"
    rows = [f"deribit,BTC-PERPETUAL,{t},{t + 1},,0.0001,30000" for t in range(0, 5_000, 1_000)]
    rows.append("deribit,BTC-PERPETUAL,6000,6001,,,30000")  # no rate: a price update
    stream = stream_events(_write(tmp_path, "d.csv", header, rows, times=(2, 3)))
    assert not [e for e in stream if isinstance(e, FundingRate)]
    assert stream.stats.counts == {RowReject.NO_SETTLEMENT_TIME: 5}
    assert stream.stats.ignored == 1 and stream.stats.balanced()
    assert "no_settlement_time=5" in stream.stats.summary()


def test_detected_by_content_not_name(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "trades/nautilus_tardis_binance-futures_trades_BTCUSDT_2020-02-22.csv.gz"
    renamed = tmp_path / "BTCUSDT.csv.gz"
    shutil.copy(src, renamed)
    assert detect(renamed).name == "tardis_trades"
    assert sum(1 for _ in stream_events(renamed)) == 9_999
    liquidations = tmp_path / "liquidations" / "BTCUSDT.csv.gz"
    liquidations.parent.mkdir()
    shutil.copy(src, liquidations)
    with pytest.raises(DataFileError, match="liquidations"):
        stream_events(liquidations)
    chain = _write(tmp_path, "opt.csv", "type,strike_price,expiration", ["deribit,X,1,2,put,1,3"])
    assert detect(chain).name == "tardis_csv"
    with pytest.raises(DataFileError, match="not a supported Tardis CSV"):
        stream_events(chain)
    named = tmp_path / "nautilus_tardis_other.csv"
    named.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataFileError, match="not a supported Tardis CSV"):
        stream_events(named)


def test_truncated_file_counts_its_broken_tail(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "book/nautilus_tardis_binance-futures_quotes_BTCUSDT_2020-02-22.csv.gz"
    data = gzip.decompress(src.read_bytes())
    head = data[: data.index(b",", len(data) // 2) + 1]  # ends inside a row, after a comma
    cut = tmp_path / "cut.csv"
    cut.write_bytes(head)
    stream = stream_events(cut)
    events = list(stream)
    assert stream.stats.balanced()
    # a last line with no end of line is a cut file, told apart from a bad row
    assert stream.stats.counts == {RowReject.TRUNCATED: 1}
    assert len(events) == head.count(b"\n") - 1  # every complete row but the header
    short_gz = tmp_path / "cut.csv.gz"
    short_gz.write_bytes(src.read_bytes()[: src.stat().st_size // 2])  # gzip stream cut
    stream = stream_events(short_gz)
    events = list(stream)
    assert stream.stats.balanced()
    assert stream.stats.counts.get(RowReject.TRUNCATED, 0) == 1


_SEEDS = [
    (
        "t.csv",
        f"{HEAD},is_snapshot,side,price,amount\n" + "\n".join(INCREMENTAL) + "\n",
    ),
    ("q.csv.gz", f"{HEAD},ask_amount,ask_price,bid_price,bid_amount\nx,BTCUSDT,1,2,1,101,100,1\n"),
    (
        "s.csv",
        f"{HEAD},asks[0].price,asks[0].amount,bids[0].price,bids[0].amount\nx,BTCUSDT,1,2,101,1,100,2\n",
    ),
    (
        "tr.csv",
        f"{HEAD},id,side,price,amount\nx,BTCUSDT,1,2,7,buy,100,1\nx,BTCUSDT,3,4,8,sell,9,2\n",
    ),
]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_SEEDS),
    st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), max_size=10),
    st.integers(0, 400),
    st.booleans(),
)
def test_fuzzed_tardis_bytes_never_raise(
    seed: tuple[str, str], flips: list[tuple[int, int]], cut: int, infer: bool
) -> None:
    name, text = seed
    buf = bytearray(text.encode())
    for pos, value in flips:
        buf[len(HEAD) + 1 + pos % (len(buf) - len(HEAD) - 1)] = value  # keep it a Tardis CSV
    payload = bytes(buf[: max(len(HEAD), len(buf) - cut)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(gzip.compress(payload) if name.endswith(".gz") else payload)
        try:
            stream = stream_events(path, None if infer else INST)
            events = list(stream)
        except DataFileError:
            return
        assert stream.stats.balanced()
        assert stream.stats.events_out == len(events)


@pytest.mark.parametrize("rel", sorted(FILES))
def test_cli_inspect(shared_data: Path, rel: str, capsys: pytest.CaptureFixture[str]) -> None:
    from sapphire.cli import main

    assert main(["data", "inspect", str(shared_data / rel)]) == 0
    out = capsys.readouterr().out
    assert f"format:  {FILES[rel][0]}" in out
    assert f"symbols: ['{FILES[rel][1]}']" in out
    assert "rejected" not in out


def test_events_are_time_ordered(shared_data: Path) -> None:
    path = shared_data / "book/nautilus_tardis_binance-futures_quotes_BTCUSDT_2020-02-22.csv.gz"
    recv = [e.ts_recv_ns for e in stream_events(path)]
    assert all(a <= b for a, b in itertools.pairwise(recv))
