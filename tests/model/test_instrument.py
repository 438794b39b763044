"""An instrument's numbers are checked when it is built: one line naming the field."""

from __future__ import annotations

import pytest

from sapphire.model.instrument import Instrument, InstrumentError


@pytest.mark.parametrize(
    ("field", "text", "why"),
    [
        ("tick_size", "abc", "tick_size 'abc' is not a number"),
        ("maker_fee_bps", "NaN", "maker_fee_bps must be finite"),
        ("taker_fee_bps", "-500000", "taker_fee_bps must be within"),
        ("min_notional", "x", "min_notional 'x' is not a number"),
    ],
)
def test_an_instrument_field_that_is_no_usable_number_is_one_line_naming_it(
    field: str, text: str, why: str
) -> None:
    # "abc" raised decimal.InvalidOperation (a traceback); a NaN fee passed until the first
    # fill crashed the store; a -500,000 bps fee paid a run 1.78 M USDT
    fields = {"tick_size": "0.1", "lot_size": "0.001", field: text}
    with pytest.raises(InstrumentError, match=why):
        Instrument(symbol="BTCUSDT", **fields)
    assert Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="1", maker_fee_bps="-2.5")
