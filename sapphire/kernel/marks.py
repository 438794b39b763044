"""The one mark-price rule: what a position is worth, for risk, PnL and reports alike.

A symbol is marked at the mid of its best bid and ask (quotes, or a snapshot's top levels);
a symbol that has no quote stream is marked at its last trade, a snapshot's mid standing
until the next trade (a depth recording's snapshot is one instant: the deltas after it are
not folded here, so a mark held at it would freeze for the rest of the run). Bars mark at
their close:
a bar strategy's symbol has nothing else, and without a mark pre-trade risk denies every
order (``risk_no_market``).

A quoted symbol's mark is its quote mid while its quotes are live: a trade, a snapshot or a
bar marks it only once its last quote is ``QUOTE_STALE_NS`` older (the quote stream stopped,
the market did not). Why: a recording whose quote file ended 46 s before its trades and depth
held every PnL row of those 46 s at the last quote; and a late snapshot's mid replaced a live
quote's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from sapphire.model.events import AnyMarketEvent, Bar, BookSnapshot, Quote, Trade

QUOTE_STALE_NS = 5_000_000_000
# A mark older than this prices no funding settlement: a funding file that runs on after the
# prices end settled 79 payments (26 days) at the last bar's close.
FUNDING_MARK_MAX_AGE_NS = 86_400_000_000_000
_UNTIMED = 1 << 62  # a quote time later than any event: live until the next quote


class MarkBook:
    """Latest mark per symbol, folded event by event."""

    __slots__ = ("marked_at", "marks", "quoted_at", "touch")

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.quoted_at: dict[str, int] = {}  # the last quote's event time, per quoted symbol
        self.marked_at: dict[str, int] = {}  # the event time of each symbol's mark
        # the best bid and ask the mark came from (quotes, a snapshot's top): the price an
        # internal cross may not be worse than
        self.touch: dict[str, tuple[int, int]] = {}

    def __setstate__(self, state: tuple[None, dict[str, object]]) -> None:
        # a checkpoint written before these existed restores without them; its quoted
        # symbols (a set, untimed) stay quoted until their next quote times them
        self.quoted_at, self.marked_at, self.touch = {}, {}, {}
        fields = dict(state[1])
        untimed: Iterable[str] = fields.pop("quoted", ())  # type: ignore[assignment]
        for name, value in fields.items():
            setattr(self, name, value)
        for symbol in untimed:
            self.quoted_at.setdefault(symbol, _UNTIMED)

    def _quote_live(self, symbol: str, ts_ns: int) -> bool:
        at = self.quoted_at.get(symbol)
        return at is not None and ts_ns - at < QUOTE_STALE_NS

    def update(self, event: AnyMarketEvent) -> None:
        kind = type(event)
        if kind is Quote:
            q: Quote = event  # type: ignore[assignment]
            if q.bid_ticks > 0 and q.ask_ticks > q.bid_ticks:
                self.marks[q.symbol] = (q.bid_ticks + q.ask_ticks) / 2
                self.quoted_at[q.symbol] = self.marked_at[q.symbol] = q.ts_event_ns
                self.touch[q.symbol] = (q.bid_ticks, q.ask_ticks)
        elif kind is Trade:
            t: Trade = event  # type: ignore[assignment]
            if t.price_ticks > 0 and not self._quote_live(t.symbol, t.ts_event_ns):
                self.marks[t.symbol] = float(t.price_ticks)
                self.marked_at[t.symbol] = t.ts_event_ns
                self.touch.pop(t.symbol, None)  # a trade marks it now: no touch known
        elif kind is BookSnapshot:
            s: BookSnapshot = event  # type: ignore[assignment]
            if (
                s.bids
                and s.asks
                and s.asks[0][0] > s.bids[0][0] > 0
                and not self._quote_live(s.symbol, s.ts_event_ns)
            ):
                self.marks[s.symbol] = (s.bids[0][0] + s.asks[0][0]) / 2
                self.marked_at[s.symbol] = s.ts_event_ns
                self.touch[s.symbol] = (s.bids[0][0], s.asks[0][0])
        elif kind is Bar:
            b: Bar = event  # type: ignore[assignment]
            if b.close_ticks > 0 and not self._quote_live(b.symbol, b.ts_event_ns):
                self.marks[b.symbol] = float(b.close_ticks)
                self.marked_at[b.symbol] = b.ts_event_ns
                self.touch.pop(b.symbol, None)

    def get(self, symbol: str) -> float | None:
        return self.marks.get(symbol)

    def cross_bound(self, symbol: str, side: int) -> int | None:
        """The worst price an order on ``side`` may trade at inside the firm: the touch (a
        buy no higher than the best ask, a sell no lower than the best bid), else the mark
        (no touch known: a trade or a bar marks the symbol); None without either."""
        touch = self.touch.get(symbol)
        if touch is not None:
            return touch[1] if side > 0 else touch[0]
        mark = self.marks.get(symbol)
        if mark is None:
            return None
        return math.floor(mark) if side > 0 else math.ceil(mark)

    def fresh(self, symbol: str, now_ns: int, max_age_ns: int) -> float | None:
        """The mark, unless it was set more than ``max_age_ns`` before ``now_ns``."""
        at = self.marked_at.get(symbol)
        if at is not None and now_ns - at > max_age_ns:
            return None
        return self.marks.get(symbol)
