"""An agent that asks a language model what to do, without ever waiting for it.

The tick path stays pure and fast: ``on_event`` updates numeric features and, at most once
per ``decision_interval_ns`` of event time, hands out a :class:`DecisionRequest` (queued for
the actor layer to :meth:`LlmAgent.drain_requests`, or given to an injected non-blocking
``submit`` callable). The answer comes back through :meth:`LlmAgent.on_decision` and is
acted on at the *next* event, never retroactively. A request still unanswered when event
time passes its deadline is counted as a timeout and the deterministic fallback (hold, or a
one-lot momentum rule) decides instead; a late answer is counted and dropped. A failed
answer (no model output, an invalid one, a refusal) also hands the decision to the fallback,
and every such outcome is queued with its reason (:meth:`LlmAgent.drain_outcomes`) for
storage, so a stored row always says whether the model or the fallback decided. Sizes are
capped by this agent's own limits; the coordinator's risk checks bind on top.

Point in time: every prompt feature carries the time its newest input was known; a request
whose features include one known after the decision time (an out-of-order feed) is refused
before it reaches a model, counted in ``stats.refused`` and stored with its reason.

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
from sapphire.llm.decision import (
    HOLD,
    DecisionStats,
    LlmDecision,
    ParseResult,
    parse_decision,
)
from sapphire.llm.pit import LookaheadError
from sapphire.llm.prompt import (
    DecisionPrompt,
    MarketFeatures,
    PromptError,
    build_prompt,
    safe_symbol,
)
from sapphire.model.events import AnyMarketEvent, BookSnapshot, Quote, Side, Trade
from sapphire.model.instrument import Instrument
from sapphire.model.orders import OrderFilled, TimeInForce

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


class LlmOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """A decision's fate, for storage: one the model did not make (what the fallback decided
    and why), or a model answer that carried a ``note`` once the agent acted on it (``error``
    empty) or dropped it (``error`` says why)."""

    request_id: int
    ts_event_ns: int
    decision: LlmDecision
    fallback: str
    error: str
    note: bytes = b""
    """The caller's own record of the answer (:meth:`LlmAgent.on_decision`), handed back
    untouched: the caller stores it only now that the agent used or dropped the answer."""


class LlmAgentState(msgspec.Struct, kw_only=True):
    mids: list[tuple[int, float]] = msgspec.field(default_factory=list)
    """(ts_event_ns, mid in ticks), one sample per ``sample_interval_ns``."""
    bid_ticks: int = 0
    ask_ticks: int = 0
    bid_lots: int = 0
    ask_lots: int = 0
    book_ts_ns: int = 0
    """Event time of the book the features read (their as-of time)."""
    fill_seen_ns: int = 0
    """When (the agent's clock, ``now_ns``) the newest fill reached it: the position and
    PnL are known as of then."""
    last_price: float = 0.0
    request_seq: int = 0
    last_request_ns: int | None = None
    outstanding: DecisionRequest | None = None
    arrived: list[tuple[LlmDecision, str]] = msgspec.field(default_factory=list)
    """(decision, source): ``llm`` or ``fallback``, acted on at the next event."""
    arrived_by_ns: list[int] = msgspec.field(default_factory=list)
    """The deadline (event time) of the request each ``arrived`` entry answers; 0: none."""
    arrived_fates: list[LlmOutcome | None] = msgspec.field(default_factory=list)
    """For each ``arrived`` entry, the outcome to report once it is acted on or dropped (a
    model answer handed in with a ``note``); None: nothing to report."""
    queued: list[DecisionRequest] = msgspec.field(default_factory=list)
    outcomes: list[LlmOutcome] = msgspec.field(default_factory=list)
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

    def drain_outcomes(self) -> list[LlmOutcome]:
        """Decisions made without the model since the last call (timeouts, refusals), and
        the fates of model answers handed in with a ``note`` (acted on, or dropped stale)."""
        out, self.state.outcomes = self.state.outcomes, []
        return out

    def unresolved(self) -> list[LlmOutcome]:
        """The decisions a run ends with unresolved, for its last rows: model answers taken
        in time that nothing acted on (no event of the symbol came before the end), and a
        request with no answer handed over. Stored nowhere else, they were missing from
        ``llm_decisions``. Leaves the state as it is: asked again (a retried end), it says
        the same."""
        st = self.state
        out = [
            msgspec.structs.replace(
                fate,
                error="unused: answered in time, but the run ended before the symbol's next event",
            )
            for fate in st.arrived_fates
            if fate is not None
        ]
        if st.outstanding is not None:
            out.append(
                LlmOutcome(
                    request_id=st.outstanding.request_id,
                    ts_event_ns=st.outstanding.ts_event_ns,
                    decision=HOLD,
                    fallback="",
                    error="unused: the run ended with the request unanswered",
                )
            )
        return out

    def on_decision(
        self,
        request_id: int,
        answer: LlmDecision | ParseResult | str,
        now_ns: int,
        error: str = "",
        note: bytes = b"",
    ) -> LlmDecision | None:
        """Record an answer; it is acted on at the next market event.

        ``answer`` may be raw model text (parsed and counted here), a parse result, or an
        already validated decision. A non-empty ``error`` (the answer never came from the
        model: a timeout, a transport failure, a refusal) or an invalid parse hands the
        decision to the fallback. Returns the decision that will be acted on (the fallback's
        on failure), or None for an answer to an expired or unknown request (counted late).

        ``note``: the caller's record of a model answer it stores only once the answer's
        fate is known. An answer taken in time may still be dropped at the next event (the
        symbol's next event came after the deadline): stored at hand-over, its row said the
        model traded when nothing did. The note comes back in :meth:`drain_outcomes` when
        the answer is acted on or dropped; it rides in this agent's state, so a checkpoint
        carries it and a replay reports it again, once.
        """
        st = self.state
        if isinstance(answer, str):
            answer = parse_decision(answer)
        if (
            st.outstanding is None
            or st.outstanding.request_id != request_id
            # past its deadline in event time, though no event has expired it yet (answers
            # are handed over before the step's events): late, as one after the expiry is
            or now_ns > st.outstanding.deadline_ns
        ):
            st.stats.late += 1
            return None
        asked_ns = st.outstanding.ts_event_ns
        deadline, st.outstanding = st.outstanding.deadline_ns, None
        if not error and isinstance(answer, ParseResult):
            st.stats.record(answer)
            if not answer.ok:
                error = answer.error
            answer = answer.decision
        elif not error:
            st.stats.ok += 1
        if error:
            kind = error.split(":", 1)[0]
            if kind == "timeout":
                st.stats.timeouts += 1
            elif kind == "point_in_time":
                st.stats.refused += 1
            elif kind not in ("malformed_json", "schema_violation"):
                st.stats.errors += 1
            fallback = self._fallback_decision(now_ns)
            st.fallbacks += 1
            self._arrive(fallback, "fallback", deadline)
            return fallback
        assert isinstance(answer, LlmDecision)
        fate = None
        if note:
            fate = LlmOutcome(
                request_id=request_id,
                ts_event_ns=asked_ns,
                decision=answer,
                fallback="",
                error="",
                note=note,
            )
        self._arrive(answer, "llm", deadline, fate)
        return answer

    def _arrive(
        self,
        decision: LlmDecision,
        source: str,
        deadline_ns: int,
        fate: LlmOutcome | None = None,
    ) -> None:
        st = self.state
        # entries of a snapshot from before the deadlines (or fates) were kept have none
        st.arrived_by_ns.extend([0] * (len(st.arrived) - len(st.arrived_by_ns)))
        st.arrived_fates.extend([None] * (len(st.arrived) - len(st.arrived_fates)))
        st.arrived.append((decision, source))
        st.arrived_by_ns.append(deadline_ns)
        st.arrived_fates.append(fate)

    # -- the tick path ----------------------------------------------------------------------
    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        if event.symbol != self.symbol:
            return ()
        ts = event.ts_event_ns
        if not self._update_market(event):
            return ()
        st = self.state
        out: list[AgentOutput] = []
        # 2. answers that arrived since the previous event, while their request's deadline
        # holds: one answered in time waited for the symbol's next event, however late (a
        # gap in the feed), and traded a decision made for a book long gone
        n = len(st.arrived)
        deadlines = st.arrived_by_ns + [0] * (n - len(st.arrived_by_ns))
        fates = st.arrived_fates + [None] * (n - len(st.arrived_fates))
        for (decision, source), deadline, fate in zip(st.arrived, deadlines, fates, strict=True):
            if deadline and ts > deadline:
                st.stats.stale += 1
                if fate is not None:
                    # the answer came in time but nothing traded on it: its stored row must
                    # say so, not that the model decided
                    fate = msgspec.structs.replace(
                        fate,
                        error=(
                            f"stale: answered in time, but the symbol's next event "
                            f"({ts}) came after the request's deadline ({deadline})"
                        ),
                    )
            else:
                out.extend(self._act(ts, decision, source))
            if fate is not None:
                st.outcomes.append(fate)
        st.arrived.clear()
        st.arrived_by_ns.clear()
        st.arrived_fates.clear()
        # 3. a request past its deadline: count it and let the fallback decide
        if st.outstanding is not None and ts > st.outstanding.deadline_ns:
            expired, st.outstanding = st.outstanding, None
            st.stats.timeouts += 1
            reason = (
                f"timeout: no answer within decision_timeout_ns="
                f"{self.config.decision_timeout_ns} of event time"
            )
            out.extend(self._fall_back(ts, expired.request_id, reason, expired.ts_event_ns))
        # 4. a new request, at most one in flight
        due = (
            st.last_request_ns is None
            or ts - st.last_request_ns >= self.config.decision_interval_ns
        )
        if st.outstanding is None and due and self._has_book():
            self._issue(ts, now_ns)
        return out

    # -- 1. features ------------------------------------------------------------------------
    def _update_market(self, event: AnyMarketEvent) -> bool:
        st = self.state
        if isinstance(event, Quote):
            if event.bid_ticks <= 0 or event.ask_ticks < event.bid_ticks:
                return False
            st.bid_ticks, st.ask_ticks = event.bid_ticks, event.ask_ticks
            st.bid_lots, st.ask_lots = event.bid_lots, event.ask_lots
            st.book_ts_ns = event.ts_event_ns
            mid = 0.5 * (event.bid_ticks + event.ask_ticks)
        elif isinstance(event, BookSnapshot):
            if not event.bids or not event.asks or event.asks[0][0] < event.bids[0][0]:
                return False
            (st.bid_ticks, st.bid_lots), (st.ask_ticks, st.ask_lots) = event.bids[0], event.asks[0]
            st.book_ts_ns = event.ts_event_ns
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

    def features(self, ts: int, now_ns: int | None = None) -> MarketFeatures:
        """The prompt's features for a decision on the event at ``ts`` (exchange time),
        which reached the agent at ``now_ns`` (its clock; default ``ts``)."""
        st = self.state
        mid_ticks = self._mid_ticks()
        size = st.bid_lots + st.ask_lots
        pnl = self.equity_quote(Decimal(0), round(mid_ticks))
        # Every feature reads the current book; returns and volatility also the newest mid
        # sample. Their as-of times are what the point-in-time check compares with ``ts``.
        book = st.book_ts_ns
        sampled = max(book, st.mids[-1][0]) if st.mids else book
        # The position and PnL read every fill so far, known when it reached the agent. On
        # the event's clock that is its arrival less the event's own delay: a fill that
        # reached the agent after the deciding event did (a runtime handing a report ahead
        # of an earlier event) is the future in the prompt. Its exchange stamp is no test:
        # a fill stamped after the event's time may arrive before the event (a response
        # latency shorter than the feed's), known to the agent when it decides.
        delay = (now_ns - ts) if now_ns is not None else 0
        fills = st.fill_seen_ns - delay if st.fill_seen_ns else 0
        as_of = (
            ("mid", book),
            ("spread_bps", book),
            ("imbalance", book),
            ("position_lots", fills),
            ("pnl_quote", max(book, fills)),
            ("returns_bps", sampled),
            ("volatility_bps", sampled),
        )
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
            as_of_ns=as_of,
        )

    def on_fill(self, fill: OrderFilled, now_ns: int) -> Sequence[AgentOutput]:
        self.state.fill_seen_ns = max(self.state.fill_seen_ns, now_ns)
        return ()

    # -- 4. requests --------------------------------------------------------------------------
    def _issue(self, ts: int, now_ns: int | None = None) -> None:
        st = self.state
        st.request_seq += 1
        st.last_request_ns = ts
        try:
            prompt = build_prompt(self.features(ts, now_ns))
        except LookaheadError as exc:
            # future data in the prompt: never ask; the fallback decides and it is stored
            st.stats.refused += 1
            for d in self._refuse(ts, st.request_seq, str(exc)):
                self._arrive(d, "fallback", 0)  # decided now, on the book of now
            return
        request = DecisionRequest(
            agent_id=self.agent_id,
            request_id=st.request_seq,
            ts_event_ns=ts,
            deadline_ns=ts + self.config.decision_timeout_ns,
            prompt=prompt,
        )
        st.outstanding = request
        if self._submit is not None:
            self._submit(request)
        else:
            st.queued.append(request)

    # -- decisions to intents -------------------------------------------------------------
    def _refuse(
        self, ts: int, request_id: int, reason: str, asked_ns: int | None = None
    ) -> list[LlmDecision]:
        """The fallback's decision for a request the model did not answer, queued for storage
        under the time it was asked about (``asked_ns``; default ``ts``): its row is that
        request's, flagged against the model's cutoff as the request was."""
        decision = self._fallback_decision(ts)
        self.state.fallbacks += 1
        self.state.outcomes.append(
            LlmOutcome(
                request_id=request_id,
                ts_event_ns=ts if asked_ns is None else asked_ns,
                decision=decision,
                fallback=self.config.fallback,
                error=reason,
            )
        )
        return [decision]

    def _fall_back(
        self, ts: int, request_id: int, reason: str, asked_ns: int | None = None
    ) -> list[AgentOutput]:
        out: list[AgentOutput] = []
        for decision in self._refuse(ts, request_id, reason, asked_ns):
            out.extend(self._act(ts, decision, "fallback"))
        return out

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
        # the configured lots count order steps; integer lots may be a finer size grid
        step = self.instrument.lots_per_step
        # a hair over the product before flooring: 1/49 x 49 is 0.999..., which floored the
        # fallback's one order step to none (49, 98, 103, ... lots never traded)
        qty = math.floor(fraction * self.config.max_order_lots + 1e-9) * step
        # each side's working orders count against that side's room only: netted, a resting
        # sell made room for buys past the cap (both could fill), and a resting buy room for
        # sells below zero with shorting off (the buy may never fill)
        buys = sells = 0
        for o in self.core.open_orders.values():
            if o.side is Side.BUY:
                buys += o.leaves_lots
            else:
                sells += o.leaves_lots
        position = self.core.position_lots
        limit = self.config.max_position_lots * step
        if side is Side.BUY:
            room = limit - (position + buys)
        else:
            low = position - sells
            room = limit + low if self.config.allow_short else max(low, 0)
        return max(0, min(qty, room) // step * step)


def build_llm_agent(agent_id: str, instrument: Instrument, params: dict[str, Any]) -> LlmAgent:
    """Registry factory (kind ``llm``)."""
    return LlmAgent(agent_id, instrument, params)
