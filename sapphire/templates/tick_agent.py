"""A tick agent: trades in the direction of recent aggressive flow (a template to edit).

Copied by ``sapphire new-agent``. Run it with the config written beside it::

    sapphire backtest --config NAME.yaml

The contract (``sapphire.agents.base``): ``on_event`` sees every market event of the run's
symbols with the time passed in (never read the clock), returns what it wants done, and is
fast (no I/O). :class:`BaseAgent` keeps position, cash and open orders from the venue's
reports, numbers intents so client order ids survive restarts, and snapshots ``self.state``:
keep everything the agent learns in that struct, so a restarted actor continues exactly.
Prices are integer ticks and sizes integer lots of ``self.instrument``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from sapphire.agents.base import AgentOutput, BaseAgent, decode_config
from sapphire.model.events import AnyMarketEvent, Side, Trade
from sapphire.model.instrument import Instrument


class TemplateTickParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``params:`` of the agent in the config; an unknown or ill-typed key is a config error."""

    # weight of the newest trade in the flow average (per trade, not per unit of time)
    alpha: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.05
    # go long above +threshold, short below -threshold (the average of +1/-1 taker sides)
    threshold: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.3
    order_lots: Annotated[int, msgspec.Meta(gt=0)] = 1
    warmup_trades: Annotated[int, msgspec.Meta(ge=0)] = 50


class TemplateTickState(msgspec.Struct, kw_only=True):
    flow: float = 0.0
    trades: int = 0
    target: int = 0


class TemplateTickAgent(BaseAgent[TemplateTickState]):
    def __init__(
        self, agent_id: str, instrument: Instrument, params: TemplateTickParams | dict[str, Any]
    ) -> None:
        super().__init__(agent_id, instrument, TemplateTickState())
        self.params: TemplateTickParams = decode_config(TemplateTickParams, params)

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        if not isinstance(event, Trade) or event.symbol != self.symbol:
            return ()
        st, p = self.state, self.params
        side = 1.0 if event.taker_side is Side.BUY else -1.0
        st.flow += p.alpha * (side - st.flow)
        st.trades += 1
        if st.trades < p.warmup_trades:
            return ()
        target = st.target
        if st.flow > p.threshold:
            target = p.order_lots
        elif st.flow < -p.threshold:
            target = -p.order_lots
        if target == st.target and self.core.open_orders:
            return ()
        st.target = target
        # a market order for the gap between the target and position plus working orders
        return self.trade_towards(event.ts_event_ns, target)
