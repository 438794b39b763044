"""Pre-trade risk checks and the kill switch. Nothing reaches a gateway without ``check``.

Checks run in a fixed order and the first failure decides the reason, so a rejection is
reproducible: kill switch, order size, market present, price band, order rate, position,
notional (incl. capital allocation), daily loss (agent, then firm).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import NamedTuple

import msgspec

from sapphire.model.events import Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import OrderIntent, OrderType, RejectReason
from sapphire.model.orders import client_order_id as coid
from sapphire.risk.limits import AgentLimits, RiskLimits
from sapphire.risk.portfolio import FirmPnl, Portfolio, conversion_rate, same_money
from sapphire.risk.regime import clamp_scale, scale_money, scaled_limits

NS_PER_SECOND = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_SECOND


class RiskDecision(msgspec.Struct, frozen=True, gc=False):
    """One intent's verdict. Positional construction is allowed for the batch pass's sake
    (half the cost of keywords, measured), so the field order is part of its interface;
    everywhere else it is built by keywords."""

    ts_event_ns: int
    agent_id: str
    symbol: str
    client_order_id: str
    accepted: bool
    requested_lots: int
    reason: RejectReason | None = None
    detail: str = ""


class _AgentView(NamedTuple):
    """What the batch pass reads of one agent on one symbol: its limits in plain ints and
    its order-rate window, in one lookup an intent instead of three (limits, cap, window):
    at a thousand agents each was a probe of a table out of cache."""

    max_order_lots: int
    max_position_lots: int
    max_orders_per_second: int
    cap_ticklots: int  # RiskEngine._cap
    window: deque[int]  # RiskEngine._recent_orders[agent], the same deque


class _SymbolView(NamedTuple):
    """What the batch pass reads of one symbol, fixed for a run (no mark between its
    intents). ``inst`` None: unknown symbol; ``mid`` None: no mark yet."""

    inst: Instrument | None
    mid: float | None
    band: float  # the price band, in ticks
    worst_mark: int  # a market order's price: the mark plus the band, up
    ceil_mid: int
    agents: dict[str, _AgentView]  # kept across runs (RiskEngine._agent_views)
    # by agent: the lots accepted earlier in the run, to buy and to sell
    bought: dict[str, int]
    sold: dict[str, int]


class RiskEngine:
    # per symbol, per agent: its ``_AgentView``, dropped with the symbol's limit scale and
    # never pickled (a class default: a restored engine builds them again)
    _agent_views: dict[str, dict[str, _AgentView]] | None = None
    # per symbol: its instrument's lots_per_step (a class default: built when first read)
    _steps: dict[str, int] | None = None
    # set by ``refresh`` when the day that ended had breached the firm's loss limit (a class
    # default too: an engine restored from an older checkpoint has no such attribute)
    firm_breached_at_day_end = False

    def __init__(
        self,
        limits: RiskLimits,
        instruments: dict[str, Instrument],
        portfolio: Portfolio,
        allocation_quote: dict[str, Decimal] | None = None,
    ) -> None:
        self.limits = limits
        self._instruments = instruments
        self._portfolio = portfolio
        self._allocation = allocation_quote or {}
        # per agent; a window is never rebound, as the batch pass's views hold it
        self._recent_orders: dict[str, deque[int]] = {}
        self._day = -1
        self._pnl_at_day_start: dict[str, dict[str, Decimal]] = {}  # per agent, per asset
        self._firm_at_day_start: dict[str, Decimal] = {}  # per settlement asset
        self.marks: dict[str, float] = {}
        self.kill_switch_on = False
        self.kill_reason = ""
        self.rejections: dict[RejectReason, int] = {}
        self._loss_breached: set[str] = set()
        self.firm_breached = False
        # per (agent, symbol): the notional cap in tick x lot units, so the hot check is integer
        self._cap_ticklots: dict[tuple[str, str], int] = {}
        # per symbol: the risk mode's limit scale in [0, 1) (absent: the configured limits)
        self.limit_scales: dict[str, float] = {}
        self._scaled: dict[tuple[str, str], AgentLimits] = {}

    def __getstate__(self) -> dict[str, object]:
        # the batch pass's views are derived (a restored engine builds them again around the
        # windows it restored), and checkpoints name no private class of this module
        state = self.__dict__.copy()
        state.pop("_agent_views", None)
        return state

    # -- state fed by the coordinator ---------------------------------------------------
    def update_mark(self, symbol: str, mid_ticks: float) -> None:
        self.marks[symbol] = mid_ticks

    def set_limit_scale(self, symbol: str, scale: float) -> None:
        """Scale every agent's max position, notional and order size on ``symbol`` by
        ``scale`` (``risk.regime``); clamped to [0, 1], so the configured limits stay the
        ceiling. 1 restores them."""
        s = clamp_scale(scale)
        if self.limit_scales.get(symbol, 1.0) == s:
            return
        if s >= 1.0:
            del self.limit_scales[symbol]
        else:
            self.limit_scales[symbol] = s
        for cache in (self._scaled, self._cap_ticklots):
            for key in [k for k in cache if k[1] == symbol]:
                del cache[key]
        if self._agent_views is not None:
            self._agent_views.pop(symbol, None)

    def agent_limits(self, agent_id: str, symbol: str) -> AgentLimits:
        """``agent_id``'s limits on ``symbol`` under the symbol's current limit scale, their
        lots in ``symbol``'s quantity grid: a config counts them in order steps
        (``lot_size``), as agents count ``order_lots``, and an intent's quantity counts the
        finer grid of every size (``size_increment``), ``lots_per_step`` to a step. Read in
        the grid, a limit of 20 lots was 0.0002 of a step on a spot instrument written from
        an exchangeInfo (1,000 units a step): every order was refused for its size."""
        step = self._step(symbol)
        scale = self.limit_scales.get(symbol) if self.limit_scales else None
        if scale is None and step == 1:
            return self.limits.for_agent(agent_id)
        key = (agent_id, symbol)
        limits = self._scaled.get(key)
        if limits is None:
            limits = self.limits.for_agent(agent_id)
            if scale is not None:
                limits = scaled_limits(limits, scale)
            if step != 1:
                limits = msgspec.structs.replace(
                    limits,
                    max_order_lots=limits.max_order_lots * step,
                    max_position_lots=limits.max_position_lots * step,
                )
            self._scaled[key] = limits
        return limits

    def _step(self, symbol: str) -> int:
        """``symbol``'s ``lots_per_step`` (1 unknown), kept: the property divides Decimals."""
        steps = self._steps
        if steps is None:
            steps = self._steps = {}
        step = steps.get(symbol)
        if step is None:
            inst = self._instruments.get(symbol)
            step = steps[symbol] = 1 if inst is None else inst.lots_per_step
        return step

    def market_bound(self, symbol: str, side: Side) -> int | None:
        """The worst price a market order on ``symbol`` is taken to fill at: the mark plus
        the price band for a buy, minus it for a sell (what the notional check values it
        at); None without a mark."""
        mid = self.marks.get(symbol)
        if mid is None:
            return None
        band = 1 + self.limits.price_band_bps / 10_000 * int(side)
        return math.ceil(mid * band) if side is Side.BUY else math.floor(mid * band)

    def trip_kill_switch(self, reason: str) -> None:
        self.kill_switch_on = True
        self.kill_reason = reason

    def reset_kill_switch(self) -> None:
        self.kill_switch_on = False
        self.kill_reason = ""

    def refresh(self, now_ns: int) -> None:
        """Recompute daily PnL against its limits once per step (after marks and fills
        moved), instead of once per intent: PnL cannot change between two intents."""
        day = now_ns // NS_PER_DAY
        if day != self._day:
            if self._day >= 0:
                # the day that ends is judged on its last PnL before its start is replaced:
                # a loss booked since the last check (up to a step) counted against neither
                # day, and the kill switch it would have tripped never did
                limit = Decimal(self.limits.max_firm_daily_loss_quote)
                self.firm_breached_at_day_end = -self.firm_daily_pnl().total > limit
            self._day = day
            self._pnl_at_day_start = {
                agent: self._portfolio.pnl_by_asset(agent, self.marks) for agent in self._agents()
            }
            self._firm_at_day_start = self._portfolio.pnl_by_asset(None, self.marks)
        self._loss_breached = set()
        for agent in self._agents():
            limit = Decimal(self.limits.for_agent(agent).max_daily_loss_quote)
            # per settlement asset, as every money limit: never USDT + BTC
            if any(-pnl > limit for pnl in self.daily_pnl_by_asset(agent).values()):
                self._loss_breached.add(agent)
        limit = Decimal(self.limits.max_firm_daily_loss_quote)
        self.firm_breached = -self.firm_daily_pnl().total > limit

    def _agents(self) -> list[str]:
        return sorted({agent for agent, _ in self._portfolio.positions})

    def daily_pnl_by_asset(self, agent_id: str) -> dict[str, Decimal]:
        start = self._pnl_at_day_start.get(agent_id, {})
        now = self._portfolio.pnl_by_asset(agent_id, self.marks)
        return {asset: pnl - start.get(asset, Decimal(0)) for asset, pnl in now.items()}

    def firm_daily_pnl(self) -> FirmPnl:
        """The firm's PnL since the day started, per settlement asset and in the firm's
        currency: each asset's day change converted at the current mark, so a coin loss counts
        at today's price. An asset with no conversion mark yet is left out (``missing``): it
        cannot be read against a limit in another currency, and adding coins as if they were
        USDT would be off by the price; its agents' own limits, in that asset, still bind."""
        start = self._firm_at_day_start
        now = self._portfolio.pnl_by_asset(None, self.marks)
        daily = {asset: pnl - start.get(asset, Decimal(0)) for asset, pnl in now.items()}
        return self._portfolio.convert(daily, self.marks)

    def _settles_apart(self, inst: Instrument) -> bool:
        """Whether ``inst`` settles in another asset than the firm's currency (a coin-
        margined contract in a USDT firm): its capital share is then valued at a mark."""
        return not same_money(inst.settle_asset, self._portfolio.reporting_asset)

    def _money_cap(self, agent_id: str, inst: Instrument) -> Decimal | None:
        """The agent's notional cap on ``inst``, in its settlement asset: the
        ``max_notional_quote`` figure (read in that asset, as every money limit), and its
        share of ``capital_quote``, which is in the firm's currency: converted at the mark
        where the instrument settles in another asset (None while no mark prices one in the
        other)."""
        cap = Decimal(self.limits.for_agent(agent_id).max_notional_quote)
        allocated = self._allocation.get(agent_id)
        if allocated is not None:
            if self._settles_apart(inst):
                into = self._portfolio.reporting_asset
                rate = conversion_rate(inst.settle_asset, into, self._instruments, self.marks)
                if rate is None or rate <= 0:
                    return None
                allocated = allocated / rate
            cap = min(cap, allocated)
        scale = self.limit_scales.get(inst.symbol)
        # the binding cap is scaled, whether the limit or the agent's capital share
        return cap if scale is None else scale_money(cap, scale)

    def _cap(self, agent_id: str, inst: Instrument) -> int:
        """:meth:`_money_cap` of a linear instrument in ticks x lots (-1: no mark to value
        the capital share); kept while it cannot change (no conversion at a mark)."""
        key = (agent_id, inst.symbol)
        cap = self._cap_ticklots.get(key)
        if cap is None:
            money = self._money_cap(agent_id, inst)
            # the instrument's money rule, so contract_size counts (OKX 0.01-BTC contracts)
            cap = -1 if money is None else int(money / inst.value_per_ticklot())
            if agent_id not in self._allocation or not self._settles_apart(inst):
                self._cap_ticklots[key] = cap
        return cap

    def _no_rate(self, inst: Instrument) -> str:
        into = self._portfolio.reporting_asset
        return f"no {inst.settle_asset} price in {into} to value the capital allocation"

    # -- the check ------------------------------------------------------------------------
    def check(
        self,
        intent: OrderIntent,
        open_same_side_lots: int,
        now_ns: int,
        consensus: float = 0.0,
    ) -> RiskDecision:
        """``consensus``: the agents' aggregated signal on the symbol, in [-1, 1]."""
        reason, detail = self._first_failure(intent, open_same_side_lots, now_ns)
        gate = self.limits.consensus_gate
        if reason is None and gate > 0 and consensus * int(intent.side) < -gate:
            reason, detail = RejectReason.RISK_CONSENSUS, f"against consensus {consensus:+.2f}"
        if reason is not None:
            self.rejections[reason] = self.rejections.get(reason, 0) + 1
        else:
            self._recent_orders.setdefault(intent.agent_id, deque()).append(now_ns)
        return RiskDecision(
            ts_event_ns=now_ns,
            agent_id=intent.agent_id,
            symbol=intent.symbol,
            client_order_id=intent.client_order_id,
            accepted=reason is None,
            requested_lots=intent.qty_lots,
            reason=reason,
            detail=detail,
        )

    def _first_failure(
        self, intent: OrderIntent, open_same_side_lots: int, now_ns: int
    ) -> tuple[RejectReason | None, str]:
        if self.kill_switch_on:
            return RejectReason.RISK_KILL_SWITCH, self.kill_reason
        agent = self.agent_limits(intent.agent_id, intent.symbol)
        inst = self._instruments.get(intent.symbol)
        if inst is None:
            return RejectReason.UNKNOWN_SYMBOL, intent.symbol
        if intent.qty_lots <= 0 or intent.qty_lots > agent.max_order_lots:
            return RejectReason.RISK_ORDER_SIZE, f"order size {intent.qty_lots} lots"
        mid = self.marks.get(intent.symbol)
        if mid is None:
            return RejectReason.RISK_NO_MARKET, "no mid price yet"
        if intent.order_type is OrderType.LIMIT:
            if intent.limit_ticks is None or intent.limit_ticks <= 0:
                return RejectReason.INVALID_TICK, "limit order without a positive price"
            band = mid * self.limits.price_band_bps / 10_000
            off = (intent.limit_ticks - mid) * int(intent.side)
            if off > band:
                return RejectReason.RISK_PRICE_BAND, f"{off:.1f} ticks through mid > {band:.1f}"
        window = self._recent_orders.setdefault(intent.agent_id, deque())
        while window and window[0] <= now_ns - NS_PER_SECOND:
            window.popleft()
        if len(window) >= agent.max_orders_per_second:
            return RejectReason.RISK_ORDER_RATE, f"{len(window)} orders in the last second"
        position = self._portfolio.position_lots(intent.agent_id, intent.symbol)
        projected = position + int(intent.side) * (open_same_side_lots + intent.qty_lots)
        # The caps bind an order that grows the position or turns it to the other side (a
        # flip is a new position: long 10 over a tightened cap may sell 10, not 19)
        binds = abs(projected) > abs(position) or projected * position < 0
        if intent.reduce_only and binds:
            # it may only shrink the position (its open orders on that side included): the
            # flag was carried to the store and never read
            return RejectReason.RISK_REDUCE_ONLY, f"position {position} would become {projected}"
        if abs(projected) > agent.max_position_lots and binds:
            return RejectReason.RISK_MAX_POSITION, f"projected {projected} lots"
        # Valued at the worse of the order's own price and the mark: a far-away limit on a
        # MARKET order (or a limit below the market) must not shrink the notional checked;
        # a MARKET order is valued at the mark plus the price band, the worst it may fill.
        worst_mark = math.ceil(mid * (1 + self.limits.price_band_bps / 10_000))
        if intent.order_type is OrderType.MARKET or intent.limit_ticks is None:
            price = worst_mark
        else:
            price = max(intent.limit_ticks, math.ceil(mid))
        if inst.inverse:
            # Inverse: the cap is in the settlement coin, like the PnL, fees and loss limits
            # it sits beside (one unit for all of an agent's money). A contract's coin value
            # grows as the price falls, so the worse price is the lower one.
            worst_low = math.floor(mid * (1 - self.limits.price_band_bps / 10_000))
            if intent.order_type is OrderType.MARKET or intent.limit_ticks is None:
                low = max(worst_low, 1)
            else:
                low = max(min(intent.limit_ticks, math.floor(mid)), 1)
            notional = inst.notional_quote(low, abs(projected))
            coin_cap = self._money_cap(intent.agent_id, inst)
            if coin_cap is None and binds:
                return RejectReason.RISK_NO_MARKET, self._no_rate(inst)
            if coin_cap is not None and notional > coin_cap and binds:
                return RejectReason.RISK_MAX_NOTIONAL, f"projected notional {notional} > cap"
        else:
            notional_ticklots = abs(price * projected)
            cap = self._cap(intent.agent_id, inst)
            if cap < 0 and binds:
                return RejectReason.RISK_NO_MARKET, self._no_rate(inst)
            if cap >= 0 and notional_ticklots > cap and binds:
                notional = inst.notional_quote(price, abs(projected))
                return RejectReason.RISK_MAX_NOTIONAL, f"projected notional {notional} > cap"
        # Over a daily loss limit, an order that only shrinks the position still goes (as
        # the caps above): refused, the agent sat on its losing position while the market
        # went on against it
        if intent.agent_id in self._loss_breached and binds:
            return RejectReason.RISK_DAILY_LOSS, "agent daily loss limit breached"
        if self.firm_breached:
            if self.limits.kill_on_daily_loss:
                self.trip_kill_switch("firm daily loss limit breached")
            if binds:
                return RejectReason.RISK_DAILY_LOSS, "firm daily loss limit breached"
        return None, ""

    # -- the batch check ------------------------------------------------------------------
    def check_batch(
        self,
        intents: Sequence[OrderIntent],
        open_lots: Mapping[tuple[str, str, Side], int],
        consensus: Callable[[str], float],
        client_order_ids: Sequence[str] | None = None,
    ) -> list[RiskDecision] | None:
        """:meth:`check` over a run of intents with nothing else between them (no mark,
        fill or signal), each at its own ``ts_event_ns``, as if every accepted intent's lots
        joined its side's open orders before the next one is checked (what recording its
        submit does). Same decisions, reasons, details and counters as ``check`` one by one.

        One pass in plain ints: what only depends on the symbol (the mark, the price band, the
        worst mark) is worked out once per run, what only depends on the agent and the symbol
        (limits, cap, order-rate window) once until the symbol's limit scale changes, not per
        intent; the cumulative checks (order rate, open lots, position, notional) carry
        their state from one intent to the next. ``None``: a run this path does not model
        (an instrument settled in another asset than the firm's currency, a firm loss that
        trips the kill switch at each intent); the
        caller then uses ``check`` per intent. ``open_lots``: the firm's open lots by
        (agent, symbol, side), as the order journal keeps them (absent: none);
        ``client_order_ids``: the intents' ids where the caller has them already.
        """
        if not intents:
            return []
        kill = self.limits.kill_on_daily_loss
        if kill and (self.firm_breached or self.firm_breached_at_day_end):
            return None  # the core trips (or re-trips, renaming the reason) per intent
        instruments = self._instruments
        views: dict[str, _SymbolView] = {}
        for sym in {i.symbol for i in intents}:
            inst = instruments.get(sym)
            if inst is not None and (inst.inverse or self._settles_apart(inst)):
                return None  # a cap in a coin, valued at a mark: checked per intent
            views[sym] = self._symbol_view(sym, inst)
        if self.kill_switch_on:
            return self._deny_all(intents, RejectReason.RISK_KILL_SWITCH, self.kill_reason)
        ids = client_order_ids or [coid(i.agent_id, i.seq) for i in intents]
        return self._batch_pass(intents, ids, views, open_lots, consensus)

    def _deny_all(
        self, intents: Sequence[OrderIntent], reason: RejectReason, detail: str
    ) -> list[RiskDecision]:
        self.rejections[reason] = self.rejections.get(reason, 0) + len(intents)
        return [
            RiskDecision(
                ts_event_ns=i.ts_event_ns,
                agent_id=i.agent_id,
                symbol=i.symbol,
                client_order_id=i.client_order_id,
                accepted=False,
                requested_lots=i.qty_lots,
                reason=reason,
                detail=detail,
            )
            for i in intents
        ]

    def _batch_pass(
        self,
        intents: Sequence[OrderIntent],
        ids: Sequence[str],
        views: dict[str, _SymbolView],
        open_lots: Mapping[tuple[str, str, Side], int],
        consensus: Callable[[str], float],
    ) -> list[RiskDecision]:
        gate = self.limits.consensus_gate
        rejections = self.rejections
        # Portfolio.position_lots's lookup, without its call an intent: positions cannot
        # change within a run (no fill between its intents)
        positions = self._portfolio.positions
        positions_get = positions.get
        loss_breached = self._loss_breached
        firm_breached = self.firm_breached
        agent_view = self._agent_view
        limit_type = OrderType.LIMIT
        buy = Side.BUY
        open_get = open_lots.get
        # enum members read through the class cost a lookup each: bound once a run
        size_r, no_market_r = RejectReason.RISK_ORDER_SIZE, RejectReason.RISK_NO_MARKET
        band_r, rate_r = RejectReason.RISK_PRICE_BAND, RejectReason.RISK_ORDER_RATE
        position_r, notional_r = RejectReason.RISK_MAX_POSITION, RejectReason.RISK_MAX_NOTIONAL
        loss_r, consensus_r = RejectReason.RISK_DAILY_LOSS, RejectReason.RISK_CONSENSUS
        position_detail: dict[int, str] = {}  # projected lots -> its detail, made once a run
        consensus_of: dict[str, float] = {}
        # the checks after the caps, skipped at once while none can refuse (the usual case)
        last_checks = bool(loss_breached) or firm_breached or gate > 0
        out: list[RiskDecision] = []
        append = out.append
        # the view of the symbol in hand, in locals, reloaded only when the symbol changes
        # (a run is mostly of one symbol): a lookup or two an intent less
        at_symbol = intents[0].symbol
        inst, mid, band, worst_mark, ceil_mid, agents, bought, sold = views[at_symbol]
        for intent, cid in zip(intents, ids, strict=True):
            now_ns = intent.ts_event_ns
            agent_id = intent.agent_id
            symbol = intent.symbol
            qty = intent.qty_lots
            if symbol != at_symbol:
                at_symbol = symbol
                inst, mid, band, worst_mark, ceil_mid, agents, bought, sold = views[symbol]
            reason: RejectReason | None = None
            detail = ""
            if inst is None:
                reason, detail = RejectReason.UNKNOWN_SYMBOL, symbol
            else:
                agent = agents.get(agent_id)
                if agent is None:
                    agent = agents[agent_id] = agent_view(agent_id, inst)
                max_order, max_position, max_rate, cap, window = agent
                lim = intent.limit_ticks
                is_limit = intent.order_type is limit_type
                side_of = intent.side
                if side_of is buy:
                    side, accepted_lots = 1, bought
                else:
                    side, accepted_lots = -1, sold
                if qty <= 0 or qty > max_order:
                    reason, detail = size_r, f"order size {qty} lots"
                elif mid is None:
                    reason, detail = no_market_r, "no mid price yet"
                elif is_limit and (lim is None or lim <= 0):
                    reason = RejectReason.INVALID_TICK
                    detail = "limit order without a positive price"
                elif is_limit and (lim - mid) * side > band:  # type: ignore[operator]
                    reason = band_r
                    off = (lim - mid) * side  # type: ignore[operator]
                    detail = f"{off:.1f} ticks through mid > {band:.1f}"
                else:
                    while window and window[0] <= now_ns - NS_PER_SECOND:
                        window.popleft()
                    # lots accepted earlier in this run, else the journal's (the journal's
                    # key, a tuple, is built only for an agent's first order on the side)
                    pending = accepted_lots.get(agent_id)
                    if pending is None:
                        # no tuple to build while the firm has no open order at all
                        pending = open_get((agent_id, symbol, side_of), 0) if open_lots else 0
                    if len(window) >= max_rate:
                        reason = rate_r
                        detail = f"{len(window)} orders in the last second"
                    else:
                        # no tuple to build while the firm holds no position at all
                        state = positions_get((agent_id, symbol)) if positions else None
                        position = 0 if state is None else state.qty_lots
                        projected = position + side * (pending + qty)
                        # abs() by hand: four builtin calls an intent were a tenth of the pass
                        size_after = -projected if projected < 0 else projected
                        # as check: bound when it grows or turns the position over
                        growing = size_after > (-position if position < 0 else position) or (
                            projected < 0 < position or position < 0 < projected
                        )
                        if growing and intent.reduce_only:
                            reason = RejectReason.RISK_REDUCE_ONLY
                            detail = f"position {position} would become {projected}"
                        elif growing and size_after > max_position:
                            reason = position_r
                            detail = position_detail.get(projected) or position_detail.setdefault(
                                projected, f"projected {projected} lots"
                            )
                        elif growing:  # the notional cap binds only an order that grows or flips
                            if not is_limit or lim is None:
                                price = worst_mark
                            else:
                                price = lim if lim > ceil_mid else ceil_mid
                            if price * size_after > cap:
                                reason = notional_r
                                notional = inst.notional_quote(price, size_after)
                                detail = f"projected notional {notional} > cap"
                        if last_checks and reason is None:
                            if growing and agent_id in loss_breached:
                                reason = loss_r
                                detail = "agent daily loss limit breached"
                            elif growing and firm_breached:
                                reason = loss_r
                                detail = "firm daily loss limit breached"
                            elif gate > 0:
                                c = consensus_of.get(symbol)
                                if c is None:
                                    c = consensus_of[symbol] = consensus(symbol)
                                if c * side < -gate:
                                    reason = consensus_r
                                    detail = f"against consensus {c:+.2f}"
                    if reason is None:
                        window.append(now_ns)
                        accepted_lots[agent_id] = pending + qty
                        append(RiskDecision(now_ns, agent_id, symbol, cid, True, qty))
                        continue
            rejections[reason] = rejections.get(reason, 0) + 1
            # by position, in field order: ts_event_ns, agent_id, symbol, client_order_id,
            # accepted, requested_lots, reason, detail
            append(RiskDecision(now_ns, agent_id, symbol, cid, False, qty, reason, detail))
        return out

    def _agent_view(self, agent_id: str, inst: Instrument) -> _AgentView:
        limits = self.agent_limits(agent_id, inst.symbol)
        return _AgentView(
            limits.max_order_lots,
            limits.max_position_lots,
            limits.max_orders_per_second,
            self._cap(agent_id, inst),
            self._recent_orders.setdefault(agent_id, deque()),
        )

    def _symbol_view(self, symbol: str, inst: Instrument | None) -> _SymbolView:
        if inst is None:
            return _SymbolView(None, None, 0.0, 0, 0, {}, {}, {})
        by_symbol = self._agent_views
        if by_symbol is None:
            by_symbol = self._agent_views = {}
        agents = by_symbol.setdefault(symbol, {})
        mid = self.marks.get(symbol)
        if mid is None:
            return _SymbolView(inst, None, 0.0, 0, 0, agents, {}, {})
        bps = self.limits.price_band_bps
        # the same float arithmetic as check: decisions at a band's edge stay equal
        return _SymbolView(
            inst,
            mid,
            mid * bps / 10_000,
            math.ceil(mid * (1 + bps / 10_000)),
            math.ceil(mid),
            agents,
            {},
            {},
        )
