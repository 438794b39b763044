"""Bar-by-bar runner of an :class:`~sapphire.agents.indicator.IndicatorStrategy` as an Agent.

On each :class:`Bar` of its symbol it appends the bar to a rolling window of the last
``startup_candle_count + window_extra`` bars, recomputes the strategy on that window, reads
the last row's signals and applies :mod:`sapphire.agents.bar_policy` (the same rules the
vectorized engine applies), emitting a market order for the next bar's open.

Recomputing the window costs a few polars calls per bar (~0.2-0.3 ms, fixed overhead, not
rows). Where the bar history is known up front (a backtest, or the warm-up history of a live
start), :meth:`IndicatorAgent.prime` computes the strategy once over it and those bars then
read their signals from that table (~1 us); new bars still recompute the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
import polars as pl

from sapphire.agents.bar_policy import StakeConfig, entry_lots, next_state
from sapphire.agents.base import AgentConfigError, AgentOutput, BaseAgent, decode_config
from sapphire.agents.indicator import (
    SIGNAL_COLUMNS,
    IndicatorStrategy,
    StrategyError,
    compute_signals,
    last_signals,
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
        self._primed: dict[int, tuple[int, tuple[bool, bool, bool, bool]]] = {}
        # Column-major copy of the window in a buffer twice its size, so the window is always
        # one contiguous slice (a cheap frame); derived from the state, rebuilt after restore.
        self._buf = np.empty((5, 2 * self.window), dtype=np.float64)
        self._buf_ts = np.empty(2 * self.window, dtype=np.int64)
        self._buf_end = 0
        self._buf_bars = 0

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        if not isinstance(event, Bar) or event.symbol != self.symbol:
            return ()
        st = self.state
        t = self._tick
        date = event.open_time_ns  # a frame dates a candle by its open (the event: its close)
        st.ts.append(date)
        values = (
            event.open_ticks * t,
            event.high_ticks * t,
            event.low_ticks * t,
            event.close_ticks * t,
            event.volume_lots * self._lot,
        )
        st.ohlcv.append(values)
        if len(st.ts) > self.window:
            del st.ts[0], st.ohlcv[0]
        index = st.bars_seen
        st.bars_seen += 1
        self._buffer_append(date, values)
        if index < self.strategy.startup_candle_count:
            return ()
        row = self._last_signals(event)
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

    def prime(self, bars: pl.DataFrame) -> int:
        """Compute the strategy once over a known bar history (a ``tick_frame``: the float
        OHLCV columns plus ``close_ticks``); later bars with the same timestamp and close
        then read their signals from it instead of recomputing the window.

        This is the vectorized computation, so it gives the same signals as the window
        whenever the strategy keeps its promise (indicators settled within
        ``startup_candle_count``, no look-ahead); bars outside the history, or that differ
        from it, still recompute. Returns the number of bars cached.
        """
        if "close_ticks" not in bars.columns:
            raise StrategyError("prime() needs a tick frame with a close_ticks column")
        signals = compute_signals(self.strategy, bars).select(
            "ts_event_ns", "close_ticks", *SIGNAL_COLUMNS
        )
        self._primed = {
            ts: (close, (bool(el), bool(xl), bool(es), bool(xs)))
            for ts, close, el, xl, es, xs in signals.iter_rows()
        }
        return len(self._primed)

    def _buffer_append(self, ts: int, values: tuple[float, float, float, float, float]) -> None:
        st = self.state
        if self._buf_bars != st.bars_seen - 1:  # restored or fresh state: copy the lists
            n = len(st.ts)
            self._buf_ts[:n] = st.ts
            if n:
                self._buf[:, :n] = np.asarray(st.ohlcv, dtype=np.float64).T
            self._buf_end = n
        else:
            end = self._buf_end
            if end == self._buf_ts.size:
                keep = self.window - 1
                self._buf[:, :keep] = self._buf[:, end - keep : end]
                self._buf_ts[:keep] = self._buf_ts[end - keep : end]
                end = keep
            self._buf[:, end] = values
            self._buf_ts[end] = ts
            self._buf_end = end + 1
        self._buf_bars = st.bars_seen

    def _last_signals(self, event: Bar | None = None) -> tuple[bool, bool, bool, bool]:
        if event is not None and self._primed:
            cached = self._primed.get(event.open_time_ns)
            if cached is not None and cached[0] == event.close_ticks:
                return cached[1]
        end = self._buf_end
        start = max(0, end - self.window)
        cols = self._buf[:, start:end]
        frame = pl.DataFrame(
            {
                "ts_event_ns": self._buf_ts[start:end],
                "open": cols[0],
                "high": cols[1],
                "low": cols[2],
                "close": cols[3],
                "volume": cols[4],
            }
        )
        return last_signals(self.strategy, frame)

    def on_fill(self, fill: OrderFilled, now_ns: int) -> Sequence[AgentOutput]:
        position = self.core.position_lots
        before = position - int(fill.side) * fill.qty_lots
        if position != 0 and (before == 0 or (before > 0) != (position > 0)):
            self.state.entry_ticks = fill.price_ticks
        return ()
