"""The one mark-price rule: what a position is worth, for risk, PnL and reports alike.

A symbol is marked at the mid of its best bid and ask (quotes, or a snapshot's top levels);
a symbol that has no quote stream is marked at its last trade, a snapshot's mid standing
until the next trade (a depth recording's snapshot is one instant: the deltas after it are
not folded here, so a mark held at it would freeze for the rest of the run). Bars mark at
their close:
a bar strategy's symbol has nothing else, and without a mark pre-trade risk denies every
order (``risk_no_market``).
"""

from __future__ import annotations

from sapphire.model.events import AnyMarketEvent, Bar, BookSnapshot, Quote, Trade


class MarkBook:
    """Latest mark per symbol, folded event by event."""

    __slots__ = ("marks", "quoted")

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.quoted: set[str] = set()

    def update(self, event: AnyMarketEvent) -> None:
        kind = type(event)
        if kind is Quote:
            q: Quote = event  # type: ignore[assignment]
            if q.bid_ticks > 0 and q.ask_ticks > q.bid_ticks:
                self.marks[q.symbol] = (q.bid_ticks + q.ask_ticks) / 2
                self.quoted.add(q.symbol)
        elif kind is Trade:
            t: Trade = event  # type: ignore[assignment]
            if t.symbol not in self.quoted and t.price_ticks > 0:
                self.marks[t.symbol] = float(t.price_ticks)
        elif kind is BookSnapshot:
            s: BookSnapshot = event  # type: ignore[assignment]
            if s.bids and s.asks and s.asks[0][0] > s.bids[0][0] > 0:
                self.marks[s.symbol] = (s.bids[0][0] + s.asks[0][0]) / 2
        elif kind is Bar:
            b: Bar = event  # type: ignore[assignment]
            if b.symbol not in self.quoted and b.close_ticks > 0:
                self.marks[b.symbol] = float(b.close_ticks)

    def get(self, symbol: str) -> float | None:
        return self.marks.get(symbol)
