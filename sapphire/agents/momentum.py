"""Momentum: EMA crossover on the microprice.

Chosen over trade-flow imbalance because it reads every event kind (quotes, trades, bars)
and its state is two floats, so it is cheap and exactly restorable. The EMAs are per event
(``alpha = 2 / (span + 1)``), not per unit of time: on a quote stream that makes them faster in
busy markets, which is what a momentum signal wants. The regime flips when the fast EMA leaves
the slow one by more than ``threshold_bps`` (a hysteresis band, so noise around the cross
does not churn orders); the agent then emits a :class:`Signal` and a market order towards
``regime * order_lots``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from sapphire.agents.base import AgentConfigError, AgentOutput, BaseAgent, decode_config
from sapphire.agents.features import PRICED_EVENTS, reference_price
from sapphire.model.events import AnyMarketEvent
from sapphire.model.instrument import Instrument


class MomentumConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fast_span: Annotated[int, msgspec.Meta(gt=0)] = 20
    slow_span: Annotated[int, msgspec.Meta(gt=1)] = 100
    threshold_bps: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    order_lots: Annotated[int, msgspec.Meta(gt=0)] = 1
    allow_short: bool = False
    use_microprice: bool = True

    def __post_init__(self) -> None:
        if self.fast_span >= self.slow_span:
            raise AgentConfigError(
                f"fast_span ({self.fast_span}) must be < slow_span ({self.slow_span})"
            )


class MomentumState(msgspec.Struct, kw_only=True):
    fast: float = 0.0
    slow: float = 0.0
    count: int = 0
    regime: int = 0


class MomentumAgent(BaseAgent[MomentumState]):
    # a price is all it reads: other events (depth levels) are no-ops for it
    market_events = PRICED_EVENTS

    def __init__(
        self, agent_id: str, instrument: Instrument, config: MomentumConfig | dict[str, Any]
    ) -> None:
        super().__init__(agent_id, instrument, MomentumState())
        self.config: MomentumConfig = decode_config(MomentumConfig, config)
        # order_lots counts order steps; integer lots may be a finer size grid
        self._order_lots = self.config.order_lots * instrument.lots_per_step
        self._a_fast = 2.0 / (self.config.fast_span + 1)
        self._a_slow = 2.0 / (self.config.slow_span + 1)
        self._thr = self.config.threshold_bps * 1e-4

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        if event.symbol != self.symbol:
            return ()
        price = reference_price(event, self.config.use_microprice)
        if price is None:
            return ()
        st = self.state
        if st.count == 0:
            st.fast = st.slow = price
        else:
            st.fast += self._a_fast * (price - st.fast)
            st.slow += self._a_slow * (price - st.slow)
        st.count += 1
        if st.count < self.config.slow_span:
            return ()
        rel = (st.fast - st.slow) / st.slow
        regime = st.regime
        if rel > self._thr:
            regime = 1
        elif rel < -self._thr:
            regime = -1 if self.config.allow_short else 0
        if regime == st.regime and not self._needs_rebalance():
            return ()
        out: list[AgentOutput] = []
        if regime != st.regime:
            st.regime = regime
            out.append(self.signal(event.ts_event_ns, rel / max(self._thr, 1e-12) / 4, "ema_cross"))
        out.extend(self.trade_towards(event.ts_event_ns, regime * self._order_lots))
        return out

    def _needs_rebalance(self) -> bool:
        # After a reject/expiry the position may lag the regime; retry only when idle.
        return (
            not self.core.open_orders
            and self.core.position_lots != self.state.regime * self._order_lots
        )
