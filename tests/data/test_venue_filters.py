"""The exchange filters instruments carry from the venues' own metadata: every Binance symbol's
PRICE_FILTER, MARKET_LOT_SIZE, percent-price band and MAX_NUM_ORDERS as its exchangeInfo
publishes them (read from the file here), and the price limits of the other venues."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.adapters.venue_instruments import load_venue_instruments
from sapphire.data.venue_instruments import FilterFields, binance_filters, market_filters
from sapphire.model.instrument import Instrument, InstrumentError, InstrumentKind
from sapphire.model.instrument import PriceBandReference as Ref

EXCHANGE = Path("exchange")
SPOT_NOW = EXCHANGE / "basana_binance_exchangeInfo_BTCUSDT.json"  # PERCENT_PRICE_BY_SIDE
SPOT_2021 = EXCHANGE / "cryptofeed_binance_spot_exchangeInfo_2021-10-12.json.gz"  # PERCENT_PRICE
USDM = EXCHANGE / "cryptofeed_binance_usdm_exchangeInfo_2021-07-22.json.gz"
COINM = EXCHANGE / "cryptofeed_binance_coinm_exchangeInfo_2021-07-22.json.gz"


def _json(path: Path) -> Any:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def _filters(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filterType"]: f for f in entry["filters"]}


def _same(value: str, published: object) -> bool:
    return Decimal(value) == Decimal(str(published))


def _check_common(inst: Instrument, filters: dict[str, dict[str, Any]]) -> None:
    """PRICE_FILTER, MARKET_LOT_SIZE and MAX_NUM_ORDERS; a filter the symbol does not publish
    (delisted BCCBTC has no MARKET_LOT_SIZE) is no limit."""
    price = filters["PRICE_FILTER"]
    market = filters.get("MARKET_LOT_SIZE", {"minQty": "0", "maxQty": "0"})
    assert _same(inst.min_price, price["minPrice"]), inst.symbol
    assert _same(inst.max_price, price["maxPrice"]), inst.symbol
    assert _same(inst.market_min_qty, market["minQty"]), inst.symbol
    assert _same(inst.market_max_qty, market["maxQty"]), inst.symbol
    orders = filters.get("MAX_NUM_ORDERS", {"limit": 0})
    cap = orders["maxNumOrders"] if "maxNumOrders" in orders else orders["limit"]  # spot, futures
    assert inst.max_num_orders == int(cap), inst.symbol


@pytest.mark.parametrize("relative", [SPOT_NOW, SPOT_2021])
def test_binance_spot_symbols_carry_their_published_filters(
    shared_data: Path, relative: Path
) -> None:
    body = _json(shared_data / relative)
    loaded = load_venue_instruments(shared_data / relative).instruments
    assert len(loaded) == len(body["symbols"])
    banded = market = 0
    for entry in body["symbols"]:
        inst, filters = loaded[entry["symbol"]], _filters(entry)
        _check_common(inst, filters)
        band = filters.get("PERCENT_PRICE_BY_SIDE")
        if band is not None:
            expected = (
                band["bidMultiplierUp"],
                band["bidMultiplierDown"],
                band["askMultiplierUp"],
                band["askMultiplierDown"],
            )
        elif "PERCENT_PRICE" in filters:
            # spot PERCENT_PRICE (before BY_SIDE): one band for both sides
            band = filters["PERCENT_PRICE"]
            expected = (band["multiplierUp"], band["multiplierDown"]) * 2
        else:
            band, expected = {"avgPriceMins": 0}, ("0",) * 4
        got = (
            inst.bid_multiplier_up,
            inst.bid_multiplier_down,
            inst.ask_multiplier_up,
            inst.ask_multiplier_down,
        )
        assert all(_same(g, e) for g, e in zip(got, expected, strict=True)), inst.symbol
        assert inst.price_band_reference is Ref.AVERAGE
        assert inst.avg_price_mins == band["avgPriceMins"]
        banded += inst.has_price_band
        market += inst.market_max_qty != "0"
    # nearly every symbol publishes both (a filter parsed nowhere would leave 0 here)
    assert banded > 0.9 * len(body["symbols"]) and market > 0.9 * len(body["symbols"])


@pytest.mark.parametrize("relative", [USDM, COINM])
def test_binance_futures_symbols_carry_a_mark_band_bounding_one_end_a_side(
    shared_data: Path, relative: Path
) -> None:
    body = _json(shared_data / relative)
    loaded = load_venue_instruments(shared_data / relative).instruments
    assert len(loaded) == len(body["symbols"])
    for entry in body["symbols"]:
        inst, filters = loaded[entry["symbol"]], _filters(entry)
        assert inst.kind is not InstrumentKind.SPOT
        _check_common(inst, filters)
        band = filters["PERCENT_PRICE"]
        # "BUY: price <= markPrice x multiplierUp; SELL: price >= markPrice x multiplierDown"
        assert _same(inst.bid_multiplier_up, band["multiplierUp"]), inst.symbol
        assert _same(inst.ask_multiplier_down, band["multiplierDown"]), inst.symbol
        assert inst.bid_multiplier_down == inst.ask_multiplier_up == "0"
        assert inst.price_band_reference is Ref.MARK


def test_bybit_and_bitmex_carry_their_price_limits(shared_data: Path) -> None:
    bybit_path = shared_data / EXCHANGE / "cryptofeed_bybit_v2_public_symbols_2021-04-17.json.gz"
    bybit = load_venue_instruments(bybit_path).instruments
    for raw in _json(bybit_path)["result"]:
        inst = bybit[raw["name"]]
        assert _same(inst.min_price, raw["price_filter"]["min_price"])
        assert _same(inst.max_price, raw["price_filter"]["max_price"])
    bitmex_path = shared_data / EXCHANGE / "cryptofeed_bitmex_instrument_active_2021-07-22.json.gz"
    bitmex = load_venue_instruments(bitmex_path).instruments
    assert bitmex
    by_symbol = {raw["symbol"]: raw for raw in _json(bitmex_path)}
    for symbol, inst in bitmex.items():
        assert _same(inst.max_price, by_symbol[symbol]["maxPrice"]), symbol


def test_ccxt_price_limits_fill_the_filters_of_any_venue() -> None:
    market = {"limits": {"price": {"min": 0.5, "max": 999999.5}, "market": {"max": 120.0}}}
    got = market_filters(market, InstrumentKind.PERPETUAL)
    assert (got.min_price, got.max_price, got.market_min_qty, got.market_max_qty) == (
        "0.5",
        "999999.5",
        "0",
        "120",
    )
    assert not any(
        getattr(got, f"{s}_multiplier_{d}") != "0" for s in ("bid", "ask") for d in ("up", "down")
    )
    assert market_filters({}, InstrumentKind.SPOT) == FilterFields()


def test_a_malformed_binance_filter_is_an_error_not_a_guess() -> None:
    bad = [{"filterType": "MAX_NUM_ORDERS", "maxNumOrders": "2.5"}]
    with pytest.raises(InstrumentError, match="whole number"):
        binance_filters(bad, derivative=False)
    bad = [{"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "x"}]
    with pytest.raises(InstrumentError, match="not a number"):
        binance_filters(bad, derivative=False)
    # not a filter list (a venue without Binance's ``filters``): nothing changes
    base = FilterFields(min_price="1")
    assert binance_filters(None, derivative=False, base=base) is base
    assert msgspec.structs.asdict(binance_filters([], derivative=True)) == msgspec.structs.asdict(
        FilterFields()
    )
