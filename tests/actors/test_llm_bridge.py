"""The agent actor's bridge to the model: whatever the model client raises is that decision's
stored error, never a silent task death read later as a timeout."""

from __future__ import annotations

import time
from typing import Any

import pytest

from actors.llm_bridge import LlmBridge
from sapphire.agents.llm_agent import LlmAgent
from sapphire.model.events import Quote
from sapphire.model.instrument import Instrument

INST = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001")
T0 = 1_723_161_264_317_000_000


class Raising:
    """A model client whose every call raises (a bad cutoff date reached ``check_cutoff``)."""

    stats: Any = None
    _identity = None

    async def decide_detailed(self, prompt: Any, ts_event_ns: int | None = None) -> Any:
        raise ValueError("knowledge_cutoff '2024-13-45' is not a YYYY-MM-DD date")


def test_a_client_that_raises_stores_the_error_not_a_timeout() -> None:
    bridge = LlmBridge("sapphire-llm", timeout_s=1.0)
    bridge._client = Raising()
    agent = LlmAgent("llm", INST, {"fallback": "momentum", "decision_timeout_ns": 8 * 10**9})
    records = []
    for i in range(12):
        t = T0 + i * 10**9
        records += bridge.collect(agent, "BTCUSDT", t)
        quote = Quote(
            ts_event_ns=t, symbol="BTCUSDT", bid_ticks=618_000, ask_ticks=618_001, bid_lots=5,
            ask_lots=5,
        )  # fmt: skip
        agent.on_event(quote, t)
        bridge.submit(agent.drain_requests())
        time.sleep(0.2)
    records += bridge.collect(agent, "BTCUSDT", T0 + 12 * 10**9)
    assert records, "the requests' answers never arrived"
    assert all(not r.valid and "ValueError: knowledge_cutoff" in r.error for r in records)
    assert not any(r.error.startswith("timeout") for r in records)
    assert bridge._raised == len(records)


@pytest.fixture(autouse=True)
def _no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    import actors.llm_bridge as bridge_module

    monkeypatch.setattr(bridge_module, "redis_level", lambda *a, **k: None)


def test_the_summary_counts_what_the_stored_rows_say() -> None:
    # a request the agent timed out in event time is one "timeout" row, and its answer, if
    # it came, a "late" row: the summary printed "0 timed out" (the client's count) for it
    from sapphire.storage.records import LlmDecisionRecord

    bridge = LlmBridge("sapphire-llm", timeout_s=1.0)

    def row(valid: bool, error: str = "", fallback: str = "") -> LlmDecisionRecord:
        return LlmDecisionRecord(
            ts_event_ns=T0, agent_id="llm", symbol="BTCUSDT", model="m", action="hold",
            size_fraction=0.0, confidence=0.0, rationale="", valid=valid, latency_ns=0,
            error=error, fallback=fallback,
        )  # fmt: skip

    for r in (
        row(True),
        row(False, "timeout: no answer within decision_timeout_ns=1 of event time", "hold"),
        row(False, "late: answered after the request's event-time deadline"),
    ):
        bridge._count(r)
    stats = bridge.stats()
    assert (stats["stored"], stats["in_time"], stats["timeouts"], stats["late"]) == (3, 1, 1, 1)
    assert stats["fallbacks"] == 1
