"""Reference prices agents read from any market event, in (float) ticks.

The microprice weights each side's price by the *opposite* side's size: a thin ask pulls the
fair price towards the ask because it is about to be lifted (Stoikov 2018's first-order form).
"""

from __future__ import annotations

from sapphire.model.events import AnyMarketEvent, Bar, BookSnapshot, MarketEvent, Quote, Trade


def microprice_ticks(bid_ticks: int, bid_lots: int, ask_ticks: int, ask_lots: int) -> float:
    size = bid_lots + ask_lots
    if size <= 0:
        return 0.5 * (bid_ticks + ask_ticks)
    return (bid_ticks * ask_lots + ask_ticks * bid_lots) / size


PRICED_EVENTS: frozenset[type[MarketEvent]] = frozenset({Quote, Trade, Bar, BookSnapshot})
"""The event types :func:`reference_price` prices (it returns None for any other)."""


def reference_price(event: AnyMarketEvent, use_microprice: bool = True) -> float | None:
    """Microprice (or mid) for book events, last price for trades, close for bars; None else."""
    if isinstance(event, Quote):
        if event.bid_ticks <= 0 or event.ask_ticks < event.bid_ticks:
            return None
        if use_microprice:
            return microprice_ticks(
                event.bid_ticks, event.bid_lots, event.ask_ticks, event.ask_lots
            )
        return 0.5 * (event.bid_ticks + event.ask_ticks)
    if isinstance(event, Trade):
        return float(event.price_ticks) if event.price_ticks > 0 else None
    if isinstance(event, Bar):
        return float(event.close_ticks) if event.close_ticks > 0 else None
    if isinstance(event, BookSnapshot):
        if not event.bids or not event.asks:
            return None
        (bid, bid_lots), (ask, ask_lots) = event.bids[0], event.asks[0]
        if bid <= 0 or ask < bid:  # the rule for quotes: a crossed or zero book has no price
            return None
        if use_microprice:
            return microprice_ticks(bid, bid_lots, ask, ask_lots)
        return 0.5 * (bid + ask)
    return None
