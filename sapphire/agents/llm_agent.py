"""An agent that asks a language model what to do, without ever waiting for it.

The tick path stays pure and fast: ``on_event`` updates numeric features and, at most once
per ``decision_interval_ns`` of event time, hands out a :class:`DecisionRequest` (queued for
the actor layer to :meth:`LlmAgent.drain_requests`, or given to an injected non-blocking
``submit`` callable). The answer comes back through :meth:`LlmAgent.on_decision` and is
acted on at the *next* event, never retroactively. A request still unanswered when event
time passes its deadline is counted as a timeout and the deterministic fallback (hold, or a
one-lot momentum rule) decides instead; a late answer is counted and dropped. Sizes are
capped by this agent's own limits; the coordinator's risk checks bind on top.

Pipeline per event: 1 market features, 2 apply an arrived decision, 3 expire a late request,
4 maybe issue a new request.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from sapphire.agents.base import AgentConfigError, AgentOutput, BaseAgent, decode_config
from sapphire.llm.decision import DecisionStats, LlmDecision, ParseResult, parse_decision
from sapphire.llm.prompt import (
    DecisionPrompt,
    MarketFeatures,
    PromptError,
    build_prompt,
    safe_symbol,
)
from sapphire.model.events import AnyMarketEvent, BookSnapshot, Quote, Side, Trade
from sapphire.model.instrument import Instrument
from sapphire.model.orders import TimeInForce

_NS = 1_000_000_000


class LlmAgentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_order_lots: Annotated[int, msgspec.Meta(gt=0)] = 1
    max_position_lots: Annotated[int, msgspec.Meta(gt=0)] = 5
    decision_interval_ns: Annotated[int, msgspec.Meta(gt=0)] = 5 * _NS
    decision_timeout_ns: Annotated[int, msgspec.Meta(gt=0)] = 2 * _NS
    min_confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    return_windows_s: tuple[Annotated[int, msgspec.Meta(gt=0)], ...] = (10, 60)
    sample_interval_ns: Annotated[int, msgspec.Meta(gt=0)] = _NS
    fallback: Literal["hold", "momentum"] = "hold"
    fallback_threshold_bps: Annotated[float, msgspec.Meta(ge=0.0)] = 2.0
    allow_short: bool = True
    limit_at_touch: bool = True
    """True: IOC limit at the opposite best price; False: market order."""

    def __post_init__(self) -> None:
        if not self.return_windows_s:
            raise AgentConfigError("return_windows_s must name at least one window")
        if list(self.return_windows_s) != sorted(set(self.return_windows_s)):
            raise AgentConfigError("return_windows_s must be strictly increasing")


class DecisionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A prompt an agent wants answered by ``deadline_ns`` (event time)."""

    agent_id: str
    request_id: int
    ts_event_ns: int
    deadline_ns: int
    prompt: DecisionPrompt


class LlmAgentState(msgspec.Struct, kw_only=True):
    mids: list[tuple[int, float]] = msgspec.field(default_factory=list)
    """(ts_event_ns, mid in ticks), one sample per ``sample_interval_ns``."""
    bid_ticks: int = 0
    ask_ticks: int = 0
    bid_lots: int = 0
    ask_lots: int = 0
    last_price: float = 0.0
    request_seq: int = 0
    last_request_ns: int | None = None
    outstanding: DecisionRequest | None = None
    arrived: list[LlmDecision] = msgspec.field(default_factory=list)
    queued: list[DecisionRequest] = msgspec.field(default_factory=list)
    stats: DecisionStats = msgspec.field(default_factory=DecisionStats)
    fallbacks: int = 0


class LlmAgent(BaseAgent[LlmAgentState]):
    def __init__(
        self,
        agent_id: str,
        instrument: Instrument,
        config: LlmAgentConfig | dict[str, Any],
        submit: Callable[[DecisionRequest], None] | None = None,
    ) -> None:
        super().__init__(agent_id, instrument, LlmAgentState())
        self.config: LlmAgentConfig = decode_config(LlmAgentConfig, config)
        try:
            safe_symbol(instrument.symbol)
        except PromptError as exc:
            raise AgentConfigError(str(exc)) from exc
        self._submit = submit
        self._tick = instrument.tick_float

    @property
    def stats(self) -> DecisionStats:
        return self.state.stats

    # -- the actor layer's side -----------------------------------------------------------
    def drain_requests(self) -> list[DecisionRequest]:
        out, self.state.queued = self.state.queued, []
        return out

    def on_decision(
        self, request_id: int, answer: LlmDecision | ParseResult | str, now_ns: int
    ) -> None:
        """Record an answer; it is acted on at the next market event.

        ``answer`` may be raw model text (parsed and counted here), a parse result, or an
        already validated decision. Answers to expired or unknown requests count as late.
        """
        st = self.state
        if isinstance(answer, str):
            answer = parse_decision(answer)
        if st.outstanding is None or st.outstanding.request_id != request_id:
            st.stats.late += 1
            return
        st.outstanding = None
        if isinstance(answer, ParseResult):
            st.stats.record(answer)
            answer = answer.decision
        else:
            st.stats.ok += 1
        st.arrived.append(answer)

    # -- the tick path ----------------------------------------------------------------------
    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        if event.symbol != self.symbol:
            return ()
        ts = event.ts_event_ns
        if not self._update_market(event):
            return ()
        st = self.state
        out: list[AgentOutput] = []
        # 2. answers that arrived since the previous event
        for decision in st.arrived:
            out.extend(self._act(ts, decision, "llm"))
        st.arrived.clear()
        # 3. a request past its deadline: count it and let the fallback decide
        if st.outstanding is not None and ts > st.outstanding.deadline_ns:
            st.outstanding = None
            st.stats.timeouts += 1
            st.fallbacks += 1
            out.extend(self._act(ts, self._fallback_decision(ts), "fallback"))
        # 4. a new request, at most one in flight
        due = (
            st.last_request_ns is None
            or ts - st.last_request_ns >= self.config.decision_interval_ns
        )
        if st.outstanding is None and due and self._has_book():
            self._issue(ts)
        return out

    # -- 1. features ------------------------------------------------------------------------
    def _update_market(self, event: AnyMarketEvent) -> bool:
        st = self.state
        if isinstance(event, Quote):
            if event.bid_ticks <= 0 or event.ask_ticks < event.bid_ticks:
                return False
            st.bid_ticks, st.ask_ticks = event.bid_ticks, event.ask_ticks
            st.bid_lots, st.ask_lots = event.bid_lots, event.ask_lots
            mid = 0.5 * (event.bid_ticks + event.ask_ticks)
        elif isinstance(event, BookSnapshot):
            if not event.bids or not event.asks or event.asks[0][0] < event.bids[0][0]:
                return False
            (st.bid_ticks, st.bid_lots), (st.ask_ticks, st.ask_lots) = event.bids[0], event.asks[0]
            mid = 0.5 * (st.bid_ticks + st.ask_ticks)
        elif isinstance(event, Trade):
            if event.price_ticks <= 0:
                return False
            # Trades only mark the last price; returns are measured on book mids.
            st.last_price = float(event.price_ticks)
            return True
        else:
            return False
        ts = event.ts_event_ns
        if not st.mids or ts - st.mids[-1][0] >= self.config.sample_interval_ns:
            st.mids.append((ts, mid))
            horizon = max(self.config.return_windows_s) * _NS + self.config.sample_interval_ns
            while len(st.mids) > 2 and ts - st.mids[1][0] > horizon:
                st.mids.pop(0)
        return True

    def _has_book(self) -> bool:
        return self.state.bid_ticks > 0 and self.state.ask_ticks >= self.state.bid_ticks

    def _mid_ticks(self) -> float:
        st = self.state
        return 0.5 * (st.bid_ticks + st.ask_ticks)

    def _return_bps(self, ts: int, window_s: int) -> float:
        """Return of the latest mid over ``window_s`` (from the oldest sample inside it)."""
        st = self.state
        start = ts - window_s * _NS
        base = next((m for t, m in st.mids if t >= start), None)
        if base is None or base <= 0:
            return 0.0
        return (self._mid_ticks() / base - 1.0) * 1e4

    def _volatility_bps(self) -> float:
        mids = [m for _, m in self.state.mids]
        rets = [(b / a - 1.0) * 1e4 for a, b in itertools.pairwise(mids) if a > 0]
        if len(rets) < 2:
            return 0.0
        mean = sum(rets) / len(rets)
        return math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))

    def features(self, ts: int) -> MarketFeatures:
        st = self.state
        mid_ticks = self._mid_ticks()
        size = st.bid_lots + st.ask_lots
        pnl = self.equity_quote(Decimal(0), round(mid_ticks))
        return MarketFeatures(
            symbol=self.symbol,
            ts_event_ns=ts,
            mid=mid_ticks * self._tick,
            spread_bps=(st.ask_ticks - st.bid_ticks) / mid_ticks * 1e4 if mid_ticks else 0.0,
            returns_bps=tuple((w, self._return_bps(ts, w)) for w in self.config.return_windows_s),
            volatility_bps=self._volatility_bps(),
            imbalance=(st.bid_lots - st.ask_lots) / size if size > 0 else 0.0,
            position_lots=self.core.position_lots,
            max_position_lots=self.config.max_position_lots,
            pnl_quote=float(pnl),
        )

    # -- 4. requests --------------------------------------------------------------------------
    def _issue(self, ts: int) -> None:
        st = self.state
        st.request_seq += 1
        request = DecisionRequest(
            agent_id=self.agent_id,
            request_id=st.request_seq,
            ts_event_ns=ts,
            deadline_ns=ts + self.config.decision_timeout_ns,
            prompt=build_prompt(self.features(ts)),
        )
        st.outstanding = request
        st.last_request_ns = ts
        if self._submit is not None:
            self._submit(request)
        else:
            st.queued.append(request)

    # -- decisions to intents -------------------------------------------------------------
    def _fallback_decision(self, ts: int) -> LlmDecision:
        if self.config.fallback == "hold":
            return LlmDecision(action="hold", size_fraction=0.0, confidence=0.0, rationale="")
        ret = self._return_bps(ts, self.config.return_windows_s[0])
        thr = self.config.fallback_threshold_bps
        action: Literal["buy", "sell", "hold"] = (
            "buy" if ret > thr else "sell" if ret < -thr else "hold"
        )
        fraction = 1.0 / self.config.max_order_lots  # one lot: the fallback stays small
        return LlmDecision(action=action, size_fraction=fraction, confidence=1.0, rationale="")

    def _act(self, ts: int, decision: LlmDecision, source: str) -> list[AgentOutput]:
        if decision.action == "hold" or decision.confidence < self.config.min_confidence:
            return []
        side = Side.BUY if decision.action == "buy" else Side.SELL
        qty = self.capped_qty(side, decision.size_fraction)
        if qty <= 0:
            return []
        st = self.state
        strength = int(side) * decision.size_fraction * decision.confidence
        out: list[AgentOutput] = [self.signal(ts, strength, f"{source}:{decision.action}")]
        if self.config.limit_at_touch and self._has_book():
            price = st.ask_ticks if side is Side.BUY else st.bid_ticks
            out.append(self.order(ts, side, qty, limit_ticks=price, tif=TimeInForce.IOC))
        else:
            out.append(self.order(ts, side, qty))
        return out

    def capped_qty(self, side: Side, size_fraction: float) -> int:
        """Lots for ``size_fraction`` of the max order, within the position limit."""
        fraction = min(max(size_fraction, 0.0), 1.0) if math.isfinite(size_fraction) else 0.0
        qty = math.floor(fraction * self.config.max_order_lots)
        exposure = self.core.position_lots + self.pending_lots()
        limit = self.config.max_position_lots
        if side is Side.BUY:
            room = limit - exposure
        else:
            room = limit + exposure if self.config.allow_short else max(exposure, 0)
        return max(0, min(qty, room))


def build_llm_agent(agent_id: str, instrument: Instrument, params: dict[str, Any]) -> LlmAgent:
    """Registry factory (kind ``llm``)."""
    return LlmAgent(agent_id, instrument, params)
