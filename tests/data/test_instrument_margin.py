"""The margin fields an Instrument takes from venue metadata: only what the venue states
(the paper venue's defaults cover the rest), never a field its API documents as "ignore"."""

from __future__ import annotations

from pathlib import Path

import pytest

from sapphire.adapters.venue_instruments import load_venue_instruments
from sapphire.data.instruments import load_exchange_info
from sapphire.data.venue_instruments import margin_fields

EXCHANGE = "exchange"


@pytest.mark.parametrize(
    ("name", "symbol", "maint", "fee"),
    [
        # Binance: liquidationFee per symbol; maintMarginPercent is 2.5 on every symbol, an
        # "ignore" field, so no maintenance rate
        ("cryptofeed_binance_usdm_exchangeInfo_2021-07-22.json.gz", "BTCUSDT", "", "0.012"),
        ("cryptofeed_binance_usdm_exchangeInfo_2021-07-22.json.gz", "ETHUSDT", "", "0.005"),
        ("cryptofeed_binance_coinm_exchangeInfo_2021-07-22.json.gz", "BTCUSD_PERP", "", "0.006"),
        # BitMEX maintMargin (the first risk limit's)
        ("cryptofeed_bitmex_instrument_active_2021-07-22.json.gz", "XBTUSD", "0.0035", ""),
        ("cryptofeed_bitmex_instrument_active_2021-07-22.json.gz", "SOLUSDT", "0.015", ""),
        # Kraken Futures marginLevels[0] (not the retail levels, 0.25)
        ("cryptofeed_kraken-futures_instruments_2021-07-22.json.gz", "PI_XBTUSD", "0.01", ""),
        # Hyperliquid: half the initial margin at maxLeverage 50
        ("hyperliquid-sdk_hyperliquid_meta_2023-07-17.json", "BTC", "0.01", ""),
        # Bybit v2 and Deribit state none
        ("cryptofeed_bybit_v2_public_symbols_2021-04-17.json.gz", "BTCUSD", "", ""),
        ("cryptofeed_deribit_get_instruments_rest_2021-07-22.log.gz", "BTC-PERPETUAL", "", ""),
    ],
)
def test_margin_rates_come_from_the_venue_metadata(
    shared_data: Path, name: str, symbol: str, maint: str, fee: str
) -> None:
    inst = load_venue_instruments(shared_data / EXCHANGE / name).instruments[symbol]
    assert (inst.maint_margin_rate, inst.liquidation_fee_rate) == (maint, fee)


def test_spot_states_none_and_both_binance_readers_agree(shared_data: Path) -> None:
    spot = load_venue_instruments(
        shared_data / EXCHANGE / "cryptofeed_binance_spot_exchangeInfo_2021-10-12.json.gz"
    ).instruments["BTCUSDT"]
    assert (spot.maint_margin_rate, spot.liquidation_fee_rate) == ("", "")
    usdm = shared_data / EXCHANGE / "cryptofeed_binance_usdm_exchangeInfo_2021-07-22.json.gz"
    assert load_exchange_info(usdm)["BTCUSDT"].liquidation_fee_rate == "0.012"


def test_a_payload_without_margin_fields_gives_none() -> None:
    assert margin_fields({}, "BINANCE_USDM") == margin_fields({}, "HYPERLIQUID")
    assert margin_fields({"marginLevels": []}, "KRAKEN_FUTURES").maint_margin_rate == ""
    assert margin_fields({"maxLeverage": 20}, "HYPERLIQUID").maint_margin_rate == "0.025"
