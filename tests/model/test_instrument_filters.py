"""Instrument's exchange filters beyond the grids: defaults that limit nothing, one-line errors
naming the field, and exact conversions to ticks and lots."""

from __future__ import annotations

from fractions import Fraction

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.model.instrument import Instrument, InstrumentError, PriceBandReference

BASE = Instrument(symbol="BTCUSDT", tick_size="0.01", lot_size="0.00001", base="BTC", quote="USDT")


def test_the_defaults_limit_nothing() -> None:
    assert (BASE.min_price_ticks, BASE.max_price_ticks) == (0, 0)
    assert (BASE.market_min_qty_lots, BASE.market_max_qty_lots) == (0, 0)
    assert not BASE.has_price_band
    assert BASE.max_num_orders == 0
    assert BASE.price_band_ticks(True, Fraction(6_000_000)) == (0, None)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"min_price": "-0.01"}, "min_price"),
        ({"max_price": "abc"}, "max_price"),
        ({"market_min_qty": "-1"}, "market_min_qty"),
        ({"market_max_qty": "NaN"}, "market_max_qty"),
        ({"bid_multiplier_up": "-5"}, "bid_multiplier_up"),
        ({"ask_multiplier_down": "Infinity"}, "ask_multiplier_down"),
        ({"min_price": "2", "max_price": "1"}, "min_price"),
        ({"market_min_qty": "2", "market_max_qty": "1"}, "market_min_qty"),
        ({"bid_multiplier_down": "1.2", "bid_multiplier_up": "1.1"}, "bid_multiplier_down"),
        ({"ask_multiplier_down": "5", "ask_multiplier_up": "0.2"}, "ask_multiplier_down"),
        ({"avg_price_mins": -1}, "avg_price_mins"),
        ({"max_num_orders": -200}, "max_num_orders"),
    ],
)
def test_a_bad_filter_is_a_one_line_error_naming_its_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(InstrumentError) as caught:
        msgspec.structs.replace(BASE, **changes)
    message = str(caught.value)
    assert field in message and "\n" not in message and message.startswith("BTCUSDT: ")


def test_an_open_end_is_no_range_error() -> None:
    # maxPrice 0 disables the upper bound: any minPrice stands alone
    inst = msgspec.structs.replace(
        BASE, min_price="100", market_min_qty="1", bid_multiplier_down="2"
    )
    assert (inst.min_price_ticks, inst.max_price_ticks) == (10_000, 0)
    assert inst.price_band_ticks(True, Fraction(100)) == (200, None)


def test_bounds_off_the_grid_round_inwards() -> None:
    inst = msgspec.structs.replace(
        BASE,
        min_price="0.005",
        max_price="99.999",
        market_min_qty="0.000015",
        market_max_qty="328.37710865",
    )
    # price >= 0.005: 0.01 is the first tick; price <= 99.999: 99.99 the last
    assert (inst.min_price_ticks, inst.max_price_ticks) == (1, 9_999)
    # qty >= 0.000015: 2 lots; qty <= 328.37710865: 32837710 lots (328.3771 BTC)
    assert (inst.market_min_qty_lots, inst.market_max_qty_lots) == (2, 32_837_710)


def test_instruments_with_filters_round_trip_through_config_json() -> None:
    inst = msgspec.structs.replace(
        BASE,
        min_price="0.01",
        max_price="1000000",
        market_max_qty="328.37710865",
        bid_multiplier_up="1.15",
        ask_multiplier_down="0.85",
        price_band_reference=PriceBandReference.MARK,
        max_num_orders=200,
    )
    assert msgspec.json.decode(msgspec.json.encode(inst), type=Instrument) == inst
    with pytest.raises(msgspec.ValidationError, match="price_band_reference"):
        msgspec.json.decode(
            msgspec.json.encode(inst).replace(b'"mark"', b'"index"'), type=Instrument
        )


_MULTIPLIER = st.decimals(min_value="0.0001", max_value="20", places=4).map(str)


@settings(max_examples=300, deadline=None)
@given(
    num=st.integers(1, 10**12),
    den=st.integers(1, 10**4),
    up=_MULTIPLIER,
    down=_MULTIPLIER,
    buy=st.booleans(),
)
def test_the_band_is_every_tick_within_reference_times_its_multipliers(
    num: int, den: int, up: str, down: str, buy: bool
) -> None:
    lo, hi = sorted((up, down), key=Fraction)
    side = "bid" if buy else "ask"
    inst = msgspec.structs.replace(
        BASE, **{f"{side}_multiplier_up": hi, f"{side}_multiplier_down": lo}
    )
    ref = Fraction(num, den)
    low, high = inst.price_band_ticks(buy, ref)
    assert high is not None
    # the highest tick at or under reference x up, the lowest at or over reference x down
    assert high <= ref * Fraction(hi) < high + 1
    assert low - 1 < ref * Fraction(lo) <= low
    # the other side has no band
    assert inst.price_band_ticks(not buy, ref) == (0, None)
