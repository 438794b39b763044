"""Instruments: the one place where ticks/lots become prices, quantities and money."""

from __future__ import annotations

import enum
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import msgspec


class InstrumentKind(enum.StrEnum):
    SPOT = "spot"
    PERPETUAL = "perpetual"  # linear (USDT-margined) perpetual swap
    # Inverse (coin-margined) perpetual: quantity in contracts worth ``contract_size`` quote
    # each (Binance COIN-M, BitMEX XBTUSD, Bybit BTCUSD, Deribit, Kraken Futures); margin,
    # PnL and fees are in the base coin.
    INVERSE_PERPETUAL = "inverse_perpetual"
    FUTURE = "future"  # linear dated future (``expiry_ns``)
    INVERSE_FUTURE = "inverse_future"  # coin-margined dated future, money as inverse perpetual
    # Option: quantity in contracts of ``contract_size`` underlying, price = premium in the
    # settlement asset per unit of underlying (Deribit/OKX quote BTC options in BTC), so its
    # money follows the linear formula in ``settle``.
    OPTION = "option"


_INVERSE_KINDS = frozenset({InstrumentKind.INVERSE_PERPETUAL, InstrumentKind.INVERSE_FUTURE})
_MARGIN_KINDS = frozenset(
    {
        InstrumentKind.PERPETUAL,
        InstrumentKind.INVERSE_PERPETUAL,
        InstrumentKind.FUTURE,
        InstrumentKind.INVERSE_FUTURE,
    }
)

_MULTIPLIERS = (
    "bid_multiplier_up",
    "bid_multiplier_down",
    "ask_multiplier_up",
    "ask_multiplier_down",
)
_NON_NEGATIVE = (
    "min_qty",
    "max_qty",
    "min_notional",
    "min_price",
    "max_price",
    "market_min_qty",
    "market_max_qty",
    *_MULTIPLIERS,
)
# (low, high) pairs whose high end, when set (> 0), must not be under the low end
_RANGES = (
    ("min_price", "max_price"),
    ("market_min_qty", "market_max_qty"),
    ("bid_multiplier_down", "bid_multiplier_up"),
    ("ask_multiplier_down", "ask_multiplier_up"),
)


class OptionType(enum.StrEnum):
    CALL = "call"
    PUT = "put"


class PriceBandReference(enum.StrEnum):
    """The price a percent-price band (``bid_multiplier_up`` ...) is taken around."""

    # Binance spot PERCENT_PRICE / PERCENT_PRICE_BY_SIDE: the volume-weighted average price
    # of the trades of the last ``avg_price_mins`` minutes (0: the last trade)
    AVERAGE = "average"
    # Binance USD-M / COIN-M futures PERCENT_PRICE: the mark price
    MARK = "mark"


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


_FULL_BPS = 10_000  # a fee of the whole notional


class InstrumentError(ValueError):
    """An instrument definition or a conversion that breaks its rules."""


class Instrument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tradable instrument with its exchange filters.

    ``tick_size``, ``lot_size`` and ``min_notional`` are decimal strings exactly as the
    exchange publishes them ("0.01", "0.00001"), so no precision is lost in configs.
    Fees are in basis points of notional; negative maker fees are rebates.

    Money: every cash figure an instrument produces (``notional_quote``, ``fee_quote``,
    ``pnl_value``, ``money``) is in its **settlement asset** (``settle_asset``). For spot and
    linear perpetuals that is the quote asset, so "quote" in money names keeps its meaning.
    For an inverse perpetual it is the coin (``base``, e.g. BTC for BTCUSD): ``lot_size``
    counts contracts, each worth ``contract_size`` of the quote (USD), so ``n`` lots at price
    ``p`` are worth ``n x lot x contract_size / p`` coin, and a long closed realizes
    ``contracts x contract_size x (1/entry - 1/exit)`` coin. A linear contract is worth
    ``contract_size`` base units per contract (OKX BTC-USDT-SWAP 0.01 BTC; 1 for spot and
    Binance USDT-M, whose quantities are already in the coin).

    Two quantity grids: ``lot_size`` is the *order* step (an order must be a whole number of
    it); ``size_increment`` is the venue's *size precision*, the grid of every size it reports
    (book levels aggregate orders placed under older or other steps, so a Binance spot level
    can hold 4690.343896 BTC while orders step by 0.00001). All integer quantities
    (``qty_lots`` of events, fills, positions) count the finer of the two, ``lot``;
    ``lots_per_step`` of them make one order step. Without ``size_increment`` both grids are
    the lot step and nothing changes.
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
    # inverse: quote units per contract ("100" USD on Binance COIN-M BTCUSD_PERP, "1" on
    # BitMEX XBTUSD and Bybit BTCUSD); linear and options: base units per contract ("0.01"
    # BTC on OKX BTC-USDT-SWAP; "1" where quantities are in the coin, as on Binance)
    contract_size: str = "1"
    # the asset money settles in; "" = the rule (quote for linear, base for inverse)
    settle: str = ""
    # the venue's size precision (grid of book and trade sizes); "" = lot_size. lot_size
    # must be a whole multiple of it.
    size_increment: str = ""
    # ccxt's unified symbol ("BTC/USDT:USDT", "BTC/USD:BTC-210924") beside the venue id in
    # ``symbol``; "" where none was derived
    unified: str = ""
    # dated futures and options: expiry (ns since the epoch), 0 for none/unknown
    expiry_ns: int = 0
    # options only
    strike: str = ""
    option_type: OptionType | None = None
    # the fee schedule tier the maker/taker fees are from ("base": the venue's public
    # default tier, as ccxt and venue metadata give it); "" = not recorded
    fee_tier: str = ""
    # -- exchange filters beyond the grids; every default is "no limit" --------------------
    # PRICE_FILTER: the range of a limit price ("0" = no bound on that end)
    min_price: str = "0"
    max_price: str = "0"
    # MARKET_LOT_SIZE: the quantity range of a market order, on top of min_qty/max_qty
    # ("0" = no bound; Binance spot BTCUSDT caps a market order at 328.37710865 BTC while a
    # limit one may hold 9000)
    market_min_qty: str = "0"
    market_max_qty: str = "0"
    # Percent price band around ``price_band_reference``: a buy's limit price within
    # [bid_multiplier_down, bid_multiplier_up] x the reference, a sell's within the ask
    # pair; "0" turns that bound off (Binance futures PERCENT_PRICE bounds a buy from above
    # and a sell from below only; spot PERCENT_PRICE is the same pair on both sides)
    bid_multiplier_up: str = "0"
    bid_multiplier_down: str = "0"
    ask_multiplier_up: str = "0"
    ask_multiplier_down: str = "0"
    price_band_reference: PriceBandReference = PriceBandReference.AVERAGE
    avg_price_mins: int = 0  # the AVERAGE reference's window; 0 = the last trade
    # MAX_NUM_ORDERS: open orders per symbol (0 = unlimited)
    max_num_orders: int = 0
    # Hyperliquid: a price has at most this many significant figures (5), whole prices
    # always allowed, on top of the tick grid (0 = no such rule). At 30,000 USD its grid's
    # 0.1 tick admits 30123.4, which the venue refuses: the real step there is 1 USD
    price_sig_figs: int = 0
    # -- margin of perpetuals and futures; "" = the venue's metadata gives none, and the
    # paper venue's default applies (``exchange.params.liquidation``) -------------------------
    # Maintenance margin, a fraction of the position's notional at the mark: BitMEX
    # ``maintMargin``, Kraken Futures ``marginLevels[0].maintenanceMargin``, Hyperliquid half
    # the initial margin at ``maxLeverage``. The first tier of a tiered schedule only (a
    # position past it needs more at the venue). Binance's ``maintMarginPercent`` is not
    # read: its API documents it "ignore" (2.5 on every symbol); its brackets are another
    # endpoint, which no recording holds
    maint_margin_rate: str = ""
    # The liquidation clearance fee, a fraction of the notional closed (Binance futures
    # ``liquidationFee``)
    liquidation_fee_rate: str = ""

    def _decimal(self, field: str) -> Decimal:
        """A field's decimal text, finite, or a one-line error naming it ("abc" raised
        decimal.InvalidOperation, and a NaN fee passed until the first fill)."""
        text = getattr(self, field)
        try:
            value = Decimal(text)
        except (ArithmeticError, TypeError, ValueError):
            raise InstrumentError(f"{self.symbol}: {field} {text!r} is not a number") from None
        if not value.is_finite():
            raise InstrumentError(f"{self.symbol}: {field} must be finite, got {text!r}")
        return value

    def __post_init__(self) -> None:
        for field in ("tick_size", "lot_size", "contract_size", "size_increment"):
            if field == "size_increment" and not getattr(self, field):
                continue
            value = self._decimal(field)
            if value <= 0:
                raise InstrumentError(f"{self.symbol}: {field} must be > 0, got {value}")
        for field in ("maker_fee_bps", "taker_fee_bps"):
            # a rebate is a negative fee; a fee beyond the whole notional is a typo
            if not -_FULL_BPS < self._decimal(field) < _FULL_BPS:
                raise InstrumentError(
                    f"{self.symbol}: {field} must be within +-{_FULL_BPS} bps (the notional), "
                    f"got {getattr(self, field)}"
                )
        if self.size_increment:
            steps = Decimal(self.lot_size) / Decimal(self.size_increment)
            if steps != steps.to_integral_value():
                raise InstrumentError(
                    f"{self.symbol}: lot_size {self.lot_size} is not a whole multiple of "
                    f"size_increment {self.size_increment}"
                )
        if self.kind is InstrumentKind.OPTION:
            if self.option_type is None or self.expiry_ns <= 0:
                raise InstrumentError(f"{self.symbol}: an option needs option_type and expiry_ns")
            if not self.strike or self._decimal("strike") <= 0:
                raise InstrumentError(f"{self.symbol}: an option needs a strike > 0")
        for field in _NON_NEGATIVE:
            value = self._decimal(field)
            if value < 0:
                raise InstrumentError(f"{self.symbol}: {field} must be >= 0, got {value}")
        # a range whose low end is above its high end lets no order through: a typo
        for low, high in _RANGES:
            if self._decimal(high) > 0 and self._decimal(low) > self._decimal(high):
                raise InstrumentError(
                    f"{self.symbol}: {low} {getattr(self, low)} > {high} {getattr(self, high)}"
                )
        for field in ("avg_price_mins", "max_num_orders", "price_sig_figs"):
            count = getattr(self, field)
            if count < 0:
                raise InstrumentError(f"{self.symbol}: {field} must be >= 0, got {count}")

        for field in ("maint_margin_rate", "liquidation_fee_rate"):
            # a fraction of the notional: 1 or more would take the whole position
            if getattr(self, field) and not 0 <= self._decimal(field) < 1:
                raise InstrumentError(
                    f"{self.symbol}: {field} must be a fraction in [0, 1), "
                    f"got {getattr(self, field)}"
                )

        if self.kind in _INVERSE_KINDS and not (self.settle or self.base):
            raise InstrumentError(f"{self.symbol}: an inverse instrument needs base or settle")

    # -- kind and settlement ------------------------------------------------------------------
    @property
    def inverse(self) -> bool:
        return self.kind in _INVERSE_KINDS

    @property
    def derivative(self) -> bool:
        """A position-only contract: a fill moves no base/quote, only margin and PnL."""
        return self.kind is not InstrumentKind.SPOT

    @property
    def liquidatable(self) -> bool:
        """Held on margin that a venue liquidates at a maintenance rate of the notional:
        perpetuals and dated futures (an option's margin is no such rate; spot has none)."""
        return self.kind in _MARGIN_KINDS

    @property
    def settle_asset(self) -> str:
        """The asset of every cash figure of this instrument (PnL, fees, margin, caps)."""
        if self.settle:
            return self.settle
        return self.base if self.inverse else self.quote

    # -- cached decimals (msgspec structs are frozen; compute on demand, they are cheap) --
    @property
    def tick(self) -> Decimal:
        return Decimal(self.tick_size)

    @property
    def lot(self) -> Decimal:
        """The unit of every integer quantity: the size increment (the book's grid), which
        is the lot step unless the venue reports finer sizes."""
        return Decimal(self.size_increment or self.lot_size)

    @property
    def lot_step(self) -> Decimal:
        """The order step (``lot_size``) as a quantity."""
        return Decimal(self.lot_size)

    @property
    def lots_per_step(self) -> int:
        """Integer quantity units in one order step (1 without a finer size increment)."""
        if not self.size_increment:
            return 1
        return int(Decimal(self.lot_size) / Decimal(self.size_increment))

    def on_lot_step(self, qty_lots: int) -> bool:
        """Whether an integer quantity is a whole number of order steps (orders must be)."""
        return qty_lots % self.lots_per_step == 0

    def order_qty_to_lots(
        self, qty: Decimal | str | float, rounding: Rounding = Rounding.DOWN
    ) -> int:
        """``qty`` rounded to the order step, in integer quantity units."""
        steps = _to_units(qty, self.lot_step, rounding, self.symbol, "qty")
        return steps * self.lots_per_step

    @property
    def contract(self) -> Decimal:
        return Decimal(self.contract_size)

    def _linear_unit(self) -> Decimal:
        """Settlement cash of one tick x one lot of a linear instrument."""
        unit = self.tick * self.lot
        # skipped for 1 so that existing hot paths (spot, USDT-M) pay nothing extra
        return unit if self.contract_size == "1" else unit * self.contract

    @property
    def tick_float(self) -> float:
        return float(self.tick_size)

    @property
    def lot_float(self) -> float:
        return float(self.size_increment or self.lot_size)

    @property
    def min_qty_lots(self) -> int:
        return self.qty_to_lots(Decimal(self.min_qty), Rounding.UP)

    @property
    def max_qty_lots(self) -> int:
        """0 means unlimited."""
        return self.qty_to_lots(Decimal(self.max_qty), Rounding.DOWN)

    # -- exchange filters in ticks and lots (0 = no bound) ----------------------------------
    @property
    def min_price_ticks(self) -> int:
        """The lowest tick price PRICE_FILTER lets through (``price >= minPrice``)."""
        return self.price_to_ticks(Decimal(self.min_price), Rounding.UP)

    @property
    def max_price_ticks(self) -> int:
        """The highest tick price PRICE_FILTER lets through; 0 means none."""
        return self.price_to_ticks(Decimal(self.max_price), Rounding.DOWN)

    @property
    def market_min_qty_lots(self) -> int:
        return self.qty_to_lots(Decimal(self.market_min_qty), Rounding.UP)

    @property
    def market_max_qty_lots(self) -> int:
        """0 means unlimited."""
        return self.qty_to_lots(Decimal(self.market_max_qty), Rounding.DOWN)

    def sig_figs_ok(self, price_ticks: int) -> bool:
        """Does the price keep to ``price_sig_figs`` (always, where there is no such rule;
        a whole price always passes, as Hyperliquid documents)?"""
        if not self.price_sig_figs:
            return True
        price = self.ticks_to_price(price_ticks)
        if price == price.to_integral_value():
            return True
        return len(price.normalize().as_tuple().digits) <= self.price_sig_figs

    @property
    def has_price_band(self) -> bool:
        return any(Decimal(getattr(self, f)) > 0 for f in _MULTIPLIERS)

    def price_band_ticks(self, buy: bool, reference_ticks: Fraction) -> tuple[int, int | None]:
        """``(lowest, highest)`` limit tick price the percent-price band lets through around
        ``reference_ticks`` (exact: a trade-weighted average is a fraction of ticks); the
        highest is None where no upper bound is set, the lowest 0 where no lower one is."""
        up, down = (
            (self.bid_multiplier_up, self.bid_multiplier_down)
            if buy
            else (self.ask_multiplier_up, self.ask_multiplier_down)
        )
        # ``price <= reference x up`` on a tick grid: the floor; ``>= reference x down``: the
        # ceiling (Fraction keeps both exact, a Decimal product could round across a tick)
        high = math.floor(reference_ticks * Fraction(up)) if Decimal(up) > 0 else None
        low = math.ceil(reference_ticks * Fraction(down)) if Decimal(down) > 0 else 0
        return low, high

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
        """Cash value of ``qty_lots`` at ``price_ticks`` in the settlement asset: exact for
        linear; for inverse ``contracts x size / price`` (28 significant digits)."""
        return self.position_value(price_ticks, qty_lots)

    def funding_quote(self, rate: Decimal, mark_ticks: Decimal | int, qty_lots: int) -> Decimal:
        """A perpetual's funding on a signed position at the mark: longs pay shorts when
        ``rate`` > 0 (-notional x rate; inverse: the notional in coin, a long still pays)."""
        return -self.position_value(mark_ticks, qty_lots) * rate

    def position_value(self, price_ticks: Decimal | int, qty_lots: int) -> Decimal:
        """The money rule: every notional, cap and cash figure of this instrument comes from
        here (``notional_quote`` at integer ticks; ``value_per_ticklot`` for tick x lot
        integer checks). Linear: ``qty x contract_size x price``; inverse: ``contracts x
        contract_size / price``. Accepts a fractional price (an average entry, a mid)."""
        if self.inverse:
            return (qty_lots * self.lot * self.contract) / (price_ticks * self.tick)
        return qty_lots * price_ticks * self._linear_unit()

    def value_per_ticklot(self) -> Decimal:
        """Linear only: the money of one tick x one lot under :meth:`position_value`, for
        hot paths that keep ``price_ticks x qty_lots`` as an integer (caps, float curves)."""
        if self.inverse:
            raise InstrumentError(f"{self.symbol}: an inverse notional is not tick x lot linear")
        return self.position_value(1, 1)

    def pnl_value(self, price_ticks: int, qty_lots: int) -> Decimal:
        """Signed value whose change is PnL in the settlement asset: buying ``qty_lots`` at
        ``price_ticks`` costs this much cash, holding them is worth it at the mark.

        Linear: the notional. Inverse: minus the notional, because a long of ``n`` contracts
        owes fewer coins as the price rises: PnL = value(exit) - value(entry) =
        ``n x size x (1/entry - 1/exit)``.
        """
        if self.inverse:
            return -self.notional_quote(price_ticks, qty_lots)
        return self.notional_quote(price_ticks, qty_lots)

    # -- PnL in "price units": linear ticks, inverse -1/ticks ---------------------------------
    # PnL is linear in the price for linear contracts and in -1/price for inverse ones. Books
    # that average entries (portfolio, venue account) average in these units, so one formula
    # serves both: PnL = (units(exit) - units(entry)) x signed lots, scaled by ``money``. The
    # average entry price of an inverse position is therefore the harmonic mean.
    def price_units(self, price_ticks: int | Fraction) -> Fraction:
        """Exact units of a tick price (for Fraction books; a mark may be x.5 ticks)."""
        if self.inverse:
            return -1 / Fraction(price_ticks)
        return Fraction(price_ticks)

    def price_units_dec(self, price_ticks: Decimal | int) -> Decimal:
        """Units of a (possibly fractional) tick price, as a Decimal."""
        if self.inverse:
            return Decimal(-1) / price_ticks
        return price_ticks if isinstance(price_ticks, Decimal) else Decimal(price_ticks)

    def units_to_ticks(self, units: Fraction) -> Fraction:
        """The tick price of ``price_units`` (inverse: the harmonic mean of averaged units)."""
        if self.inverse:
            return -1 / units
        return units

    def units_to_ticks_dec(self, units: Decimal) -> Decimal:
        if self.inverse:
            return Decimal(-1) / units
        return units

    def money(self, unit_lots: Decimal) -> Decimal:
        """Settlement-asset cash of ``unit_lots`` (price units x lots)."""
        if self.inverse:
            return unit_lots * self.lot * self.contract / self.tick
        return unit_lots * self._linear_unit()

    def money_exact(self, unit_lots: Fraction) -> Fraction:
        """:meth:`money` without rounding (margin tests at an exact mark)."""
        if self.inverse:
            return unit_lots * Fraction(self.lot) * Fraction(self.contract) / Fraction(self.tick)
        return unit_lots * Fraction(self._linear_unit())

    def quote_value(self, amount: Decimal, price_ticks: Decimal | int) -> Decimal:
        """``amount`` of the settlement asset in the quote asset at ``price_ticks``: the coin
        PnL of an inverse contract times the price; linear amounts already are quote."""
        if self.inverse:
            return amount * price_ticks * self.tick
        return amount

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
