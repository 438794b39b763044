"""Balances, positions, PnL and fees for the paper exchange (cash is Decimal: money rule).

Spot: a fill moves base and quote balances; the fee is charged in the quote asset (Binance
charges the received asset unless BNB pays; quote keeps every cash figure in one currency).
Linear perpetual: a fill moves only the position; realized PnL, fees and funding settle in the
quote balance, and open positions and orders tie up ``notional / leverage`` of initial margin.
Inverse perpetual: the same, in the settlement coin (``Instrument.settle_asset``, e.g. BTC):
notional, margin, fees and funding are ``contracts x size / price`` coin, the average entry is
the harmonic mean, and PnL is ``contracts x size x (1/entry - 1/exit)`` (Instrument's rule).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, Context, Decimal
from fractions import Fraction

import msgspec

from sapphire.model.events import Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import Position

_ZERO = Decimal(0)
# Locks live on a fixed grid, added and released in a context wide enough to keep them exact
# (60 digits: totals up to 1e42 at this grid; the default 28 could not even hold 2e10 PEPE on
# it), so no 1E-25 rounding is left locked with no order open.
LOCK_QUANTUM = Decimal("1e-18")
LOCK_CONTEXT = Context(prec=60)


class PositionState:
    __slots__ = ("avg_entry_ticks", "fees_quote", "funding_quote", "qty_lots", "realized_quote")

    def __init__(self) -> None:
        self.qty_lots = 0
        self.avg_entry_ticks = _ZERO
        self.realized_quote = _ZERO
        self.fees_quote = _ZERO
        self.funding_quote = _ZERO  # received (+) or paid (-)


def _margined(instruments: Mapping[str, Instrument]) -> dict[str, list[str]]:
    """The liquidatable symbols of each settlement asset, in instrument order."""
    out: dict[str, list[str]] = {}
    for symbol, inst in instruments.items():
        if inst.liquidatable:
            out.setdefault(inst.settle_asset, []).append(symbol)
    return out


class MarginState(msgspec.Struct, frozen=True, kw_only=True):
    """An account's margin in one settlement asset at exact marks: ``equity`` (the balance
    plus the positions' unrealized PnL) against ``maintenance`` (their notional at the mark
    x the maintenance rate). Fractions, so the test is exact and the same in every runner."""

    equity: Fraction
    maintenance: Fraction

    @property
    def due(self) -> bool:
        """Liquidated: the equity fell to or below the maintenance margin."""
        return self.equity <= self.maintenance


class Account:
    # the settlement assets whose balance went below zero: a loss past the margin, where
    # the price gapped past bankruptcy before the venue's liquidation (or it was off); a
    # class default, so an account pickled before it was kept restores with none
    below_zero: frozenset[str] = frozenset()

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        balances: Mapping[str, Decimal],
        *,
        leverage: int = 1,
        mark: Callable[[str], int | None] | None = None,
    ) -> None:
        """``mark``: a symbol's mark price in ticks (None: none yet), by which an open
        derivative position's unrealized loss is taken from what backs new orders."""
        if leverage < 1:
            raise ValueError("leverage must be >= 1")
        self._mark = mark
        self._instruments = dict(instruments)
        self._balances: dict[str, Decimal] = {a: Decimal(v) for a, v in balances.items()}
        self._locked: dict[str, Decimal] = {}
        self._leverage = Decimal(leverage)
        self._positions: dict[str, PositionState] = {s: PositionState() for s in instruments}
        # the perpetuals and futures of each settlement asset: what a liquidation tests
        self._margined = _margined(self._instruments)
        # assets whose balance moved since the venue last tested their margin; all of them
        # at first, so a venue restored from a snapshot tests what it restored
        self.changed: set[str] = set(self._margined)

    def __setstate__(self, state: dict[str, object]) -> None:
        """An account pickled before the margin test kept its assets gets them now."""
        self.__dict__.update(state)
        if "changed" not in state:
            self._margined = _margined(self._instruments)
            self.changed = set(self._margined)

    # -- balances ---------------------------------------------------------------------------
    def balance(self, asset: str) -> Decimal:
        return self._balances.get(asset, _ZERO)

    def locked(self, asset: str) -> Decimal:
        return self._locked.get(asset, _ZERO)

    def available(self, asset: str) -> Decimal:
        """Free to back new orders: balance less order locks less perpetual position margin,
        less an open position's unrealized loss at the mark (a position deep under water
        left every new order as backed as before; a gain backs nothing until realized)."""
        free = self.balance(asset) - self.locked(asset)
        for symbol, pos in self._positions.items():
            inst = self._instruments[symbol]
            if inst.derivative and inst.settle_asset == asset and pos.qty_lots:
                free -= self.position_margin(symbol)
                mark = self._mark(symbol) if self._mark is not None else None
                if mark is not None:
                    free += min(self.unrealized_quote(symbol, mark), _ZERO)
        return free

    def balances(self) -> dict[str, Decimal]:
        return dict(sorted(self._balances.items()))

    def position_margin(self, symbol: str) -> Decimal:
        inst = self._instruments[symbol]
        pos = self._positions[symbol]
        if pos.qty_lots == 0 and inst.inverse:
            return _ZERO  # no division by the zero entry of a flat position
        notional = inst.position_value(pos.avg_entry_ticks, abs(pos.qty_lots))
        return notional / self._leverage

    def order_lock(
        self, inst: Instrument, side: Side, price_ticks: int, qty_lots: int, reducing: int = 0
    ) -> tuple[str, Decimal]:
        """Asset and amount an order of ``qty_lots`` at ``price_ticks`` must reserve;
        ``reducing``: lots of a derivative order that close the position: nothing to
        reserve (the margin they free pays their fee)."""
        opening = qty_lots - reducing
        notional = inst.notional_quote(price_ticks, opening)
        fee = inst.fee_quote(price_ticks, opening, maker=False).copy_abs()
        if inst.derivative:
            asset, need = inst.settle_asset, notional / self._leverage + fee
        elif side is Side.BUY:
            asset, need = inst.quote, notional + fee
        else:
            asset, need = inst.base, inst.lots_to_qty(qty_lots)
        return asset, need.quantize(LOCK_QUANTUM, ROUND_CEILING, context=LOCK_CONTEXT)

    def lock(self, asset: str, amount: Decimal) -> None:
        self._locked[asset] = LOCK_CONTEXT.add(self.locked(asset), amount)

    def release(self, asset: str, amount: Decimal) -> None:
        self._locked[asset] = LOCK_CONTEXT.subtract(self.locked(asset), amount)

    # -- fills and funding ------------------------------------------------------------------
    def apply_fill(
        self, inst: Instrument, side: Side, price_ticks: int, qty_lots: int, fee: Decimal
    ) -> Decimal:
        """Book one fill; returns the realized PnL it produced (quote)."""
        pos = self._positions[inst.symbol]
        realized = _ZERO
        signed = int(side) * qty_lots
        if pos.qty_lots == 0 or (pos.qty_lots > 0) == (signed > 0):
            total = abs(pos.qty_lots) + qty_lots
            if inst.inverse:
                # average in 1/price (the harmonic mean): the only entry at which PnL stays
                # contracts x size x (1/entry - 1/exit) after adding to a position
                held = _ZERO
                if pos.qty_lots:
                    held = abs(pos.qty_lots) * inst.price_units_dec(pos.avg_entry_ticks)
                units = (held + qty_lots * inst.price_units_dec(price_ticks)) / total
                pos.avg_entry_ticks = inst.units_to_ticks_dec(units)
            else:
                pos.avg_entry_ticks = (
                    abs(pos.qty_lots) * pos.avg_entry_ticks + qty_lots * price_ticks
                ) / total
            pos.qty_lots += signed
        else:
            closing = min(qty_lots, abs(pos.qty_lots))
            direction = 1 if pos.qty_lots > 0 else -1
            realized = inst.money(
                (inst.price_units_dec(price_ticks) - inst.price_units_dec(pos.avg_entry_ticks))
                * closing
                * direction
            )
            pos.qty_lots += signed
            if pos.qty_lots == 0:
                pos.avg_entry_ticks = _ZERO
            elif (pos.qty_lots > 0) != (direction > 0):
                pos.avg_entry_ticks = Decimal(price_ticks)  # flipped: the rest opened here
        pos.realized_quote += realized
        pos.fees_quote += fee
        if inst.derivative:
            self._add(inst.settle_asset, realized - fee)
        else:
            self._add(inst.quote, -int(side) * inst.notional_quote(price_ticks, qty_lots) - fee)
            self._add(inst.base, int(side) * inst.lots_to_qty(qty_lots))
        return realized

    def apply_funding(self, inst: Instrument, rate: Decimal, mark_ticks: int | Decimal) -> Decimal:
        """Longs pay shorts when ``rate`` > 0: payment = -position notional at mark x rate."""
        pos = self._positions[inst.symbol]
        if not inst.derivative or pos.qty_lots == 0:
            return _ZERO
        # inverse: notional in coin; a long still pays when the rate is positive
        payment = inst.funding_quote(rate, mark_ticks, pos.qty_lots)
        pos.funding_quote += payment
        self._add(inst.settle_asset, payment)
        return payment

    # -- maintenance margin -----------------------------------------------------------------
    def margin_positions(self, asset: str) -> list[str]:
        """The open perpetual and futures positions settled in ``asset`` (instrument order)."""
        positions = self._positions
        return [s for s in self._margined.get(asset, ()) if positions[s].qty_lots]

    def margin(
        self, asset: str, marks: Mapping[str, Fraction], rates: Mapping[str, Fraction]
    ) -> MarginState:
        """The margin of ``asset`` with each open position at its exact mark (``marks``)
        and maintenance rate (``rates``): cross margin, the whole balance backs them all."""
        equity = Fraction(self.balance(asset))
        maintenance = Fraction(0)
        for symbol in self.margin_positions(asset):
            inst, pos = self._instruments[symbol], self._positions[symbol]
            units = inst.price_units(marks[symbol])
            entry = inst.price_units(Fraction(pos.avg_entry_ticks))
            equity += inst.money_exact((units - entry) * pos.qty_lots)
            maintenance += abs(inst.money_exact(units * pos.qty_lots)) * rates[symbol]
        return MarginState(equity=equity, maintenance=maintenance)

    def liquidation_bounds(
        self, symbol: str, rate: Fraction
    ) -> tuple[Fraction | None, Fraction | None]:
        """The marks (exact ticks) at which the position in ``symbol``, the only one in its
        settlement asset, reaches its maintenance margin: it is liquidated at a mark <= the
        first or >= the second (None: no such mark; a second of 0: at every mark).

        Equity - maintenance is ``a x units(mark) + b`` in the instrument's price units
        (linear: the price; inverse: -1/price, both rising with the price), so it crosses
        zero once: at ``units = -b / a``."""
        inst, pos = self._instruments[symbol], self._positions[symbol]
        qty = pos.qty_lots
        k = inst.money_exact(Fraction(1))
        # |notional| = k x |qty| x units for linear (units > 0), -k x |qty| x units inverse
        sign = -1 if inst.inverse else 1
        a = k * (qty - sign * rate * abs(qty))
        b = Fraction(self.balance(inst.settle_asset)) - k * qty * inst.price_units(
            Fraction(pos.avg_entry_ticks)
        )
        if a == 0:  # a 100 % maintenance rate: the same margin at every mark
            return (None, Fraction(0)) if b <= 0 else (None, None)
        units = -b / a
        if inst.inverse and units >= 0:  # every mark's units (< 0) lie below it
            return (None, Fraction(0)) if a > 0 else (None, None)
        if not inst.inverse and units <= 0:  # every mark (> 0) lies above it
            return (None, None) if a > 0 else (None, Fraction(0))
        mark = inst.units_to_ticks(units)
        return (mark, None) if a > 0 else (None, mark)

    # -- reporting --------------------------------------------------------------------------
    def unrealized_quote(self, symbol: str, mark_ticks: int) -> Decimal:
        inst = self._instruments[symbol]
        pos = self._positions[symbol]
        if pos.qty_lots == 0 and inst.inverse:
            return _ZERO
        return inst.money(
            (inst.price_units_dec(mark_ticks) - inst.price_units_dec(pos.avg_entry_ticks))
            * pos.qty_lots
        )

    def position(self, symbol: str, ts_ns: int, agent_id: str = "") -> Position:
        pos = self._positions[symbol]
        return Position(
            ts_event_ns=ts_ns,
            agent_id=agent_id,
            symbol=symbol,
            qty_lots=pos.qty_lots,
            avg_entry_ticks=pos.avg_entry_ticks,
            realized_pnl_quote=pos.realized_quote,
            fees_quote=pos.fees_quote,
        )

    def position_state(self, symbol: str) -> PositionState:
        return self._positions[symbol]

    def adjust(self, asset: str, amount: Decimal) -> None:
        """A venue's own booking outside a fill (a venue double moving a fee to the coin
        it charges it in)."""
        self._add(asset, amount)

    def _add(self, asset: str, amount: Decimal) -> None:
        self.changed.add(asset)
        balance = self._balances[asset] = self.balance(asset) + amount
        if balance < 0 and asset not in self.below_zero:
            self.below_zero = self.below_zero | {asset}
