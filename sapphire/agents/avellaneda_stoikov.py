"""Avellaneda-Stoikov market maker (hummingbot parameter names where they match).

Quotes are post-only limit intents (``TimeInForce.POST_ONLY`` rests like GTC but never takes);
stale quotes are cancelled and replaced. The maths is in :mod:`sapphire.agents.as_model`.

Inventory: the agent may hold between ``-max_inventory`` and ``+max_inventory`` (base asset).
``inventory_target_base_pct`` maps onto that band as hummingbot maps it onto the wallet:
50 % is flat, 100 % is ``+max_inventory``, 0 % is ``-max_inventory``. ``q`` (in units of
``order_amount``) is the distance of the position from that target.

``min_spread`` is a percentage of mid, as in hummingbot. Times are seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec

from sapphire.agents import as_model
from sapphire.agents.base import AgentConfigError, AgentOutput, BaseAgent, decode_config
from sapphire.model.events import AnyMarketEvent, BookSnapshot, Quote, Side, Trade
from sapphire.model.instrument import Instrument, Rounding
from sapphire.model.orders import TimeInForce

Pos = Annotated[float, msgspec.Meta(gt=0)]


class AvellanedaStoikovConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    order_amount: Pos
    max_inventory: Pos
    risk_factor: Pos = 0.1
    min_spread: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    order_refresh_time: Pos = 1.0
    order_refresh_tolerance_pct: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    inventory_target_base_pct: Annotated[float, msgspec.Meta(ge=0, le=100)] = 50.0
    execution_timeframe: Literal["infinite", "finite"] = "infinite"
    closing_time: Pos = 3600.0
    volatility_halflife: Pos = 30.0
    initial_sigma: Pos = 1.0
    kappa: Pos = 0.5
    intensity_a: Pos = 1.0
    trading_intensity_buffer_size: Annotated[int, msgspec.Meta(ge=10)] = 500
    intensity_max_depth: Pos = 20.0
    refit_every: Annotated[int, msgspec.Meta(gt=0)] = 100

    def __post_init__(self) -> None:
        if self.trading_intensity_buffer_size < self.refit_every:
            raise AgentConfigError(
                f"trading_intensity_buffer_size ({self.trading_intensity_buffer_size}) must "
                f"be >= refit_every ({self.refit_every}): the intensity fit would never run"
            )
        if self.order_amount > self.max_inventory:
            raise AgentConfigError(
                f"order_amount ({self.order_amount}) must be <= max_inventory "
                f"({self.max_inventory})"
            )


class AvellanedaStoikovState(msgspec.Struct, kw_only=True):
    best_bid: int = 0
    best_ask: int = 0
    mid: float = 0.0
    last_mid: float = 0.0
    last_mid_ns: int = 0
    variance: float = 0.0
    vol_ready: bool = False
    depths: list[float] = msgspec.field(default_factory=list)
    depth_ts: list[int] = msgspec.field(default_factory=list)
    head: int = 0
    trades_since_fit: int = 0
    kappa: float = 0.0
    intensity_a: float = 0.0
    cycle_start_ns: int = 0
    last_refresh_ns: int = 0
    quotes: int = 0


class AvellanedaStoikovAgent(BaseAgent[AvellanedaStoikovState]):
    # trades feed the intensity fit, quotes and snapshots the mid: nothing else is read
    market_events = frozenset({Trade, Quote, BookSnapshot})

    def __init__(
        self,
        agent_id: str,
        instrument: Instrument,
        config: AvellanedaStoikovConfig | dict[str, Any],
    ) -> None:
        cfg: AvellanedaStoikovConfig = decode_config(AvellanedaStoikovConfig, config)
        super().__init__(
            agent_id,
            instrument,
            AvellanedaStoikovState(kappa=cfg.kappa, intensity_a=cfg.intensity_a),
        )
        self.config = cfg
        # order sizes on the order step, not the (possibly finer) book size grid
        self.order_lots = instrument.order_qty_to_lots(cfg.order_amount, Rounding.DOWN)
        self.max_lots = instrument.order_qty_to_lots(cfg.max_inventory, Rounding.DOWN)
        if self.order_lots <= 0:
            raise AgentConfigError(
                f"order_amount {cfg.order_amount} is below one lot ({instrument.lot_size})"
            )
        self.target_lots = round(
            (2.0 * cfg.inventory_target_base_pct / 100.0 - 1.0) * self.max_lots
        )
        self._refresh_ns = int(cfg.order_refresh_time * 1e9)
        self._cycle_ns = int(cfg.closing_time * 1e9)

    def sigma(self) -> float:
        return math.sqrt(self.state.variance) if self.state.vol_ready else self.config.initial_sigma

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        if event.symbol != self.symbol:
            return ()
        st = self.state
        ts = event.ts_event_ns
        # 1. market state: trades feed the intensity fit, book events move the mid.
        if isinstance(event, Trade):
            if st.mid > 0:
                self._record_trade(abs(event.price_ticks - st.mid), ts)
            return ()
        if isinstance(event, Quote):
            bid, ask = event.bid_ticks, event.ask_ticks
        elif isinstance(event, BookSnapshot) and event.bids and event.asks:
            bid, ask = event.bids[0][0], event.asks[0][0]
        else:
            return ()
        if bid <= 0 or ask <= bid:
            return ()
        st.best_bid, st.best_ask, st.mid = bid, ask, 0.5 * (bid + ask)
        # 2. volatility: EWMA of the mid's variance rate.
        if st.last_mid_ns and ts > st.last_mid_ns:
            dt = (ts - st.last_mid_ns) * 1e-9
            # The first sample is weighed against ``initial_sigma``, not taken whole: one
            # tick moved in a microsecond would otherwise set sigma to ~1000 ticks/sqrt(s)
            # (and an unchanged mid to 0), a quote far off the book for a half-life.
            prior = st.variance if st.vol_ready else self.config.initial_sigma**2
            st.variance = as_model.ewma_variance(
                prior, st.mid - st.last_mid, dt, self.config.volatility_halflife, True
            )
            st.vol_ready = True
        if ts > st.last_mid_ns:
            st.last_mid, st.last_mid_ns = st.mid, ts
        # 3. refresh gate: quotes live for order_refresh_time.
        if st.cycle_start_ns == 0 or ts - st.cycle_start_ns >= self._cycle_ns:
            st.cycle_start_ns = ts
        if st.last_refresh_ns and ts - st.last_refresh_ns < self._refresh_ns:
            return ()
        st.last_refresh_ns = ts
        return self._requote(ts)

    def proposal(self, ts: int) -> tuple[float, float]:
        """Steps 4-5: model bid/ask (float ticks) with the min_spread floor applied."""
        st, cfg = self.state, self.config
        q = (self.core.position_lots - self.target_lots) / self.order_lots
        sigma = self.sigma()
        if cfg.execution_timeframe == "finite":
            t_left = max(self._cycle_ns - (ts - st.cycle_start_ns), 0) * 1e-9
            r = as_model.reservation_price(st.mid, q, cfg.risk_factor, sigma, t_left)
            half = 0.5 * as_model.optimal_spread(cfg.risk_factor, sigma, st.kappa, t_left)
            bid, ask = r - half, r + half
        else:
            bid_depth, ask_depth = as_model.glft_depths(
                q, cfg.risk_factor, sigma, st.kappa, st.intensity_a
            )
            bid, ask = st.mid - bid_depth, st.mid + ask_depth
        min_half = 0.5 * st.mid * cfg.min_spread / 100.0
        if ask - bid < 2.0 * min_half:
            centre = 0.5 * (bid + ask)
            bid, ask = centre - min_half, centre + min_half
        return bid, ask

    def _requote(self, ts: int) -> list[AgentOutput]:
        st = self.state
        bid_f, ask_f = self.proposal(ts)
        # 6. ticks, post-only guard: a bid at or above the best ask would take.
        bid = min(math.floor(bid_f), st.best_ask - 1)
        ask = max(math.ceil(ask_f), st.best_bid + 1)
        if bid >= ask:
            bid, ask = st.best_bid, st.best_ask
        # 7. inventory limits: stop adding to a full side.
        pos = self.core.position_lots
        want: dict[Side, int | None] = {
            Side.BUY: bid if pos + self.order_lots <= self.max_lots else None,
            Side.SELL: ask if pos - self.order_lots >= -self.max_lots else None,
        }
        # 8. execute: keep quotes within tolerance, cancel stale ones, post the rest. Orders
        # being cancelled (before or now) may still fill: a new quote on their side is posted
        # only if they and it filling together stays within max_inventory, else it waits for
        # the cancel's report (a kept quote is no new exposure: it stays).
        out: list[AgentOutput] = []
        tol = self.config.order_refresh_tolerance_pct / 100.0
        leaving = {Side.BUY: 0, Side.SELL: 0}
        for order in list(self.core.open_orders.values()):
            if order.cancel_sent:
                leaving[order.side] += order.leaves_lots
                continue
            price = want.get(order.side)
            if (
                price is not None
                and order.limit_ticks is not None
                and abs(order.limit_ticks - price) <= tol * price
            ):
                want[order.side] = None
                continue
            out.append(self.cancel(ts, order.client_order_id))
            leaving[order.side] += order.leaves_lots
        if pos + leaving[Side.BUY] + self.order_lots > self.max_lots:
            want[Side.BUY] = None
        if pos - leaving[Side.SELL] - self.order_lots < -self.max_lots:
            want[Side.SELL] = None
        for side, price in want.items():
            if price is not None and price > 0:
                out.append(
                    self.order(
                        ts, side, self.order_lots, limit_ticks=price, tif=TimeInForce.POST_ONLY
                    )
                )
                st.quotes += 1
        return out

    def _record_trade(self, depth: float, ts: int) -> None:
        st, cfg = self.state, self.config
        if len(st.depths) < cfg.trading_intensity_buffer_size:
            st.depths.append(depth)
            st.depth_ts.append(ts)
        else:
            st.depths[st.head] = depth
            st.depth_ts[st.head] = ts
            st.head = (st.head + 1) % cfg.trading_intensity_buffer_size
        st.trades_since_fit += 1
        if st.trades_since_fit < cfg.refit_every or len(st.depths) < cfg.refit_every:
            return
        st.trades_since_fit = 0
        duration = (max(st.depth_ts) - min(st.depth_ts)) * 1e-9
        fit = as_model.estimate_intensity(st.depths, duration, cfg.intensity_max_depth)
        if fit is not None:
            st.intensity_a, st.kappa = fit
