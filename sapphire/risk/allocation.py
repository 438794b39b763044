"""Capital allocation across agents and aggregation of their signals."""

from __future__ import annotations

from decimal import Decimal

from sapphire.model.orders import Signal


def allocate_capital(total_quote: Decimal, weights: dict[str, float]) -> dict[str, Decimal]:
    """Split capital in proportion to non-negative weights (all zero -> nothing allocated)."""
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"allocation weights must be >= 0: {weights}")
    total_weight = sum(weights.values())
    if total_weight == 0:
        return dict.fromkeys(weights, Decimal(0))
    return {
        agent: (total_quote * Decimal(repr(w)) / Decimal(repr(total_weight))).quantize(
            Decimal("0.00000001")
        )
        for agent, w in weights.items()
    }


class SignalAggregator:
    """Weighted consensus per symbol over each agent's latest signal, in [-1, 1].

    ``mode="vote"`` counts signs instead of averaging strengths, so one loud agent cannot
    outweigh a majority.
    """

    def __init__(self, weights: dict[str, float], mode: str = "weighted") -> None:
        if mode not in ("weighted", "vote"):
            raise ValueError(f"unknown aggregation mode {mode!r} (weighted | vote)")
        self._weights = weights
        self._mode = mode
        self._latest: dict[str, dict[str, float]] = {}

    def update(self, signal: Signal) -> None:
        strength = max(-1.0, min(1.0, signal.strength))
        self._latest.setdefault(signal.symbol, {})[signal.agent_id] = strength

    def consensus(self, symbol: str) -> float:
        latest = self._latest.get(symbol)
        if not latest:
            return 0.0
        total_w = 0.0
        acc = 0.0
        for agent, strength in latest.items():
            w = self._weights.get(agent, 1.0)
            value = (strength > 0) - (strength < 0) if self._mode == "vote" else strength
            acc += w * value
            total_w += w
        return acc / total_w if total_w else 0.0

    def symbols(self) -> list[str]:
        return sorted(self._latest)
