"""Instruments: the one place where ticks/lots become prices, quantities and money."""

from __future__ import annotations

import enum
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import msgspec


class InstrumentKind(enum.StrEnum):
    SPOT = "spot"
    PERPETUAL = "perpetual"  # linear (USDT-margined) perpetual swap


class Rounding(enum.StrEnum):
    """Explicit direction for float/Decimal -> ticks/lots conversions."""

    NEAREST = "nearest"
    DOWN = "down"  # towards -inf
    UP = "up"  # towards +inf


_DECIMAL_ROUNDING = {
    Rounding.NEAREST: ROUND_HALF_EVEN,
    Rounding.DOWN: ROUND_FLOOR,
    Rounding.UP: ROUND_CEILING,
}


class InstrumentError(ValueError):
    """An instrument definition or a conversion that breaks its rules."""


class Instrument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tradable instrument with its exchange filters.

    ``tick_size``, ``lot_size`` and ``min_notional`` are decimal strings exactly as the
    exchange publishes them ("0.01", "0.00001"), so no precision is lost in configs.
    Fees are in basis points of notional; negative maker fees are rebates.
    """

    symbol: str
    venue: str = "BINANCE"
    kind: InstrumentKind = InstrumentKind.SPOT
    base: str = ""
    quote: str = ""
    tick_size: str
    lot_size: str
    min_qty: str = "0"
    max_qty: str = "0"  # 0 = unlimited
    min_notional: str = "0"
    maker_fee_bps: str = "1"
    taker_fee_bps: str = "1"

    def __post_init__(self) -> None:
        for field in ("tick_size", "lot_size"):
            value = Decimal(getattr(self, field))
            if not value.is_finite() or value <= 0:
                raise InstrumentError(f"{self.symbol}: {field} must be > 0, got {value}")
        for field in ("min_qty", "max_qty", "min_notional"):
            value = Decimal(getattr(self, field))
            if not value.is_finite() or value < 0:
                raise InstrumentError(f"{self.symbol}: {field} must be >= 0, got {value}")

    # -- cached decimals (msgspec structs are frozen; compute on demand, they are cheap) --
    @property
    def tick(self) -> Decimal:
        return Decimal(self.tick_size)

    @property
    def lot(self) -> Decimal:
        return Decimal(self.lot_size)

    @property
    def tick_float(self) -> float:
        return float(self.tick_size)

    @property
    def lot_float(self) -> float:
        return float(self.lot_size)

    @property
    def min_qty_lots(self) -> int:
        return self.qty_to_lots(Decimal(self.min_qty), Rounding.UP)

    @property
    def max_qty_lots(self) -> int:
        """0 means unlimited."""
        return self.qty_to_lots(Decimal(self.max_qty), Rounding.DOWN)

    # -- conversions --------------------------------------------------------------------
    def price_to_ticks(
        self, price: Decimal | str | float, rounding: Rounding = Rounding.NEAREST
    ) -> int:
        return _to_units(price, self.tick, rounding, self.symbol, "price")

    def qty_to_lots(self, qty: Decimal | str | float, rounding: Rounding = Rounding.DOWN) -> int:
        return _to_units(qty, self.lot, rounding, self.symbol, "qty")

    def ticks_to_price(self, price_ticks: int) -> Decimal:
        return price_ticks * self.tick

    def lots_to_qty(self, qty_lots: int) -> Decimal:
        return qty_lots * self.lot

    def notional_quote(self, price_ticks: int, qty_lots: int) -> Decimal:
        """Exact cash value of ``qty_lots`` at ``price_ticks`` in the quote asset."""
        return (price_ticks * qty_lots) * (self.tick * self.lot)

    def fee_quote(self, price_ticks: int, qty_lots: int, *, maker: bool) -> Decimal:
        bps = Decimal(self.maker_fee_bps if maker else self.taker_fee_bps)
        return self.notional_quote(price_ticks, qty_lots) * bps / Decimal(10_000)

    def min_notional_ok(self, price_ticks: int, qty_lots: int) -> bool:
        return self.notional_quote(price_ticks, qty_lots) >= Decimal(self.min_notional)


def _to_units(
    value: Decimal | str | float, unit: Decimal, rounding: Rounding, symbol: str, what: str
) -> int:
    if isinstance(value, float):
        # repr() gives the shortest string that round-trips: 28165.47 stays 28165.47.
        value = Decimal(repr(value))
    elif isinstance(value, str):
        value = Decimal(value)
    if not value.is_finite():
        raise InstrumentError(f"{symbol}: {what} is not finite: {value}")
    return int((value / unit).to_integral_value(_DECIMAL_ROUNDING[rounding]))


def infer_increment(values: list[str]) -> str:
    """Smallest decimal increment that represents every decimal string in ``values``.

    Used for recordings that do not ship exchange filters: "28165.47000000" counts as
    two decimals, not eight, because trailing zeros carry no information.
    """
    decimals = 0
    for text in values:
        if "." in text:
            frac = text.split(".", 1)[1].rstrip("0")
            decimals = max(decimals, len(frac))
    return "1" if decimals == 0 else "0." + "0" * (decimals - 1) + "1"
