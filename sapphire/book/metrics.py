"""Depth measures over an :class:`L2Book` (ticks/lots in, money only through the instrument)."""

from __future__ import annotations

from decimal import Decimal

from sapphire.book.l2 import L2Book
from sapphire.model.events import Side
from sapphire.model.instrument import Instrument


def depth_lots(book: L2Book, side: Side, n: int) -> int:
    """Total quantity of the best ``n`` levels of ``side``."""
    return sum(q for _, q in book.levels(side, n))


def depth_within_ticks(book: L2Book, side: Side, ticks: int) -> int:
    """Total quantity of ``side`` no more than ``ticks`` away from that side's best price."""
    levels = book.levels(side)
    if not levels:
        return 0
    best = levels[0][0]
    return sum(q for p, q in levels if abs(p - best) <= ticks)


def notional_depth_quote(book: L2Book, instrument: Instrument, side: Side, n: int) -> Decimal:
    """Exact quote-asset value of the best ``n`` levels of ``side``."""
    return sum((instrument.notional_quote(p, q) for p, q in book.levels(side, n)), start=Decimal(0))


def sweep(book: L2Book, taker_side: Side, qty_lots: int) -> tuple[int, int]:
    """What a taker of ``taker_side`` would get for ``qty_lots`` right now.

    Returns ``(filled_lots, sum of price_ticks * lots)``; a buyer takes the asks. Integers, so
    the caller decides how to turn the average price into money.
    """
    if qty_lots < 0:
        raise ValueError(f"qty_lots must be >= 0, got {qty_lots}")
    filled = cost = 0
    for price, qty in book.levels(taker_side.opposite):
        take = min(qty, qty_lots - filled)
        filled += take
        cost += take * price
        if filled == qty_lots:
            break
    return filled, cost


def sweep_vwap_ticks(book: L2Book, taker_side: Side, qty_lots: int) -> float | None:
    """Average fill price in ticks for a full ``qty_lots`` sweep; None if the book is too thin."""
    filled, cost = sweep(book, taker_side, qty_lots)
    if qty_lots == 0 or filled < qty_lots:
        return None
    return cost / filled
