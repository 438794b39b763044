"""Every file of ../shared/data loads with the row counts and time ranges its README states."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from sapphire.data.instruments import load_exchange_info
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import SCHEMAS, FrameKind
from sapphire.model import InstrumentKind
from sapphire.model.events import BookDelta, BookSnapshot
from sapphire.model.times import utc_text

D, T, B, BARS, F = (
    FrameKind.DEPTH,
    FrameKind.TRADES,
    FrameKind.BBO,
    FrameKind.BARS,
    FrameKind.FUNDING,
)

# (path, rows per kind, first, last, which clock the README range uses)
EXPECTED: list[tuple[str, dict[FrameKind, int], str, str, str]] = [
    (
        "ohlcv/nautilus_btc-perp_1m_2021-12-31_2022-02-01.csv.gz",
        {BARS: 45_031},
        "2021-12-31 23:01",
        "2022-02-01 05:31",
        "event",
    ),
    (
        "ohlcv/freqtrade_UNITTEST-BTC_1m_2017-11.csv.gz",
        {BARS: 13_681},
        "2017-11-04 23:02",
        "2017-11-14 22:59",
        "event",
    ),
    (
        "ohlcv/freqtrade_ETH-BTC_5m_2018-01.csv.gz",
        {BARS: 5_760},
        "2018-01-10 04:55",
        "2018-01-30 04:50",
        "event",
    ),
    (
        "ohlcv/freqtrade_binance_XRP-ETH_1m_2019-10.csv.gz",
        {BARS: 2_469},
        "2019-10-11 00:00",
        "2019-10-13 11:19",
        "event",
    ),
    (
        "ohlcv/freqtrade_binance_XRP-ETH_5m_2019-10.csv.gz",
        {BARS: 706},
        "2019-10-11 00:00",
        "2019-10-13 11:15",
        "event",
    ),
    (
        "ohlcv/freqtrade_binance_XRP-USDT-USDT_5m-futures_2021-11.csv.gz",
        {BARS: 1_999},
        "2021-11-15 00:00",
        "2021-11-21 22:30",
        "event",
    ),
    (
        "ohlcv/freqtrade_binance_XRP-USDT-USDT_1h-futures_2021-11.csv.gz",
        {BARS: 100},
        "2021-11-17 01:00",
        "2021-11-21 04:00",
        "event",
    ),
    (
        "ohlcv/freqtrade_binance_XRP-USDT-USDT_1h-mark_2021-11.csv.gz",
        {BARS: 100},
        "2021-11-15 06:00",
        "2021-11-19 09:00",
        "event",
    ),
    (
        "ohlcv/freqtrade_binance_XRP-USDT-USDT_8h-mark_2021-11.csv.gz",
        {BARS: 91},
        "2021-11-18 00:00",
        "2021-12-18 00:00",
        "event",
    ),
    (
        "ohlcv/freqtrade_binance_XRP-USDT-USDT_8h-funding_rate_2021-11.csv.gz",
        {F: 91},
        "2021-11-18 00:00:00.017",
        "2021-12-18 00:00:00.014",
        "event",
    ),
    (
        "ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv",
        {BARS: 1_440},
        "2020-01-01 00:00",
        "2020-01-01 23:59",
        "event",
    ),
    ("ohlcv/basana_binance_BTC-USDT_1d_2020.csv", {BARS: 366}, "2020-01-01", "2020-12-31", "event"),
    (
        "trades/hftbacktest_binance-spot_BTCUSDT_trades.csv.gz",
        {T: 23_048},
        "2023-04-05 00:00:00",
        "2024-08-09 00:05:04",
        "recv",
    ),
    (
        "trades/hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz",
        {T: 44_949},
        "2023-04-04 23:58:20",
        "2024-08-08 23:59:5",
        "recv",
    ),
    (
        "trades/nautilus_binance_BTCUSDT_trades_2021-01-08.parquet",
        {T: 2_001},
        "2021-01-08 00:00:00.278",
        "2021-01-08 00:00:46.355",
        "event",
    ),
    (
        "trades/freqtrade_binance_XRP-ETH_trades_2019-10.csv.gz",
        {T: 12_477},
        "2019-10-11 00:00:11.620",
        "2019-10-13 11:19:28.844",
        "event",
    ),
    (
        "trades/freqtrade_orderflow_public_trades_list_2023-02-02.csv",
        {T: 1_000},
        "2023-02-02 09:20:00.138",
        "2023-02-02 09:23:27.493",
        "event",
    ),
    (
        "book/hftbacktest_binance-spot_BTCUSDT_depth.csv.gz",
        {D: 332_135},
        "2023-04-05 00:00:00",
        "2024-08-09 00:05:04",
        "recv",
    ),
    (
        "book/hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz",
        {D: 1_173_062},
        "2023-04-04 23:58:20",
        "2024-08-08 23:59:59",
        "recv",
    ),
    (
        "book/hftbacktest_binance-spot_BTCUSDT_bbo.csv.gz",
        {B: 81_189},
        "2023-04-05 00:00:00",
        "2024-08-09 00:05:04",
        "recv",
    ),
    (
        "book/hftbacktest_binance-usdm_BTCUSDT_bbo.csv.gz",
        {B: 162_554},
        "2023-04-04 23:58:20",
        "2024-08-08 23:59:59",
        "recv",
    ),
    (
        "book/nautilus_binance-futures_BTCUSDT_depth-snap_2022-11-01.csv",
        {D: 100},
        "2022-11-01 23:49:39.146",
        "2022-11-01 23:49:39.146",
        "event",
    ),
    (
        "book/nautilus_binance-futures_BTCUSDT_depth-update_2022-11-01.csv",
        {D: 100},
        "2022-11-01 23:59:59.939",
        "2022-11-01 23:59:59.939",
        "event",
    ),
    (
        "book/nautilus_binance_BTCUSDT_quotes_2021-01-08.parquet",
        {B: 451},
        "2021-01-08 00:00:01.076",
        "2021-01-08 00:00:46.674",
        "event",
    ),
    (
        "book/nautilus_tardis_binance-futures_book_snapshot_25_BTCUSDT_2020-09-01.csv",
        {D: 500},
        "2020-09-01 00:00:03.696",
        "2020-09-01 00:00:04",
        "event",
    ),
    (
        "book/nautilus_tardis_binance-futures_book_snapshot_5_BTCUSDT_2020-09-01.csv",
        {D: 100},  # 10 snapshots x 5 levels x 2 sides
        "2020-09-01 00:00:03.696",
        "2020-09-01 00:00:04.284",
        "event",
    ),
    (
        "book/nautilus_tardis_binance-futures_quotes_BTCUSDT_2020-02-22.csv.gz",
        {B: 9_999},
        "2020-02-22 00:00:01.096",
        "2020-02-22 00:03:47.061",
        "event",
    ),
    (
        "book/nautilus_tardis_huobi-dm-swap_quotes_BTC-USD_2020-05-01.csv",
        {B: 10},
        "2020-05-01 00:00:01.099",
        "2020-05-01 00:00:01.814",
        "event",
    ),
    (
        "book/nautilus_tardis_deribit_incremental_book_L2_BTC-PERPETUAL_2020-04-01.csv",
        {D: 15},
        "2020-04-01 00:00:00.245",
        "2020-04-01 00:00:00.245",
        "event",
    ),
    (
        "trades/nautilus_tardis_binance-futures_trades_BTCUSDT_2020-02-22.csv.gz",
        {T: 9_999},
        "2020-02-22 00:00:02.111",
        "2020-02-22 02:05:47.728",
        "event",
    ),
    (
        "trades/nautilus_tardis_bitmex_trades_XBTUSD_2020-03-01.csv",
        {T: 10},
        "2020-03-01 00:00:03.145",
        "2020-03-01 00:00:03.276",
        "event",
    ),
    (
        "book/basana_binance_depth_update.json",
        {D: 248},
        "2025-09-10 01:15:56.014",
        "2025-09-10 01:15:56.014",
        "event",
    ),
    (
        "book/cryptofeed_binance_spot_ws_2021-10-12.log.gz",
        {D: 422, B: 84, T: 2},
        "2021-10-12 00:28:3",
        "2021-10-12 00:29:0",
        "recv",
    ),
    (
        "book/cryptofeed_binance_usdm_ws_2021-07-22.log.gz",
        {D: 6_297, B: 613, T: 91, BARS: 4},
        "2021-07-22 22:25:4",
        "2021-07-22 22:26:1",
        "recv",
    ),
    (
        "exchange/cryptofeed_binance_spot_rest_depth1000_2021-10-12.log.gz",
        {D: 4_648},
        "2021-10-12 00:28:32",
        "2021-10-12 00:28:42",
        "recv",
    ),
    (
        "exchange/cryptofeed_binance_usdm_rest_depth1000_2021-07-22.log.gz",
        {D: 5_613},
        "2021-07-22 22:25:41",
        "2021-07-22 22:25:42",
        "recv",
    ),
    # Bybit/OKX: depth rows are levels (snapshots + delete/update/insert or OKX level rows);
    # message counts are checked in test_cryptofeed_venues.py.
    (
        "book/cryptofeed_bybit_linear_ws_2021-04-17.log.gz",
        {D: 20_342, T: 101},
        "2021-04-17 16:43:06.799",
        "2021-04-17 16:43:36.488",
        "recv",
    ),
    (
        "book/cryptofeed_bybit_inverse_ws_2021-04-17.log.gz",
        {D: 2_652, T: 150},
        "2021-04-17 16:43:06.98",
        "2021-04-17 16:43:36.500",
        "recv",
    ),
    (
        "book/cryptofeed_okx_ws_2022-05-13.log.gz",
        {D: 8_264, T: 74, B: 28},
        "2022-05-13 16:27:05.50",
        "2022-05-13 16:27:16.341",
        "recv",
    ),
    # Kraken spot v1: depth rows are levels (10 snapshots + 4,269 checksummed updates)
    (
        "book/cryptofeed_kraken_spot_ws_book1000_2021-04-17.log.gz",
        {D: 11_745},
        "2021-04-17 16:48:53",
        "2021-04-17 16:49:23.372",
        "recv",
    ),
    (
        "book/cryptofeed_kraken_spot_ws_ticker_2021-04-17.log.gz",
        {B: 18},
        "2021-04-17 16:48:52.9",
        "2021-04-17 16:49:18",
        "recv",
    ),
    (
        "trades/cryptofeed_kraken_spot_ws_trade_2021-04-17.log.gz",
        {T: 10},
        "2021-04-17 16:49:02",
        "2021-04-17 16:49:18",
        "recv",
    ),
    (
        "book/cryptofeed_bitmex_ws_2021-07-22.log.gz",
        {D: 14_333, B: 436, T: 27},
        "2021-07-22 22:36:10.03",  # README's 22:36:07.875 is the welcome message
        "2021-07-22 22:36:38.468",
        "recv",
    ),
    (
        "book/cryptofeed_deribit_options_ws_2021-07-22.log.gz",
        {D: 149, B: 76},  # 13 of the 89 tickers are one-sided (ignored)
        "2021-07-22 22:42:03.804",
        "2021-07-22 22:42:34.165",
        "recv",
    ),
    (
        "book/cryptofeed_kraken-futures_inverse_ws_2021-07-22.log.gz",
        # 1,571 snapshot levels + 7,014 deltas; ticker_lite has no sizes; 3 live trades (the
        # README's 1,000 trade_snapshot trades are history before the subscription)
        {D: 8_585, T: 3},
        "2021-07-22 23:02:07.690",  # README's 23:02:07.583 is the info event
        "2021-07-22 23:02:38.156",
        "recv",
    ),
    (
        "book/hyperliquid-sdk_hyperliquid_DYDX_l2Book_rest_2023-07-17.json",
        {D: 40},  # 20 bid + 20 ask levels of one snapshot
        "2023-07-17 21:43:23.930",
        "2023-07-17 21:43:23.930",
        "event",
    ),
    (
        "ohlcv/hyperliquid-sdk_hyperliquid_kPEPE_1h_candleSnapshot_2023-05-21.json",
        {BARS: 24},
        "2023-05-21 20:00",
        "2023-05-22 19:00",
        "event",
    ),
    (
        "ohlcv/hyperliquid-sdk_hyperliquid_BTC_fundingHistory_2023-05-12_2023-07-17.json.gz",
        {F: 1_038},
        "2023-05-12 00:00:00.048",
        "2023-07-17 21:00:00.065",
        "event",
    ),
    (
        "book/raw_hftbacktest/spot_btcusdt_20230405.dat.gz",
        {D: 32_024, B: 8_015, T: 3_144},
        "2023-04-05 00:00:00",
        "2023-04-05 00:06:54",
        "recv",
    ),
    (
        "book/raw_hftbacktest/usdm_btcusdt_20240808.gz",
        {D: 445_521, B: 66_089, T: 21_313},
        "2024-08-08 23:54:15",
        "2024-08-08 23:59:59",
        "recv",
    ),
]
# Kept out of the quick loop: loading these takes > 1 s each on 2 cores.
BIG = {"depth.csv.gz", "usdm_btcusdt_20240808.gz"}

# The raw files whose flattened CSV rows the README counts per session.
RAW_PAIRS = [
    ("spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz", {D: 300_111, T: 19_904}),
    ("usdm_btcusdt_20230404.dat.gz", "usdm_btcusdt_20230405.dat.gz", {D: 324_682, T: 12_935}),
    ("usdm_btcusdt_20240718.gz", "usdm_btcusdt_20240719.gz", {D: 402_859, T: 10_701}),
]


def _params() -> list[object]:
    return [
        pytest.param(
            *row,
            marks=[pytest.mark.slow] if any(b in row[0] for b in BIG) else [],
            id=Path(row[0]).name,
        )
        for row in EXPECTED
    ]


@pytest.mark.parametrize(("rel", "rows", "first", "last", "clock"), _params())
def test_file_matches_readme(
    shared_data: Path, rel: str, rows: dict[FrameKind, int], first: str, last: str, clock: str
) -> None:
    frames = load_frames(shared_data / rel)
    assert {k: f.height for k, f in frames.items()} == rows
    column = "ts_recv_ns" if clock == "recv" else "ts_event_ns"
    times = pl.concat([f.select(column) for f in frames.values()])[column]
    assert utc_text(int(times.min()), 6).startswith(first)  # type: ignore[arg-type]
    assert utc_text(int(times.max()), 6).startswith(last)  # type: ignore[arg-type]
    for kind, frame in frames.items():
        assert frame.schema == pl.Schema(SCHEMAS[kind])
        assert frame["ts_event_ns"].null_count() == 0


# Venue instrument metadata (issue #16), loaded by sapphire.adapters.venue_instruments:
# file -> (venue, instruments loaded, payloads skipped). Counts from the data README: OKX
# 513 + 166 + 104 + 346 + 350 (each request logged 5 times), Deribit 398 + 426 + 177 + 16,
# Kraken Futures 17 futures_inverse + 10 index entries, BitMEX 34, Bybit 15, Hyperliquid 28.
INSTRUMENT_FILES: dict[str, tuple[str, int, int]] = {
    "cryptofeed_bitmex_instrument_active_2021-07-22.json.gz": ("BITMEX", 34, 0),
    "cryptofeed_bybit_v2_public_symbols_2021-04-17.json.gz": ("BYBIT", 15, 0),
    "cryptofeed_deribit_get_instruments_rest_2021-07-22.log.gz": ("DERIBIT", 1_017, 0),
    "cryptofeed_kraken-futures_instruments_2021-07-22.json.gz": ("KRAKEN_FUTURES", 17, 10),
    "cryptofeed_okx_instruments_rest_2022-05-13.log.gz": ("OKX", 1_479, 0),
    "hyperliquid-sdk_hyperliquid_meta_2023-07-17.json": ("HYPERLIQUID", 28, 0),
}
# Files with no loader yet; listed by name so that a new file still fails the test below, and
# a file that gains a loader must leave this list.
NOT_YET_LOADED: frozenset[str] = frozenset()


@pytest.mark.parametrize(("name", "expected"), sorted(INSTRUMENT_FILES.items()))
def test_instrument_file_loads(
    shared_data: Path, name: str, expected: tuple[str, int, int]
) -> None:
    from sapphire.adapters.venue_instruments import load_venue_instruments

    loaded = load_venue_instruments(shared_data / "exchange" / name)
    assert (loaded.venue, len(loaded.instruments), sum(loaded.skipped.values())) == expected


def test_every_shared_file_is_covered(shared_data: Path) -> None:
    covered = {Path(r[0]).name for r in EXPECTED} | {n for a, b, _ in RAW_PAIRS for n in (a, b)}
    covered |= set(INSTRUMENT_FILES)
    assert not covered & NOT_YET_LOADED, "a loaded file is still listed as not loaded"
    uncovered = set()
    for path in shared_data.rglob("*"):
        if path.is_file() and path.name not in {"README.md", "SHA256SUMS"}:
            if "exchangeInfo" in path.name:
                assert detect(path).name == "binance_exchange_info"
            elif path.name not in covered:
                uncovered.add(path.name)
    assert uncovered == NOT_YET_LOADED


@pytest.mark.slow
@pytest.mark.parametrize(("a", "b", "rows"), RAW_PAIRS, ids=[p[0] for p in RAW_PAIRS])
def test_raw_pairs_match_flattened_sessions(
    shared_data: Path, a: str, b: str, rows: dict[FrameKind, int]
) -> None:
    raw = shared_data / "book" / "raw_hftbacktest"
    one, two = load_frames(raw / a), load_frames(raw / b)
    assert {k: one[k].height + two[k].height for k in rows} == rows


def test_exchange_info_instruments(shared_data: Path) -> None:
    spot = load_exchange_info(
        shared_data / "exchange/cryptofeed_binance_spot_exchangeInfo_2021-10-12.json.gz"
    )
    assert len(spot) > 1_600
    btc = spot["BTCUSDT"]
    assert (btc.tick_size, btc.lot_size, btc.min_notional, btc.kind) == (
        "0.01",
        "0.00001",
        "10",
        InstrumentKind.SPOT,
    )
    usdm = load_exchange_info(
        shared_data / "exchange/cryptofeed_binance_usdm_exchangeInfo_2021-07-22.json.gz"
    )
    assert usdm["BTCUSDT"].kind is InstrumentKind.PERPETUAL
    assert (usdm["BTCUSDT"].lot_size, usdm["BTCUSDT"].min_notional) == ("0.001", "5")
    assert all(i.kind is InstrumentKind.PERPETUAL for i in usdm.values())
    coinm = load_exchange_info(
        shared_data / "exchange/cryptofeed_binance_coinm_exchangeInfo_2021-07-22.json.gz"
    )
    assert coinm["BTCUSD_PERP"].tick_size == "0.1"
    assert not any("_2" in s for s in coinm)  # delivery contracts are skipped
    basana = load_exchange_info(shared_data / "exchange/basana_binance_exchangeInfo_BTCUSDT.json")
    assert list(basana) == ["BTCUSDT"]


@pytest.mark.parametrize(
    "rel",
    [
        "book/cryptofeed_binance_usdm_ws_2021-07-22.log.gz",
        "book/nautilus_tardis_binance-futures_book_snapshot_25_BTCUSDT_2020-09-01.csv",
        "ohlcv/freqtrade_binance_XRP-USDT-USDT_1h-mark_2021-11.csv.gz",
        "trades/hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz",
        "book/basana_binance_depth_update.json",
    ],
)
def test_small_streams_deliver_everything(shared_data: Path, rel: str) -> None:
    stream = stream_events(shared_data / rel)
    events = list(stream)
    assert stream.stats.balanced()
    assert stream.stats.rejected == 0
    assert stream.stats.rows_out == sum(f.height for f in load_frames(shared_data / rel).values())
    assert len(events) == stream.stats.events_out > 0


@pytest.mark.slow
def test_usdm_depth_streams_clean_with_three_snapshots(shared_data: Path) -> None:
    stream = stream_events(shared_data / "book/hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz")
    snapshots = [(s, e) for s, e in stream.tagged() if isinstance(e, BookSnapshot)]
    assert [s for s, _ in snapshots] == ["2023-04-04", "2024-07-18", "2024-08-08"]
    assert all(len(e.bids) == len(e.asks) == 1000 for _, e in snapshots)
    stats = stream.stats
    assert stats.balanced() and stats.rejected == 0 and stats.rows_in == 1_173_062
    assert stats.events_out == 1_173_062 - 3 * 2000 + 3


def test_spot_depth_applies_sizes_finer_than_the_lot_step(shared_data: Path) -> None:
    """Real quirk: 22 far-from-market spot levels carry 6-decimal quantities (lot 0.00001).
    The book's size grid is Binance's 8-decimal size precision, so all are applied exactly
    (on the lot grid 8 were dropped as off_grid and 14 rounded: tests/book/test_size_grid.py)."""
    stream = stream_events(shared_data / "book/hftbacktest_binance-spot_BTCUSDT_depth.csv.gz")
    fine = [e for e in stream if isinstance(e, BookDelta) and e.qty_lots % 1000]
    assert stream.stats.events_out == 330_136
    assert stream.stats.counts == {}
    assert len(fine) == 22


def test_inspect_exchange_info(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sapphire.cli import main

    path = shared_data / "exchange/cryptofeed_binance_usdm_exchangeInfo_2021-07-22.json.gz"
    assert main(["data", "inspect", str(path)]) == 0
    assert "perpetual" in capsys.readouterr().out


def test_a_bar_is_an_event_at_its_close(shared_data: Path) -> None:
    # OHLCV files date a bar by its open, but its high, low and close are known only when it
    # closes: stamped at its open, a bar marked risk and PnL, and reached agents (and every
    # other stream merged with it), a whole interval before its close existed
    from sapphire.model.events import Bar

    path = shared_data / "ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv"
    frame = load_frames(path)[FrameKind.BARS]
    bars = [e for e in stream_events(path) if isinstance(e, Bar)]
    assert len(bars) == frame.height == 1_440
    minute = 60_000_000_000
    assert all(b.interval_ns == minute for b in bars)
    assert [b.open_time_ns for b in bars] == frame["ts_event_ns"].to_list()
    assert [b.ts_event_ns for b in bars] == [t + minute for t in frame["ts_event_ns"]]
