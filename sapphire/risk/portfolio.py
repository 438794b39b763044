"""Positions and PnL per (agent, symbol), folded from fills. Exact: lots and Decimal cash.

Cash is in each instrument's settlement asset (the quote for linear, the coin for inverse):
entries are averaged in the instrument's price units (ticks, or -1/ticks for inverse), so
the same fold gives linear PnL and inverse PnL ``contracts x size x (1/entry - 1/exit)``.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import msgspec

from sapphire.model.instrument import Instrument
from sapphire.model.orders import OrderFilled, Position

_ZERO = Decimal(0)


class PositionState(msgspec.Struct, kw_only=True):
    qty_lots: int = 0
    # Total cost in price-unit lots (tick-lots for linear; -lots/ticks for inverse), as a
    # Fraction so partial closes keep the average entry exact.
    cost_ticklots: Fraction = Fraction(0)
    realized_pnl_quote: Decimal = _ZERO
    fees_quote: Decimal = _ZERO
    traded_lots: int = 0

    def avg_entry_ticks(self, inst: Instrument | None = None) -> Decimal:
        """Average entry price in ticks (inverse: the harmonic mean, in ``inst``'s units)."""
        if self.qty_lots == 0:
            return _ZERO
        units = self.cost_ticklots / self.qty_lots
        return _to_decimal(units if inst is None else inst.units_to_ticks(units))


class Portfolio:
    """Folds fills into positions; marks to a price for unrealized PnL."""

    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self._instruments = instruments
        self.positions: dict[tuple[str, str], PositionState] = {}

    def apply_fill(self, fill: OrderFilled) -> PositionState:
        inst = self._instruments[fill.symbol]
        state = self.positions.setdefault((fill.agent_id, fill.symbol), PositionState())
        signed = int(fill.side) * fill.qty_lots
        state.fees_quote += fill.fee_quote
        state.traded_lots += fill.qty_lots
        if state.qty_lots == 0 or (state.qty_lots > 0) == (signed > 0):
            state.qty_lots += signed
            state.cost_ticklots += signed * inst.price_units(fill.price_ticks)
            return state
        # Reducing (and possibly flipping): realize PnL on the closed part at the average entry.
        closing = min(abs(signed), abs(state.qty_lots))
        direction = 1 if state.qty_lots > 0 else -1
        avg_cost_per_lot = state.cost_ticklots / state.qty_lots
        exit_units = inst.price_units(fill.price_ticks)
        pnl_ticklots = (exit_units - avg_cost_per_lot) * closing * direction
        state.realized_pnl_quote += inst.money(_to_decimal(pnl_ticklots))
        remaining_old = state.qty_lots - direction * closing
        if remaining_old == 0:
            flipped = signed + direction * closing
            state.qty_lots = flipped
            state.cost_ticklots = flipped * exit_units
        else:
            state.cost_ticklots = avg_cost_per_lot * remaining_old
            state.qty_lots = remaining_old
        return state

    def unrealized_quote(self, agent_id: str, symbol: str, mark_ticks: float | None) -> Decimal:
        """Mark-to-market PnL of the open position; zero while there is no mark yet."""
        state = self.positions.get((agent_id, symbol))
        if state is None or state.qty_lots == 0 or mark_ticks is None:
            return _ZERO
        inst = self._instruments[symbol]
        mark = inst.price_units_dec(Decimal(repr(mark_ticks)))
        return inst.money(mark * state.qty_lots - _to_decimal(state.cost_ticklots))

    def position_lots(self, agent_id: str, symbol: str) -> int:
        state = self.positions.get((agent_id, symbol))
        return 0 if state is None else state.qty_lots

    def symbol_position_lots(self, symbol: str) -> int:
        return sum(s.qty_lots for (_, sym), s in self.positions.items() if sym == symbol)

    def total_pnl_quote(self, agent_id: str | None, marks: dict[str, float]) -> Decimal:
        """Realized - fees + unrealized, for one agent or (None) the firm."""
        total = _ZERO
        for (agent, symbol), state in self.positions.items():
            if agent_id is not None and agent != agent_id:
                continue
            total += state.realized_pnl_quote - state.fees_quote
            if symbol in marks:
                total += self.unrealized_quote(agent, symbol, marks[symbol])
        return total

    def to_message(self, agent_id: str, symbol: str, now_ns: int) -> Position:
        state = self.positions.get((agent_id, symbol), PositionState())
        return Position(
            ts_event_ns=now_ns,
            agent_id=agent_id,
            symbol=symbol,
            qty_lots=state.qty_lots,
            avg_entry_ticks=state.avg_entry_ticks(self._instruments.get(symbol)),
            realized_pnl_quote=state.realized_pnl_quote,
            fees_quote=state.fees_quote,
        )


def _to_decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)
