"""A fixed-spread market maker on a time grid: the strategy of hftbacktest's market-making
tutorial, used to compare Sapphire with hftbacktest through ``sapphire backtest``.

Every ``step_s`` of the agent's clock it quotes one post-only order per side at
``floor(mid - half_spread_ticks)`` / ``ceil(mid + half_spread_ticks)`` for ``order_lots``,
while the position stays inside ``max_position_lots``, and cancels a quote whose price moved
and sends its replacement at once. The mid is the book ticker's (``Quote``) best bid and ask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from sapphire.agents.base import AgentConfigError, AgentOutput, BaseAgent, decode_config
from sapphire.model.events import MARKET_EVENT_TYPES, AnyMarketEvent, Quote, Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import TimeInForce


class GridMakerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    half_spread_ticks: Annotated[int, msgspec.Meta(ge=0)] = 20
    order_lots: Annotated[int, msgspec.Meta(gt=0)] = 10
    max_position_lots: Annotated[int, msgspec.Meta(gt=0)] = 50
    step_s: Annotated[float, msgspec.Meta(ge=1e-9)] = 0.1  # a nanosecond at least

    def __post_init__(self) -> None:
        if self.order_lots > self.max_position_lots:
            raise AgentConfigError(
                f"order_lots ({self.order_lots}) must be <= max_position_lots "
                f"({self.max_position_lots}): one order would pass the position limit"
            )


class GridMakerState(msgspec.Struct, kw_only=True):
    bid_ticks: int = 0
    ask_ticks: int = 0
    next_step_ns: int = 0


class GridMakerAgent(BaseAgent[GridMakerState]):
    # every event is its clock, read only for its time: a depth message's levels share one
    # time, so the message as one event (BookDeltas) decides what its levels would
    market_events = MARKET_EVENT_TYPES

    def __init__(
        self, agent_id: str, instrument: Instrument, config: GridMakerConfig | dict[str, Any]
    ) -> None:
        super().__init__(agent_id, instrument, GridMakerState())
        self.config: GridMakerConfig = decode_config(GridMakerConfig, config)
        self._step_ns = int(self.config.step_s * 1e9)

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        st = self.state
        if (
            type(event) is Quote
            and event.symbol == self.symbol
            and 0 < event.bid_ticks < event.ask_ticks
        ):
            st.bid_ticks, st.ask_ticks = event.bid_ticks, event.ask_ticks
        if st.next_step_ns == 0:
            st.next_step_ns = now_ns - now_ns % self._step_ns + self._step_ns
            return ()
        if now_ns < st.next_step_ns or not st.bid_ticks:
            return ()
        st.next_step_ns = now_ns - now_ns % self._step_ns + self._step_ns
        return self._quote(now_ns)

    def _quote(self, now_ns: int) -> list[AgentOutput]:
        cfg, st = self.config, self.state
        two_mid = st.bid_ticks + st.ask_ticks
        prices = {
            Side.BUY: (two_mid - 2 * cfg.half_spread_ticks) // 2,
            Side.SELL: -((-(two_mid + 2 * cfg.half_spread_ticks)) // 2),
        }
        position = self.core.position_lots
        step = self.instrument.lots_per_step  # configured lots count order steps
        wanted = {
            Side.BUY: position < cfg.max_position_lots * step,
            Side.SELL: position > -cfg.max_position_lots * step,
        }
        out: list[AgentOutput] = []
        working = {Side.BUY: False, Side.SELL: False}
        for cid, order in list(self.core.open_orders.items()):
            if order.cancel_sent:
                continue  # on its way out
            if not wanted[order.side] or order.limit_ticks != prices[order.side]:
                out.append(self.cancel(now_ns, cid))  # replaced at once, as the peer does
            else:
                working[order.side] = True
        for side in (Side.BUY, Side.SELL):
            if wanted[side] and not working[side]:
                out.append(
                    self.order(
                        now_ns,
                        side,
                        cfg.order_lots * step,
                        limit_ticks=prices[side],
                        tif=TimeInForce.POST_ONLY,
                    )
                )
        return out
