"""Bar-by-bar runner of an :class:`~sapphire.agents.indicator.IndicatorStrategy` as an Agent.

On each :class:`Bar` of its symbol it appends the bar to a rolling window of the last
``startup_candle_count + window_extra`` bars, recomputes the strategy on that window, reads
the last row's signals and applies :mod:`sapphire.agents.bar_policy` (the same rules the
vectorized engine applies), emitting a market order for the next bar's open.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import polars as pl

from sapphire.agents.bar_policy import StakeConfig, entry_lots, next_state
from sapphire.agents.base import AgentConfigError, AgentOutput, BaseAgent, decode_config
from sapphire.agents.indicator import (
    IndicatorStrategy,
    StrategyError,
    compute_signals,
    load_strategy,
)
from sapphire.model.events import AnyMarketEvent, Bar
from sapphire.model.instrument import Instrument
from sapphire.model.orders import OrderFilled


class IndicatorAgentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    strategy: str
    strategy_params: dict[str, Any] = msgspec.field(default_factory=dict)
    stake: StakeConfig = StakeConfig(stake_lots=1)
    window_extra: Annotated[int, msgspec.Meta(gt=0)] = 1


class IndicatorState(msgspec.Struct, kw_only=True):
    ts: list[int] = msgspec.field(default_factory=list)
    ohlcv: list[tuple[float, float, float, float, float]] = msgspec.field(default_factory=list)
    bars_seen: int = 0
    entry_ticks: int = 0
    last_signal: int = 0


class IndicatorAgent(BaseAgent[IndicatorState]):
    def __init__(
        self,
        agent_id: str,
        instrument: Instrument,
        config: IndicatorAgentConfig | dict[str, Any],
        strategy: IndicatorStrategy | None = None,
    ) -> None:
        super().__init__(agent_id, instrument, IndicatorState())
        self.config: IndicatorAgentConfig = decode_config(IndicatorAgentConfig, config)
        try:
            self.strategy = strategy or load_strategy(
                self.config.strategy, self.config.strategy_params
            )
        except StrategyError as exc:
            raise AgentConfigError(str(exc)) from exc
        self.window = self.strategy.startup_candle_count + self.config.window_extra
        self._tick = instrument.tick_float
        self._lot = instrument.lot_float

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        if not isinstance(event, Bar) or event.symbol != self.symbol:
            return ()
        st = self.state
        t = self._tick
        st.ts.append(event.ts_event_ns)
        st.ohlcv.append(
            (
                event.open_ticks * t,
                event.high_ticks * t,
                event.low_ticks * t,
                event.close_ticks * t,
                event.volume_lots * self._lot,
            )
        )
        if len(st.ts) > self.window:
            del st.ts[0], st.ohlcv[0]
        index = st.bars_seen
        st.bars_seen += 1
        if index < self.strategy.startup_candle_count:
            return ()
        row = self._last_signals()
        position = self.core.position_lots
        state = (position > 0) - (position < 0)
        new = next_state(
            state,
            st.entry_ticks,
            event.close_ticks,
            row[0],
            row[1],
            row[2],
            row[3],
            self.strategy.stoploss,
            self.strategy.can_short,
        )
        if new == state or self.core.open_orders:
            return ()
        target = 0
        if new != 0:
            equity = self.equity_quote(self.config.stake.initial_cash, event.close_ticks)
            target = new * entry_lots(self.config.stake, equity, event.close_ticks, self.instrument)
        out: list[AgentOutput] = [self.signal(event.ts_event_ns, float(new), "bar_signal")]
        out.extend(self.trade_towards(event.ts_event_ns, target))
        return out

    def _last_signals(self) -> tuple[bool, bool, bool, bool]:
        st = self.state
        cols = list(zip(*st.ohlcv, strict=True))
        frame = pl.DataFrame(
            {
                "ts_event_ns": pl.Series(st.ts, dtype=pl.Int64),
                "open": pl.Series(cols[0], dtype=pl.Float64),
                "high": pl.Series(cols[1], dtype=pl.Float64),
                "low": pl.Series(cols[2], dtype=pl.Float64),
                "close": pl.Series(cols[3], dtype=pl.Float64),
                "volume": pl.Series(cols[4], dtype=pl.Float64),
            }
        )
        last = compute_signals(self.strategy, frame).row(-1, named=True)
        return (
            bool(last["enter_long"]),
            bool(last["exit_long"]),
            bool(last["enter_short"]),
            bool(last["exit_short"]),
        )

    def on_fill(self, fill: OrderFilled, now_ns: int) -> Sequence[AgentOutput]:
        position = self.core.position_lots
        before = position - int(fill.side) * fill.qty_lots
        if position != 0 and (before == 0 or (before > 0) != (position > 0)):
            self.state.entry_ticks = fill.price_ticks
        return ()
