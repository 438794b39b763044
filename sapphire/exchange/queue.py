"""Queue-position models for our resting orders against a recorded L2 book.

L2 data shows only the total size at a price, so where our order sits in that queue must be
estimated. Each of our orders carries ``ahead``: the recorded quantity in front of it.

* Trades at our price consume the queue front to back: first the recorded size ahead of our
  first order, then that order, then the recorded size between it and our next order, and so
  on. That keeps FIFO among our own orders at a level.
* Depth changes at our price are where models differ. :class:`ConservativeQueue` assumes every
  cancel happened behind us, moving us forward only when the level shrinks below ``ahead``.
  :class:`ProbQueue` (the estimator hftbacktest's ``ProbQueueModel`` family uses, after
  Rigtorp) splits a decrease not explained by trades between front and back with a
  probability from the relative sizes of both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sapphire.exchange.config import QueueConfig, QueueModelKind
from sapphire.exchange.state import SimOrder


class QueueModel:
    """Base: placement and the shared FIFO trade rule; subclasses define ``on_depth``."""

    def on_place(self, order: SimOrder, level_qty: int, last: SimOrder | None) -> None:
        """Join the back: behind the displayed size and behind our own earlier orders."""
        ahead = float(level_qty)
        if last is not None and last.ahead > ahead:
            ahead = last.ahead
        order.ahead = ahead
        order.cum_trade = 0.0

    def on_trade(self, orders: Sequence[SimOrder], trade_lots: int) -> list[tuple[SimOrder, int]]:
        """Fills from a recorded trade of ``trade_lots`` at our level, FIFO among ``orders``."""
        remaining = float(trade_lots)
        consumed = 0.0  # recorded size traded so far ahead of the order being looked at
        fills: list[tuple[SimOrder, int]] = []
        for order in orders:
            order.cum_trade += trade_lots
            gap = order.ahead - consumed
            if gap > 0.0 and remaining > 0.0:
                take = gap if gap < remaining else remaining
                consumed += take
                remaining -= take
            order.ahead = max(0.0, order.ahead - consumed)
            if remaining >= 1.0:
                lots = min(order.leaves_lots, int(remaining))
                if lots > 0:
                    remaining -= lots
                    fills.append((order, lots))
        return fills

    def on_depth(self, orders: Sequence[SimOrder], prev_lots: int, new_lots: int) -> None:
        raise NotImplementedError


class ConservativeQueue(QueueModel):
    """Only trades advance us; a shrinking level moves us only as far as it must."""

    def on_depth(self, orders: Sequence[SimOrder], prev_lots: int, new_lots: int) -> None:
        for order in orders:
            order.cum_trade = 0.0
            if order.ahead > new_lots:
                order.ahead = float(new_lots)


class ProbQueue(QueueModel):
    """``prob(front, back)`` is the probability that a cancel happened behind us."""

    def __init__(self, prob: Callable[[float, float], float]) -> None:
        self._prob = prob

    def on_depth(self, orders: Sequence[SimOrder], prev_lots: int, new_lots: int) -> None:
        floor = 0.0
        for order in orders:
            # Trades already moved us; only the part of the change they don't explain counts.
            change = prev_lots - new_lots - order.cum_trade
            order.cum_trade = 0.0
            front = order.ahead
            if change > 0.0:
                back = max(0.0, prev_lots - front)
                p = self._prob(front, back)
                front = front - (1.0 - p) * change + min(back - p * change, 0.0)
            front = min(front, float(new_lots))
            # Our later orders stay behind our earlier ones.
            order.ahead = max(front, floor, 0.0)
            floor = order.ahead


# The probability rules are small frozen classes, not closures: the venue is pickled whole
# into every checkpoint of a run (the venue actor's), and a closure cannot be pickled (a run
# with ``queue: prob_power`` failed at its first checkpoint).
@dataclass(frozen=True, slots=True)
class PowerProb:
    power: float

    def __call__(self, front: float, back: float) -> float:
        fb, ff = back**self.power, front**self.power
        total = fb + ff
        return 1.0 if total == 0.0 else fb / total


def log_prob(front: float, back: float) -> float:
    fb, ff = math.log1p(back), math.log1p(front)
    total = fb + ff
    return 1.0 if total == 0.0 else fb / total


@dataclass(frozen=True, slots=True)
class Power3Prob:
    power: float

    def __call__(self, front: float, back: float) -> float:
        total = front + back
        return 1.0 if total == 0.0 else 1.0 - (front / total) ** self.power


def queue_from_config(config: QueueConfig) -> QueueModel:
    if config.kind is QueueModelKind.CONSERVATIVE:
        return ConservativeQueue()
    if config.kind is QueueModelKind.PROB_POWER:
        return ProbQueue(PowerProb(config.power))
    if config.kind is QueueModelKind.PROB_LOG:
        return ProbQueue(log_prob)
    return ProbQueue(Power3Prob(config.power))
