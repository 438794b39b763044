"""ccxt's unified structures <-> Sapphire's integer ticks/lots (pure functions, no I/O).

ccxt hands out floats; every one of them becomes a ``Decimal`` through ``repr`` (the shortest
string that round-trips) before the instrument turns it into ticks or lots, so ``61601.01``
is exactly 6160101 ticks.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec

from sapphire.data.venue_instruments import instrument_from_market as venue_instrument
from sapphire.model.events import Side
from sapphire.model.instrument import Instrument, InstrumentError, InstrumentKind, Rounding
from sapphire.model.orders import OrderStatus, OrderType, SubmitOrder, TimeInForce

CcxtDict = Mapping[str, Any]


class ConversionError(ValueError):
    """A ccxt structure that cannot be expressed in the instrument's units."""


def decimal_text(value: object) -> str:
    """Canonical decimal string of a ccxt number or string ("0.01000000" -> "0.01")."""
    if value is None:
        return "0"
    dec = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    if not dec.is_finite():
        raise ConversionError(f"not a finite number: {value!r}")
    text = format(dec.normalize(), "f")
    return text


def instrument_from_market(market: CcxtDict, venue: str = "BINANCE") -> Instrument:
    """A ccxt market (``load_markets`` value) as an :class:`Instrument`.

    The very conversion replay uses on recorded venue metadata
    (:func:`sapphire.data.venue_instruments.instrument_from_market`), so a live instrument
    equals the replayed one field for field: order and size grids (``size_increment``),
    contract size, settlement asset, kind, unified symbol, expiry, fees (ccxt's fractions
    as basis points). ccxt's ``precision`` must be in TICK_SIZE mode (a step, not a digit
    count), as it is for Binance. Which of these instruments the live gateway may trade is
    :func:`check_live_tradeable`'s call.
    """
    try:
        inst = venue_instrument(market, venue)
    except (InstrumentError, KeyError) as exc:
        raise ConversionError(f"{market.get('symbol')}: {exc}") from exc
    if inst is None:
        raise ConversionError(f"{market.get('symbol')}: not a tradeable market")
    return inst


def check_live_tradeable(inst: Instrument) -> None:
    """Raise :class:`ConversionError` for an instrument the live path cannot book.

    The live fee and fill conversions here are linear (fees in quote, or base x price); an
    inverse contract booked through them would be ~price^2 off, so it is refused until they
    settle in the coin (paper and backtests book inverse contracts). Dated futures and
    options need expiry handling the gateway does not have.
    """
    if inst.inverse:
        raise ConversionError(
            f"{inst.unified or inst.symbol}: inverse contracts are not supported on the ccxt path"
        )
    if inst.kind not in (InstrumentKind.SPOT, InstrumentKind.PERPETUAL):
        raise ConversionError(
            f"{inst.unified or inst.symbol}: only spot and perpetual swaps are supported "
            f"on the ccxt path, not {inst.kind.value}"
        )


class GridMismatch(ConversionError):
    """The venue's grids disagree with the run's instrument for the same symbol."""


def live_units(venue: Instrument, system: Instrument | None) -> Instrument:
    """The venue's instrument in the run's integer quantity unit.

    ``SubmitOrder.qty_lots`` and fills count the run's ``lot``, so the gateway converting them
    to venue amounts must count the same unit: with ``size_increment`` on one side only,
    every order would be ``lots_per_step`` times off. Orders and fills are on the order step,
    so the gateway needs no finer grid: without the run's instrument it counts order steps,
    as instruments made from exchange filters (instrument files) do; with it, it takes the
    run's size grid after checking tick and order step agree (:class:`GridMismatch` names
    the field otherwise).
    """
    if system is None:
        return msgspec.structs.replace(venue, size_increment="")
    for field in ("tick_size", "lot_size"):
        ours, theirs = getattr(system, field), getattr(venue, field)
        if Decimal(ours) != Decimal(theirs):
            raise GridMismatch(
                f"{venue.symbol}: {field} {theirs} at the venue != {ours} in the run's instrument"
            )
    return msgspec.structs.replace(venue, size_increment=system.size_increment)


def ticks(inst: Instrument, value: object) -> int:
    """A venue price as ticks; a price off the tick grid is an error, never rounded away."""
    exact = Decimal(decimal_text(value))
    result = inst.price_to_ticks(exact, Rounding.NEAREST)
    if inst.ticks_to_price(result) != exact:
        raise ConversionError(f"{inst.symbol}: price {value!r} is not on the {inst.tick} grid")
    return result


def lots(inst: Instrument, value: object) -> int:
    exact = Decimal(decimal_text(value))
    result = inst.qty_to_lots(exact, Rounding.NEAREST)
    if inst.lots_to_qty(result) != exact:
        raise ConversionError(f"{inst.symbol}: quantity {value!r} is not on the {inst.lot} grid")
    return result


def display_lots(inst: Instrument, value: object) -> int:
    """Market-data quantity in lots, to the nearest lot. Books and trades may hold sizes off
    today's LOT_SIZE grid (orders placed before a filter change); a displayed size is not
    ours to refuse, and a non-zero size never becomes 0 (that would delete a level)."""
    exact = Decimal(decimal_text(value))
    result = inst.qty_to_lots(exact, Rounding.NEAREST)
    return 1 if result == 0 and exact > 0 else result


def order_request(order: SubmitOrder, inst: Instrument) -> tuple[str, str, float, float | None]:
    """``(type, side, amount, price)`` for ``create_order``. ccxt wants floats; they are
    formatted back to exact strings by ccxt's precision rules (TICK_SIZE mode)."""
    side = "buy" if order.side is Side.BUY else "sell"
    amount = float(inst.lots_to_qty(order.qty_lots))
    if order.order_type is OrderType.MARKET:
        return "market", side, amount, None
    if order.limit_ticks is None:
        raise ConversionError(f"{order.client_order_id}: limit order without a price")
    return "limit", side, amount, float(inst.ticks_to_price(order.limit_ticks))


def order_params(
    order: SubmitOrder, client_id_key: str, venue_client_id: str | None = None
) -> dict[str, Any]:
    """``venue_client_id``: the run-scoped id the venue sees (default: the internal one)."""
    params: dict[str, Any] = {client_id_key: venue_client_id or order.client_order_id}
    if order.order_type is OrderType.LIMIT:
        if order.tif is TimeInForce.POST_ONLY:
            params["postOnly"] = True
        else:
            params["timeInForce"] = order.tif.value.upper()
    return params


_STATUS = {
    "open": OrderStatus.ACCEPTED,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "cancelled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}


def order_status(order: CcxtDict, filled_lots: int) -> OrderStatus | None:
    """Sapphire status of a ccxt order; None for a transitional state ("canceling")."""
    status = _STATUS.get(str(order.get("status")))
    if status is OrderStatus.ACCEPTED and filled_lots > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def ts_ns(value: object) -> int:
    """ccxt millisecond timestamps -> ns (0 when the venue sent none)."""
    return int(value) * 1_000_000 if isinstance(value, int | float) else 0


def fee_quote(
    trade: CcxtDict, inst: Instrument, price_ticks: int, codes: tuple[str, str] = ("", "")
) -> Decimal:
    """A trade's fee in the quote asset. A fee in base is valued at the trade price; a fee
    in a third asset (BNB) is not convertible here and counts as 0 (``fee_in_other`` tells).
    ``codes``: ccxt's unified (base, quote) codes, which name the fee currency."""
    fee = trade.get("fee") or {}
    cost = fee.get("cost")
    if cost is None:
        return Decimal(0)
    amount = Decimal(decimal_text(cost))
    currency = fee.get("currency")
    if currency in (None, inst.quote, codes[1]):
        return amount
    if currency in (inst.base, codes[0]):
        return amount * inst.ticks_to_price(price_ticks)
    return Decimal(0)


def fee_coin(trade: CcxtDict, inst: Instrument, codes: tuple[str, str] = ("", "")) -> Decimal:
    """The amount of a spot trade's coin the venue kept as its fee (Binance charges a buy's
    commission in the coin bought, unless paid in BNB): the account holds the trade's
    amount less it. 0 for a fee in quote or a third asset, and for derivatives (their fees
    are cash)."""
    fee = trade.get("fee") or {}
    cost = fee.get("cost")
    currency = fee.get("currency")
    if inst.derivative or cost in (None, 0) or currency not in (inst.base, codes[0]):
        return Decimal(0)
    if currency in (inst.quote, codes[1]):  # a market whose codes name one asset
        return Decimal(0)
    return Decimal(decimal_text(cost))


def fee_in_other(trade: CcxtDict, inst: Instrument, codes: tuple[str, str] = ("", "")) -> bool:
    fee = trade.get("fee") or {}
    known = (None, inst.quote, inst.base, *codes)
    return fee.get("cost") not in (None, 0) and fee.get("currency") not in known


def matches_intent(order: SubmitOrder, venue_order: CcxtDict, inst: Instrument) -> str:
    """Why a venue order under this order's client id is not the order we sent ("" when
    it is): a gateway only adopts a venue order whose side, size and price are the intent's."""
    side = "buy" if order.side is Side.BUY else "sell"
    if str(venue_order.get("side", side)).lower() != side:
        return f"side {venue_order.get('side')} != {side}"
    amount = venue_order.get("amount")
    try:
        if amount is not None and lots(inst, amount) != order.qty_lots:
            return f"amount {amount} != {inst.lots_to_qty(order.qty_lots)}"
        price = venue_order.get("price")
        limit = order.limit_ticks
        limit_order = order.order_type is OrderType.LIMIT and limit is not None
        if limit_order and price and limit is not None and ticks(inst, price) != limit:
            return f"price {price} != {inst.ticks_to_price(limit)}"
    except ConversionError as exc:
        return str(exc)
    return ""
