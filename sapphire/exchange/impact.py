"""Optional market impact: displayed liquidity our taker fills consumed, recovering over time.

A recorded book does not know we traded, so without this two market orders in the same
instant would both fill against the same displayed size. With it, each level remembers how
much we took; that amount is hidden and comes back linearly over ``recovery_ns``.
"""

from __future__ import annotations

from sapphire.model.events import Side


class ImpactTracker:
    __slots__ = ("_consumed", "_recovery_ns")

    def __init__(self, recovery_ns: int) -> None:
        if recovery_ns <= 0:
            raise ValueError("recovery_ns must be > 0")
        self._recovery_ns = recovery_ns
        self._consumed: dict[tuple[Side, int], tuple[int, int]] = {}

    def hidden(self, side: Side, price_ticks: int, now_ns: int) -> int:
        """Lots at ``(side, price)`` still hidden by our earlier takes (rounded up)."""
        entry = self._consumed.get((side, price_ticks))
        if entry is None:
            return 0
        lots, since = entry
        elapsed = now_ns - since
        if elapsed >= self._recovery_ns:
            del self._consumed[(side, price_ticks)]
            return 0
        recovered = lots * max(0, elapsed) // self._recovery_ns
        return lots - recovered

    def available(self, side: Side, price_ticks: int, displayed: int, now_ns: int) -> int:
        return max(0, displayed - self.hidden(side, price_ticks, now_ns))

    def consume(self, side: Side, price_ticks: int, lots: int, now_ns: int) -> None:
        current = self.hidden(side, price_ticks, now_ns)
        self._consumed[(side, price_ticks)] = (current + lots, now_ns)
