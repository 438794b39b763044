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
