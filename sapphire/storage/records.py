"""Stored records whose source objects live elsewhere, and the shapes the converters accept.

* Risk decisions come from :class:`sapphire.risk.engine.RiskDecision`; the converter takes
  anything shaped like :class:`RiskDecisionLike`, so storage does not import the risk engine.
* An LLM call is stored as :class:`LlmDecisionRecord`: the model's decision
  (:class:`sapphire.llm.decision.LlmDecision` -- action, size, confidence, rationale) plus the
  context the decision itself does not carry (time, agent, symbol, model, validity, latency).
* :class:`PnlSnapshot` is an agent's marked-to-market PnL; no model message carries it yet.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

import msgspec

from sapphire.model.orders import RejectReason


class RiskDecisionLike(Protocol):
    """The fields of :class:`sapphire.risk.engine.RiskDecision` that are stored."""

    @property
    def ts_event_ns(self) -> int: ...
    @property
    def agent_id(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def client_order_id(self) -> str: ...
    @property
    def accepted(self) -> bool: ...
    @property
    def requested_lots(self) -> int: ...
    @property
    def reason(self) -> RejectReason | None: ...
    @property
    def detail(self) -> str: ...


class LlmDecisionLike(Protocol):
    """The fields of :class:`sapphire.llm.decision.LlmDecision`."""

    @property
    def action(self) -> str: ...
    @property
    def size_fraction(self) -> float: ...
    @property
    def confidence(self) -> float: ...
    @property
    def rationale(self) -> str: ...


class LlmDecisionRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One LLM decision as stored. ``valid`` is False when the model's answer was not used
    (timeout, transport error, invalid output, refusal): ``error`` names why and
    ``fallback`` the agent's rule that decided instead (the stored action is the fallback's).
    ``before_cutoff``: the event predates the model's knowledge cutoff. The metering fields
    come from the serving replica; ``cost`` is ``cpu_s``/``gpu_s`` at the run's price table
    (``cost_currency``); a cache hit costs nothing."""

    ts_event_ns: int
    agent_id: str
    symbol: str
    model: str
    action: str
    size_fraction: float
    confidence: float
    rationale: str
    valid: bool
    latency_ns: int
    error: str = ""
    prompt_hash: str = ""
    fallback: str = ""
    before_cutoff: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_wait_ns: int = 0
    batch_size: int = 0
    cache_hit: bool = False
    cpu_s: float = 0.0
    gpu_s: float = 0.0
    cost: Decimal = Decimal(0)
    cost_currency: str = ""

    @classmethod
    def of(
        cls,
        decision: LlmDecisionLike,
        *,
        ts_event_ns: int,
        agent_id: str,
        symbol: str,
        model: str,
        valid: bool,
        latency_ns: int,
        error: str = "",
        prompt_hash: str = "",
    ) -> LlmDecisionRecord:
        return cls(
            ts_event_ns=ts_event_ns,
            agent_id=agent_id,
            symbol=symbol,
            model=model,
            action=decision.action,
            size_fraction=decision.size_fraction,
            confidence=decision.confidence,
            rationale=decision.rationale,
            valid=valid,
            latency_ns=latency_ns,
            error=error,
            prompt_hash=prompt_hash,
        )


class PnlSnapshot(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An agent's marked-to-market PnL on one symbol at ``ts_event_ns``."""

    ts_event_ns: int
    agent_id: str
    symbol: str
    position_lots: int
    realized_pnl_quote: Decimal
    unrealized_pnl_quote: Decimal
    fees_quote: Decimal
    equity_quote: Decimal
    funding_quote: Decimal = Decimal(0)  # received (+) or paid (-); in equity_quote
