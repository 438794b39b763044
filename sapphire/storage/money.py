"""The money rule: how a Decimal amount is rounded and what a money column can hold.

Why here and not beside the column types (``sapphire.storage.schemas``, which says why the
columns are ``DECIMAL(38, 9)``): the rule is pure Decimal arithmetic, and the paper venue
rounds its fees by it in a process that stores nothing and so has no use for polars.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal
from types import MappingProxyType
from typing import Final

MONEY_PRECISION: Final = 38
MONEY_SCALE_MAX: Final = 9  # BigQuery NUMERIC: 38 digits, 9 of them after the point
MONEY_ROUNDING: Final = ROUND_HALF_EVEN  # unbiased: sums of many rounded fees do not drift
DEFAULT_QUOTE_SCALE: Final = 8  # a satoshi; also what the run summary prints (kernel money())
# Quote assets whose smallest useful unit is finer than the default. ETH's own unit (wei,
# 18 decimals) does not fit NUMERIC; a gwei (9) is the finest it keeps.
QUOTE_SCALES: Final[Mapping[str, int]] = MappingProxyType({"ETH": 9})
AVG_TICKS_SCALE: Final = MONEY_SCALE_MAX  # a billionth of a tick
_MONEY_INT_DIGITS = MONEY_PRECISION - MONEY_SCALE_MAX
# 39 digits: a value just under 1e29 that rounds up to it still quantizes (to 30 integer
# digits), so round_to_scale refuses it by its range check, with a message saying why
_QUANTIZE = Context(prec=MONEY_PRECISION + 1, rounding=MONEY_ROUNDING)

assert all(0 <= scale <= MONEY_SCALE_MAX for scale in QUOTE_SCALES.values())
assert DEFAULT_QUOTE_SCALE <= MONEY_SCALE_MAX


def quote_scale(quote: str) -> int:
    """Fractional digits stored for money in ``quote`` ("" -- an instrument that does not
    name its quote asset -- gets the default)."""
    return QUOTE_SCALES.get(quote.upper(), DEFAULT_QUOTE_SCALE)


def _too_large(value: Decimal) -> bool:
    return bool(value) and value.adjusted() >= _MONEY_INT_DIGITS


def round_to_scale(value: Decimal, scale: int) -> Decimal:
    """``value`` rounded half-even to ``scale`` fractional digits (exponent exactly -scale).

    Raises ValueError for a value a money column cannot hold: not finite, or 1e29 or more
    in magnitude once rounded.
    """
    if not 0 <= scale <= MONEY_SCALE_MAX:
        raise ValueError(f"scale must be in 0..{MONEY_SCALE_MAX}, got {scale}")
    if not value.is_finite():
        raise ValueError(f"money must be finite, got {value}")
    # checked before quantizing: a huge exponent would need a context as long as the number
    if _too_large(value):
        raise ValueError(f"{value} does not fit DECIMAL({MONEY_PRECISION}, {MONEY_SCALE_MAX})")
    rounded = value.quantize(Decimal(1).scaleb(-scale), context=_QUANTIZE)
    if _too_large(rounded):  # 99..9.9999999999 rounds up to 1e29
        raise ValueError(f"{value} does not fit DECIMAL({MONEY_PRECISION}, {MONEY_SCALE_MAX})")
    return rounded


def round_money(value: Decimal, quote: str) -> Decimal:
    """``value`` (an amount of ``quote``) as it is stored: see :func:`quote_scale`."""
    return round_to_scale(value, quote_scale(quote))


def money_error(value: Decimal) -> str | None:
    """Why a Decimal cannot go into a money column as it is, or None if it can."""
    if not value.is_finite():
        return f"{value} is not finite"
    if _too_large(value):
        return f"{value} does not fit DECIMAL({MONEY_PRECISION}, {MONEY_SCALE_MAX})"
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    # trailing zeros beyond the scale are harmless; a digit there means the row skipped
    # its rounding, and a writer's silent second rounding would hide that
    if exponent < -MONEY_SCALE_MAX and value != round_to_scale(value, MONEY_SCALE_MAX):
        return f"{value} has more than {MONEY_SCALE_MAX} decimals (round it when building the row)"
    return None
