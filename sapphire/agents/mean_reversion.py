"""Mean reversion: z-score of the microprice (or mid) against a rolling window of events.

Long when the price is ``entry_z`` standard deviations below its rolling mean, short (or
flat, when shorting is off) when above, flat again once ``|z| <= exit_z``. The rolling sums
are kept relative to the first price seen so that squaring prices of 10^6 ticks loses no
precision; the ring buffer lives in the state so a restored agent continues bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from sapphire.agents.base import AgentConfigError, AgentOutput, BaseAgent, decode_config
from sapphire.agents.features import PRICED_EVENTS, reference_price
from sapphire.model.events import AnyMarketEvent
from sapphire.model.instrument import Instrument


class MeanReversionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    window: Annotated[int, msgspec.Meta(gt=2)] = 200
    entry_z: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    exit_z: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    order_lots: Annotated[int, msgspec.Meta(gt=0)] = 1
    allow_short: bool = False
    use_microprice: bool = True
    min_std_ticks: Annotated[float, msgspec.Meta(ge=0)] = 1e-9

    def __post_init__(self) -> None:
        if self.exit_z >= self.entry_z:
            raise AgentConfigError(f"exit_z ({self.exit_z}) must be < entry_z ({self.entry_z})")


class MeanReversionState(msgspec.Struct, kw_only=True):
    ring: list[float] = msgspec.field(default_factory=list)
    head: int = 0
    shift: float = 0.0
    total: float = 0.0
    total_sq: float = 0.0
    regime: int = 0
    z: float = 0.0


def zscore(x: float, total: float, total_sq: float, n: int, min_std: float) -> float:
    """z of ``x`` given the sum and sum of squares of ``n`` values (sample std, ddof=1)."""
    mean = total / n
    var = max((total_sq - total * mean) / (n - 1), 0.0)
    std = math.sqrt(var)
    return 0.0 if std <= min_std else (x - mean) / std


class MeanReversionAgent(BaseAgent[MeanReversionState]):
    # a price is all it reads: other events (depth levels) are no-ops for it
    market_events = PRICED_EVENTS

    def __init__(
        self, agent_id: str, instrument: Instrument, config: MeanReversionConfig | dict[str, Any]
    ) -> None:
        super().__init__(agent_id, instrument, MeanReversionState())
        self.config: MeanReversionConfig = decode_config(MeanReversionConfig, config)
        # order_lots counts order steps; integer lots may be a finer size grid
        self._order_lots = self.config.order_lots * instrument.lots_per_step

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        if event.symbol != self.symbol:
            return ()
        price = reference_price(event, self.config.use_microprice)
        if price is None:
            return ()
        st, cfg = self.state, self.config
        if not st.ring:
            st.shift = price
        x = price - st.shift
        if len(st.ring) < cfg.window:
            st.ring.append(x)
        else:
            old = st.ring[st.head]
            st.ring[st.head] = x
            st.head = (st.head + 1) % cfg.window
            st.total -= old
            st.total_sq -= old * old
        st.total += x
        st.total_sq += x * x
        if len(st.ring) < cfg.window:
            return ()
        z = zscore(x, st.total, st.total_sq, cfg.window, cfg.min_std_ticks)
        st.z = z
        regime = st.regime
        if z <= -cfg.entry_z:
            regime = 1
        elif z >= cfg.entry_z:
            regime = -1 if cfg.allow_short else 0
        elif abs(z) <= cfg.exit_z:
            regime = 0
        if regime == st.regime and (
            self.core.open_orders or self.core.position_lots == regime * self._order_lots
        ):
            return ()
        out: list[AgentOutput] = []
        if regime != st.regime:
            st.regime = regime
            out.append(self.signal(event.ts_event_ns, -z / cfg.entry_z, "zscore"))
        out.extend(self.trade_towards(event.ts_event_ns, regime * self._order_lots))
        return out
