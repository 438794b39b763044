"""The agent actor's bridge to the model: whatever the model client raises is that decision's
stored error, never a silent task death read later as a timeout."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.llm_bridge import LlmBridge
from actors.serve.llm_client import ServeDecisionClient
from sapphire.agents.llm_agent import LlmAgent
from sapphire.llm.prompt import SamplingConfig, cache_key
from sapphire.model.events import Quote
from sapphire.model.instrument import Instrument
from sapphire.model.orders import OrderIntent
from tests.actors.scripted_llm import ScriptedHandle, reply
from tests.ray_local import init_local, release_local

INST = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001")
T0 = 1_723_161_264_317_000_000
NS = 10**9


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


def _quote(t: int) -> Quote:
    return Quote(
        ts_event_ns=t, symbol="BTCUSDT", bid_ticks=618_000, ask_ticks=618_001, bid_lots=5,
        ask_lots=5,
    )  # fmt: skip


def _wait_for_answers(bridge: LlmBridge, n: int = 1, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with bridge._lock:
            if len(bridge._inbox) >= n:
                return
        time.sleep(0.02)
    raise AssertionError("the model's answer never reached the bridge")


def _scripted_bridge(handle: ScriptedHandle, timeout_s: float = 2.0) -> LlmBridge:
    bridge = LlmBridge("sapphire-llm", timeout_s=timeout_s)
    bridge._client = ServeDecisionClient(handle, timeout_s=timeout_s)
    return bridge


def _asked(bridge: LlmBridge, agent: LlmAgent) -> Any:
    agent.on_event(_quote(T0), T0)
    (request,) = agent.drain_requests()
    bridge.submit([request])
    return request


def _key(request: Any) -> str:
    return cache_key("scripted", request.prompt, SamplingConfig(), "")


def test_an_answer_used_in_time_is_stored_once_it_traded() -> None:
    bridge = _scripted_bridge(ScriptedHandle(reply()))
    agent = LlmAgent("llm", INST, {"decision_timeout_ns": 2 * NS, "max_order_lots": 2})
    request = _asked(bridge, agent)
    _wait_for_answers(bridge)
    assert bridge.collect(agent, "BTCUSDT", T0 + NS) == []  # handed over: its fate is open
    out = agent.on_event(_quote(T0 + 3 * NS // 2), T0 + 3 * NS // 2)
    assert [o.side.name for o in out if isinstance(o, OrderIntent)] == ["BUY"]
    (row,) = bridge.collect(agent, "BTCUSDT", T0 + 2 * NS)
    assert row.valid and not row.error and not row.fallback and row.action == "buy"
    assert row.ts_event_ns == request.ts_event_ns and row.agent_id == "llm"
    assert (row.prompt_tokens, row.completion_tokens, str(row.cost)) == (120, 48, "0.0005")
    assert row.prompt_hash == _key(request)  # the row names its prompt's cache key
    stats = bridge.stats()
    assert (stats["stored"], stats["in_time"], stats["stale"]) == (1, 1, 0)


def test_what_a_step_decided_is_stored_with_that_step() -> None:
    # the agent actor asks for the step's outcomes after the step: asked for at the next
    # step only, the decisions of a run's last step were never stored
    bridge = _scripted_bridge(ScriptedHandle(reply()))
    agent = LlmAgent("llm", INST, {"decision_timeout_ns": 2 * NS, "max_order_lots": 2})
    _asked(bridge, agent)
    _wait_for_answers(bridge)
    assert bridge.collect(agent, "BTCUSDT", T0 + NS) == []
    agent.on_event(_quote(T0 + 3 * NS // 2), T0 + 3 * NS // 2)  # the step: it trades on it
    (row,) = bridge.take_outcomes(agent, "BTCUSDT")
    assert row.valid and row.action == "buy"
    assert bridge.collect(agent, "BTCUSDT", T0 + 2 * NS) == []  # stored once
    assert bridge.stats()["stored"] == 1


def test_an_answer_dropped_stale_is_stored_as_not_used() -> None:
    # answered within the deadline, but the symbol's next event came after it: the agent
    # dropped the answer and nothing traded, while the row stored at hand-over said the
    # model bought (valid, no fallback, counted "in time")
    bridge = _scripted_bridge(ScriptedHandle(reply()))
    agent = LlmAgent("llm", INST, {"decision_timeout_ns": 2 * NS, "max_order_lots": 2})
    request = _asked(bridge, agent)
    _wait_for_answers(bridge)
    assert bridge.collect(agent, "BTCUSDT", T0 + NS) == []
    out = agent.on_event(_quote(T0 + 5 * NS), T0 + 5 * NS)  # a gap in the feed
    assert not [o for o in out if isinstance(o, OrderIntent)]
    assert agent.stats.stale == 1
    (row,) = bridge.collect(agent, "BTCUSDT", T0 + 6 * NS)
    assert not row.valid and row.error.startswith("stale: ") and row.fallback == ""
    assert row.action == "buy"  # what the model said, never traded
    assert row.prompt_tokens == 120 and row.prompt_hash == _key(request)  # its call, once
    assert row.ts_event_ns == request.ts_event_ns
    stats = bridge.stats()
    assert (stats["stored"], stats["in_time"], stats["stale"]) == (1, 0, 1)
    assert stats["fallbacks"] == 0 and stats["timeouts"] == 0
    # stored once: nothing more comes of it
    agent.on_event(_quote(T0 + 7 * NS), T0 + 7 * NS)
    assert bridge.collect(agent, "BTCUSDT", T0 + 8 * NS) == []


def test_a_stale_answer_survives_the_agents_snapshot() -> None:
    # what the row will say rides in the agent's state: a restored agent (a checkpoint
    # between hand-over and the next event) still stores it, once
    bridge = _scripted_bridge(ScriptedHandle(reply()))
    agent = LlmAgent("llm", INST, {"decision_timeout_ns": 2 * NS})
    _asked(bridge, agent)
    _wait_for_answers(bridge)
    assert bridge.collect(agent, "BTCUSDT", T0 + NS) == []
    restored = LlmAgent("llm", INST, {"decision_timeout_ns": 2 * NS})
    restored.restore(agent.snapshot())
    restored.on_event(_quote(T0 + 5 * NS), T0 + 5 * NS)
    (row,) = bridge.collect(restored, "BTCUSDT", T0 + 6 * NS)
    assert row.error.startswith("stale: ") and row.prompt_tokens == 120


def test_a_late_wall_clock_timeout_is_one_late_row_not_a_second_timeout() -> None:
    # the agent timed the request out in event time (one timeout row); the client's own
    # wall-clock timeout answer came after, and was stored as a second "timeout" row
    bridge = _scripted_bridge(ScriptedHandle(reply(), delay_s=5.0), timeout_s=1.0)
    asyncio.run(bridge._client._model_identity())  # the model's identity known: keys too
    agent = LlmAgent("llm", INST, {"decision_timeout_ns": 2 * NS, "decision_interval_ns": 60 * NS})
    request = _asked(bridge, agent)
    agent.on_event(_quote(T0 + 3 * NS), T0 + 3 * NS)  # past the deadline: the fallback
    (timeout,) = bridge.collect(agent, "BTCUSDT", T0 + 3 * NS)
    assert timeout.error.startswith("timeout: no answer within decision_timeout_ns")
    assert timeout.fallback == "hold" and timeout.prompt_hash == _key(request)
    _wait_for_answers(bridge)
    (late,) = bridge.collect(agent, "BTCUSDT", T0 + 4 * NS)
    assert late.error.startswith("late: ")
    assert "(timeout: no answer from the model within 1 s)" in late.error  # its own cause
    assert not late.valid and late.fallback == "" and late.prompt_hash == _key(request)
    stats = bridge.stats()
    assert (stats["stored"], stats["timeouts"], stats["late"], stats["in_time"]) == (2, 1, 1, 0)


# -- on a Ray cluster without Serve ------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_no_serve() -> Iterator[None]:
    init_local(num_cpus=2, include_dashboard=False, namespace="sapphire-llm-bridge")
    yield
    release_local()


@pytest.mark.slow
def test_a_client_that_cannot_be_built_stores_its_cause(ray_no_serve: None) -> None:
    # the client was built outside the try: "no Serve instance running" died in a future
    # nobody read, the request was never answered, and stored later as a timeout
    bridge = LlmBridge("sapphire-llm-absent", timeout_s=1.0)
    agent = LlmAgent("llm", INST, {"decision_timeout_ns": 8 * NS, "fallback": "momentum"})
    _asked(bridge, agent)
    _wait_for_answers(bridge)
    (row,) = bridge.collect(agent, "BTCUSDT", T0 + NS)
    assert not row.valid and row.fallback == "momentum"
    assert row.error.startswith("error: RayServeException: ")
    assert "Serve" in row.error and "\n" not in row.error  # one line
    stats = bridge.stats()
    assert stats["errors"] == 1 and stats["timeouts"] == 0
    # the next request tries again, and says so again
    agent.on_event(_quote(T0 + 9 * NS), T0 + 9 * NS)
    bridge.submit(agent.drain_requests())
    _wait_for_answers(bridge)
    (again,) = bridge.collect(agent, "BTCUSDT", T0 + 10 * NS)
    assert again.error == row.error and bridge.stats()["errors"] == 2


@pytest.mark.slow
def test_an_llm_agent_named_by_its_factory_path_gets_its_bridge_on_ray(
    ray_no_serve: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # found by kind == "llm" only: named by its factory path it ran with no Serve app and no
    # bridge, every decision a silent fallback, no decision stored, the summary's llm empty
    import actors.system as system
    from sapphire.storage.query import read_table
    from tests.actors.harness import make_config

    apps: list[str] = []

    def absent_app(config: Any, **_: Any) -> tuple[str, float]:
        # the model is not what this is about: an app name with no Serve behind it, so
        # every decision is stored with that cause
        apps.append("sapphire-llm-absent")
        return apps[-1], 1.0

    monkeypatch.setattr(system, "start_llm_service", absent_app)
    config = make_config(
        tmp_path,
        data={"source": "sample", "batch_events": 1000, "max_events": 4000},
        agents=[
            {
                "id": "llm",
                "kind": "sapphire.agents.llm:build_llm_agent",
                "symbol": "BTCUSDT",
                "num_cpus": 0.1,
                "params": {"decision_interval_ns": NS, "decision_timeout_ns": 10 * NS},
            }
        ],
        redis={"cache_prefix": f"test:llm-bridge:{uuid.uuid4().hex[:12]}:"},
    )
    handles = system.start_system(config, "llm-by-path")
    try:
        step = 0
        while not ray.get(handles.coordinator.run_step.remote(step), timeout=180).done:
            # a replay outruns the answers (they come on the wall clock): the first steps
            # wait for theirs
            time.sleep(0.3 * (step < 20))
            step += 1
        summary = system.finish(handles, step + 1, 0.0).summary
    finally:
        system.shutdown_system(handles)
    assert apps == ["sapphire-llm-absent"]  # the run deployed (here: named) its app
    llm = summary["llm"]["llm"]
    assert llm["stored"] > 0 and llm["errors"] > 0
    store = handles.storage_root / "store"
    rows = read_table(store, "llm_decisions", handles.run_id).collect()
    assert rows.height == llm["stored"]
    assert not rows["valid"].any()
    errors = rows["error"].to_list()
    assert any(e.startswith("error: RayServeException") for e in errors)
    # past the paced steps an answer may come after its deadline in event time: the
    # timeout's row, and the answer's, late, with its cause
    for e in errors:
        assert e.startswith(("error: RayServeException", "timeout: ", "late: ")), e
        assert not e.startswith("late: ") or "(error: RayServeException" in e, e


def test_a_run_that_ends_first_stores_its_unresolved_decisions() -> None:
    """An answer taken in time that no event acted on before the run's end, and a request
    still in flight there, were in no table: the run's last rows say what became of them,
    once however often the end is asked."""
    bridge = _scripted_bridge(ScriptedHandle(reply()))
    agent = LlmAgent("llm", INST, {"decision_timeout_ns": 2 * NS, "max_order_lots": 2})
    request = _asked(bridge, agent)
    _wait_for_answers(bridge)
    assert bridge.collect(agent, "BTCUSDT", T0 + NS) == []  # handed over; the run ends
    (row,) = bridge.end_records(agent, "BTCUSDT")
    assert not row.valid and row.error.startswith("unused: answered in time")
    assert row.action == "buy" and row.prompt_tokens == 120  # the model's call, metered
    assert row.ts_event_ns == request.ts_event_ns and row.prompt_hash == _key(request)
    assert bridge.end_records(agent, "BTCUSDT") == [row]  # asked again: the same row
    stats = bridge.stats()
    assert (stats["stored"], stats["unused"], stats["in_time"]) == (1, 1, 0)

    # a request the run ended on, no answer handed over
    asking = LlmAgent("llm2", INST, {"decision_timeout_ns": 2 * NS})
    asking.on_event(_quote(T0), T0)
    (pending,) = asking.drain_requests()
    other = LlmBridge("sapphire-llm", timeout_s=1.0)
    other._prompts[pending.request_id] = pending.prompt
    (row,) = other.end_records(asking, "BTCUSDT")
    assert row.error == "unused: the run ended with the request unanswered"
    assert row.action == "hold" and not row.valid and row.fallback == ""
    assert row.ts_event_ns == pending.ts_event_ns and row.agent_id == "llm2"
