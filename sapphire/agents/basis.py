"""Basis (spread) agent: quote one perpetual against another and hedge on the second.

The two legs may be on different venues and settle in different assets (a linear USDT
perpetual and an inverse coin-settled one). The agent tracks the log spread
``ln(mid_quote_leg) - ln(mid_hedge_leg)`` against its own EWMA (the fair basis): when the
quote leg is rich by more than ``entry_bps`` it wants to be short ``order_lots`` of it, when
cheap long, and flat again once the deviation is back inside ``exit_bps``. It works that
target with one limit order joining the touch of the quote leg (``aggressive`` crosses with a
market order instead), re-quoting when the touch moves. Every fill of the quote leg is hedged
at once with a market order on the hedge leg sized to the same quote-currency (USD/USDT)
notional, opposite sign, so the book is exposed to the spread, not to the coin.

Why the agent keeps the two books itself: the recordings it is made for (websocket logs) are
mostly L2 deltas, and a mid needs the best level that is left after a delete. The books are
part of the state struct, so a restored agent continues exactly; they are bounded by
``max_levels``. Mids are read only at the end of an exchange message (``last_in_batch``) so
that a half-applied update never moves the spread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec

from sapphire.agents.base import (
    AgentConfigError,
    AgentOutput,
    BaseAgent,
    OpenOrder,
    decode_config,
)
from sapphire.model.events import AnyMarketEvent, BookDelta, BookSnapshot, Quote, Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    AgentReport,
    OrderDenied,
    OrderFilled,
    OrderIntent,
    OrderType,
    TimeInForce,
)


class BasisConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # the other leg's run symbol (``VENUE:SYMBOL`` in a cross-venue replay)
    hedge_symbol: Annotated[str, msgspec.Meta(min_length=1)]
    # quote-leg position at full signal, in order steps of the quote leg
    order_lots: Annotated[int, msgspec.Meta(gt=0)] = 1
    entry_bps: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    exit_bps: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    # span (in spread updates) of the EWMA that is the fair basis
    mean_span: Annotated[int, msgspec.Meta(gt=1)] = 200
    # spread updates before the first trade (the EWMA needs history)
    warmup: Annotated[int, msgspec.Meta(ge=1)] = 50
    # the hedge is adjusted once it is off target by at least this many hedge order steps
    hedge_band_lots: Annotated[int, msgspec.Meta(gt=0)] = 1
    aggressive: bool = False
    # after risk refuses a hedge order, the next try waits this long (market time)
    hedge_retry_ns: Annotated[int, msgspec.Meta(ge=0)] = 1_000_000_000
    max_levels: Annotated[int, msgspec.Meta(ge=1)] = 1000

    def __post_init__(self) -> None:
        if self.exit_bps >= self.entry_bps:
            raise AgentConfigError(
                f"exit_bps ({self.exit_bps}) must be < entry_bps ({self.entry_bps})"
            )


class BasisState(msgspec.Struct, kw_only=True):
    # L2 books of both legs: price_ticks -> lots
    quote_bids: dict[int, int] = msgspec.field(default_factory=dict)
    quote_asks: dict[int, int] = msgspec.field(default_factory=dict)
    hedge_bids: dict[int, int] = msgspec.field(default_factory=dict)
    hedge_asks: dict[int, int] = msgspec.field(default_factory=dict)
    # best bid / ask of each leg at the end of the last full message (0: unknown)
    quote_bbo: tuple[int, int] = (0, 0)
    hedge_bbo: tuple[int, int] = (0, 0)
    mean: float = 0.0
    count: int = 0
    deviation_bps: float = 0.0
    regime: int = 0
    # the hedge leg's own book-keeping (``core`` is the quote leg's)
    hedge_position_lots: int = 0
    hedge_open: dict[str, OpenOrder] = msgspec.field(default_factory=dict)
    hedge_fills: int = 0
    hedge_retry_ns: int = 0


class BasisAgent(BaseAgent[BasisState]):
    def __init__(
        self,
        agent_id: str,
        instrument: Instrument,
        config: BasisConfig | dict[str, Any],
        legs: Mapping[str, Instrument] | None = None,
    ) -> None:
        super().__init__(agent_id, instrument, BasisState())
        self.config: BasisConfig = decode_config(BasisConfig, config)
        hedge = (legs or {}).get(self.config.hedge_symbol)
        if hedge is None:
            raise AgentConfigError(
                f"hedge_symbol {self.config.hedge_symbol!r} is not among the instruments this "
                f"agent can trade {sorted(legs or {})} (the run's; with shards, its shard's)"
            )
        if hedge.symbol == instrument.symbol:
            raise AgentConfigError(f"hedge_symbol must differ from the agent's {self.symbol!r}")
        self.hedge = hedge
        self.hedge_symbol = hedge.symbol
        self._order_lots = self.config.order_lots * instrument.lots_per_step
        self._alpha = 2.0 / (self.config.mean_span + 1)

    # -- market ---------------------------------------------------------------------------
    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        st = self.state
        if event.symbol == self.symbol:
            bids, asks = st.quote_bids, st.quote_asks
        elif event.symbol == self.hedge_symbol:
            bids, asks = st.hedge_bids, st.hedge_asks
        else:
            return ()
        if not self._apply(event, bids, asks):
            return ()
        bbo = (max(bids), min(asks)) if bids and asks else (0, 0)
        if bbo[0] <= 0 or bbo[1] <= bbo[0]:
            return ()  # one side empty or crossed: no trustworthy mid
        if event.symbol == self.symbol:
            st.quote_bbo = bbo
        else:
            st.hedge_bbo = bbo
        if not (st.quote_bbo[0] and st.hedge_bbo[0]):
            return ()
        spread = math.log(self._mid_price(self.instrument, st.quote_bbo)) - math.log(
            self._mid_price(self.hedge, st.hedge_bbo)
        )
        st.mean = spread if st.count == 0 else st.mean + self._alpha * (spread - st.mean)
        st.count += 1
        st.deviation_bps = (spread - st.mean) * 1e4
        if st.count <= self.config.warmup:
            return ()
        dev = st.deviation_bps
        if dev > self.config.entry_bps:
            st.regime = -1  # quote leg rich: short it
        elif dev < -self.config.entry_bps:
            st.regime = 1
        elif abs(dev) < self.config.exit_bps:
            st.regime = 0
        ts = event.ts_event_ns
        return [*self._work_quote_leg(ts), *self._hedge(ts)]

    def _apply(self, event: AnyMarketEvent, bids: dict[int, int], asks: dict[int, int]) -> bool:
        """Update one leg's book; True when the book is complete (end of a message)."""
        if isinstance(event, BookDelta):
            if event.is_break:
                # the feed lost this leg's book until its next snapshot: what the agent
                # held is no longer the market (the marker is no level to delete)
                bids.clear()
                asks.clear()
                return False
            side = bids if event.side is Side.BUY else asks
            if event.qty_lots > 0:
                side[event.price_ticks] = event.qty_lots
                if len(side) > self.config.max_levels:  # drop the level furthest away
                    del side[min(side) if side is bids else max(side)]
            else:
                side.pop(event.price_ticks, None)
            return event.last_in_batch
        if isinstance(event, BookSnapshot):
            bids.clear()
            asks.clear()
            bids.update(event.bids[: self.config.max_levels])
            asks.update(event.asks[: self.config.max_levels])
            return True
        if isinstance(event, Quote):  # a top-of-book feed: the book is its touch
            bids.clear()
            asks.clear()
            if event.bid_lots > 0:
                bids[event.bid_ticks] = event.bid_lots
            if event.ask_lots > 0:
                asks[event.ask_ticks] = event.ask_lots
            return True
        return False  # trades and bars do not move the books

    @staticmethod
    def _mid_price(instrument: Instrument, bbo: tuple[int, int]) -> float:
        return 0.5 * (bbo[0] + bbo[1]) * instrument.tick_float

    # -- the quote leg --------------------------------------------------------------------
    def _work_quote_leg(self, ts: int) -> list[AgentOutput]:
        target = self.state.regime * self._order_lots
        position = self.core.position_lots
        working = [o for o in self.core.open_orders.values() if not o.cancel_sent]
        if any(o.cancel_sent for o in self.core.open_orders.values()):
            return []  # wait for the cancel's report before quoting again
        if working:
            order = working[0]
            want = target - position
            touch = self._touch(order.side)
            stale = order.limit_ticks is not None and order.limit_ticks != touch
            if want == 0 or int(order.side) * want <= 0 or stale:
                return [self.cancel(ts, order.client_order_id)]
            return []
        gap = target - position
        if gap == 0 or self.backing_off(ts):
            return []
        side = Side.BUY if gap > 0 else Side.SELL
        if self.config.aggressive:
            return [self.order(ts, side, abs(gap))]
        return [self.order(ts, side, abs(gap), limit_ticks=self._touch(side))]

    def _touch(self, side: Side) -> int:
        # join the best price of our side: a maker quote
        bid, ask = self.state.quote_bbo
        return bid if side is Side.BUY else ask

    def on_fill(self, fill: OrderFilled, now_ns: int) -> Sequence[AgentOutput]:
        return self._hedge(now_ns)

    # -- the hedge leg --------------------------------------------------------------------
    def hedge_target_lots(self) -> int:
        """Hedge-leg lots of the same quote-currency notional as the quote-leg position,
        opposite sign, on the hedge's order grid (0 while a mid is unknown)."""
        st = self.state
        if not (st.quote_bbo[0] and st.hedge_bbo[0]) or self.core.position_lots == 0:
            return 0
        q_mid = (st.quote_bbo[0] + st.quote_bbo[1]) // 2
        h_mid = (st.hedge_bbo[0] + st.hedge_bbo[1]) // 2
        exposure = float(self._quote_value(self.instrument, q_mid, self.core.position_lots))
        per_lot = float(self._quote_value(self.hedge, h_mid, 1))
        step = self.hedge.lots_per_step
        return -round(exposure / per_lot / step) * step

    @staticmethod
    def _quote_value(instrument: Instrument, price_ticks: int, lots: int) -> Any:
        # notional in the settlement asset, then in the quote currency (USD for an inverse
        # contract; a linear one settles in its quote already). USDT is taken as USD.
        value = instrument.notional_quote(price_ticks, abs(lots))
        return instrument.quote_value(value, price_ticks) * (1 if lots >= 0 else -1)

    def _hedge(self, ts: int) -> list[AgentOutput]:
        st = self.state
        if st.hedge_open or not st.hedge_bbo[0] or ts < st.hedge_retry_ns:
            return []  # one hedge order at a time: the next one sizes from its fill
        gap = self.hedge_target_lots() - st.hedge_position_lots
        if abs(gap) < self.config.hedge_band_lots * self.hedge.lots_per_step:
            return []
        side = Side.BUY if gap > 0 else Side.SELL
        intent = OrderIntent(
            ts_event_ns=ts,
            agent_id=self.agent_id,
            seq=self.next_seq(),
            symbol=self.hedge_symbol,
            side=side,
            qty_lots=abs(gap),
            limit_ticks=None,
            order_type=OrderType.MARKET,
            tif=TimeInForce.IOC,
        )
        st.hedge_open[intent.client_order_id] = OpenOrder(
            client_order_id=intent.client_order_id,
            side=side,
            qty_lots=abs(gap),
            leaves_lots=abs(gap),
            limit_ticks=None,
            ts_event_ns=ts,
        )
        return [intent]

    def on_report(self, report: AgentReport, now_ns: int) -> Sequence[AgentOutput]:
        if report.agent_id != self.agent_id or report.symbol != self.hedge_symbol:
            return super().on_report(report, now_ns)
        st = self.state
        order = st.hedge_open.get(report.client_order_id)
        if isinstance(report, OrderFilled):
            st.hedge_position_lots += int(report.side) * report.qty_lots
            st.hedge_fills += 1
            if order is not None:
                order.leaves_lots = report.leaves_lots
                if report.leaves_lots <= 0:
                    del st.hedge_open[report.client_order_id]
        elif isinstance(report, OrderDenied):
            st.hedge_open.pop(report.client_order_id, None)
            # refused by risk: retried on a later event, not in a loop of refusals
            st.hedge_retry_ns = now_ns + self.config.hedge_retry_ns
            return []
        elif report.status.is_final:
            st.hedge_open.pop(report.client_order_id, None)
        if not st.hedge_open:
            return self._hedge(now_ns)  # an IOC left a rest: hedge what is still open
        return []
