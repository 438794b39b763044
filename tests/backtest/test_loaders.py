"""OHLCV reading: ``sapphire.data`` loaders for known files, column sniffing for others."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sapphire.backtest import _loaders


def _ticks(path: Path) -> object:
    raw = _loaders.read_ohlcv(path)
    return _loaders.tick_frame(raw, _loaders.instrument_for(raw, "X"))


@pytest.mark.parametrize(
    "name",
    ["basana_bitstamp_BTC-USD_1m_2020-01-01.csv", "freqtrade_ETH-BTC_5m_2018-01.csv.gz"],
)
def test_known_and_unknown_file_names_give_the_same_exact_tick_frame(
    shared_data: Path, tmp_path: Path, name: str
) -> None:
    known = shared_data / "ohlcv" / name
    renamed = tmp_path / ("my_bars" + "".join(known.suffixes))
    shutil.copy(known, renamed)
    via_registry, sniffed = _ticks(known), _ticks(renamed)
    assert via_registry.equals(sniffed)  # type: ignore[attr-defined]
    assert via_registry.height > 700  # type: ignore[attr-defined]


def test_usd_volumes_keep_exact_lots(shared_data: Path) -> None:
    # the decimal route, not float division: 2300413.7295 USD at lot 1e-8 is exactly this many
    frame = _ticks(shared_data / "ohlcv" / "nautilus_btc-perp_1m_2021-12-31_2022-02-01.csv.gz")
    assert frame["volume_lots"][0] == 230_041_372_950_000  # type: ignore[index]
    assert frame.height == 45_031  # type: ignore[attr-defined]


def test_mark_price_candles_without_volume_load_with_zero_volume(shared_data: Path) -> None:
    frame = _ticks(shared_data / "ohlcv" / "freqtrade_binance_XRP-USDT-USDT_1h-mark_2021-11.csv.gz")
    assert frame["volume_lots"].sum() == 0  # type: ignore[index]
    assert frame["interval_ns"][0] == 3_600_000_000_000  # type: ignore[index]


def test_unreadable_rows_in_a_known_format_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "basana_bitstamp_BTC-USD_1m_2020-01-01.csv"
    path.write_text(
        "datetime,open,high,low,close,volume\n"
        "2020-01-01 00:00:00,1,2,1,2,3\n"
        "2020-01-01 00:01:00,x,2,1,2,3\n"
        "2020-01-01 00:02:00,1,2,1,2,3\n"
    )
    with pytest.raises(_loaders.DataError, match="1 rows with unreadable"):
        _loaders.read_ohlcv(path)
    with pytest.raises(_loaders.DataError, match="not found"):
        _loaders.read_ohlcv(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("2020-01-01 00:02:00,100,101,99,-1,1", "a non-positive price"),
        ("2020-01-01 00:02:00,100,101,99,105,1", "an open or close outside the bar's low-high"),
        ("2020-01-01 00:02:00,100,101,99,100,-3", "a negative volume"),
        ("2020-01-01 00:02:00,100,NaN,99,100,1", "not a finite number"),
        ("2020-01-01 00:01:00,100,102,99,101,1", "bar times given twice with other values"),
        # sorted silently: a file with shuffled rows ran as if it were whole
        ("2020-01-01 00:00:30,100,101,99,100,1", "1 bars earlier than the bar before them"),
    ],
)
def test_a_bar_no_backtest_can_trade_on_is_the_files_error(
    tmp_path: Path, row: str, why: str
) -> None:
    # a close of -1 was traded on (201 such bars changed the PnL), a repeated time kept its
    # first bar silently; now the file is refused naming the first bad bar
    from sapphire.backtest._loaders import DataError, read_ohlcv

    lines = [
        "datetime,open,high,low,close,volume",
        "2020-01-01 00:00:00,100,101,99,100,1",
        "2020-01-01 00:01:00,100,101,99,100,1",
        row,
        "2020-01-01 00:03:00,100,101,99,100,1",
    ]
    path = tmp_path / "bars.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=why) as info:
        read_ohlcv(path)
    assert str(path) in str(info.value) and "2020-01-01 00:0" in str(info.value)


def _minute_bars(path: Path, rows: int, close: dict[int, str]) -> Path:
    lines = ["datetime,open,high,low,close,volume"]
    for i in range(rows):
        stamp = f"2020-01-{1 + i // 1440:02d} {i % 1440 // 60:02d}:{i % 60:02d}:00"
        lines.append(f"{stamp},100.00,101.00,99.00,{close.get(i, '100.00')},1")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_inferred_tick_covers_every_price_not_the_first_opens(tmp_path: Path) -> None:
    # the tick came from the first 20,000 of open+high+low+close: the opens, highs and lows
    # of 6,000 bars and a third of the closes; a finer close further on was rounded to it
    path = _minute_bars(tmp_path / "bars.csv", 6_000, {5_990: "100.125"})
    raw = _loaders.read_ohlcv(path)
    inst = _loaders.instrument_for(raw, "X")
    assert inst.tick_size == "0.001"  # was 0.01
    frame = _loaders.tick_frame(raw, inst)
    assert frame["close"][5_990] == 100.125  # was 100.12


def test_a_tick_that_does_not_divide_the_prices_is_the_files_error(
    tmp_path: Path, shared_data: Path
) -> None:
    # an instrument tick of 0.3 on 0.01-tick data: every price was rounded to it silently
    from sapphire.model.instrument import Instrument

    path = shared_data / "ohlcv" / "basana_bitstamp_BTC-USD_1m_2020-01-01.csv"
    raw = _loaders.read_ohlcv(path)
    coarse = Instrument(symbol="X", tick_size="0.3", lot_size="0.00000001")
    with pytest.raises(_loaders.DataError, match=r"no whole number of the tick_size 0\.3") as info:
        _loaders.tick_frame(raw.head(100), coarse)  # the head a max_bars run trades
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "2020-01-01 00:0" in message
    # float noise on the grid is no error: 0.09946999000000001 at 1e-8
    fine = _minute_bars(tmp_path / "noise.csv", 3, {1: "100.09946999000000001"})
    raw = _loaders.read_ohlcv(fine)
    inst = Instrument(symbol="X", tick_size="0.00000001", lot_size="1")
    assert _loaders.tick_frame(raw, inst)["close_ticks"][1] == 10_009_946_999


def test_a_millisecond_time_past_int64_ns_is_the_files_error(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    rows = [f"{1577836800000 + 60_000 * i},100,101,99,100,1" for i in range(4)]
    rows.append(f"{(1577836800000 + 240_000) * 1000},100,101,99,100,1")  # µs, not ms
    path.write_text("\n".join(["timestamp_ms,open,high,low,close,volume", *rows]) + "\n")
    with pytest.raises(_loaders.DataError, match="1 rows with unreadable timestamps"):
        _loaders.read_ohlcv(path)


def test_hyperliquid_candles_are_bars_with_the_symbol_their_rows_name(shared_data: Path) -> None:
    # README: 24 hourly kPEPE candles, 2023-05-21 20:00 -> 2023-05-22 19:00 (bar open)
    path = (
        shared_data
        / "ohlcv"
        / "hyperliquid-sdk_hyperliquid_kPEPE_1h_candleSnapshot_2023-05-21.json"
    )
    raw = _loaders.read_ohlcv(path)
    assert raw.height == 24
    assert raw["interval_ns"][0] == 3_600_000_000_000
    assert _loaders.frame_symbol(raw) == "kPEPE"
    assert _ticks(path).height == 24  # type: ignore[attr-defined]


def test_a_funding_rate_file_is_named_as_such_not_read_as_candles(shared_data: Path) -> None:
    # its rate is in ``open`` and the rest 0: read as candles it failed on "non-positive price"
    path = shared_data / "ohlcv" / "freqtrade_binance_XRP-USDT-USDT_8h-funding_rate_2021-11.csv.gz"
    with pytest.raises(
        _loaders.DataError, match=r"a freqtrade_funding file \(funding\), not OHLCV"
    ):
        _loaders.read_ohlcv(path)
