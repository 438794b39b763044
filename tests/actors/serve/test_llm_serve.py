"""The CPU decision deployment on a real Ray cluster with the real 4-bit model."""

from __future__ import annotations

import asyncio
import time

import pytest

from sapphire.llm.decision import HOLD, LlmDecision
from sapphire.llm.prompt import MarketFeatures, build_prompt

pytestmark = pytest.mark.slow

APP = "sapphire-llm-test"
ENGINE = {"kind": "llamacpp", "n_threads": 1, "max_parallel": 8, "sampling": {"max_tokens": 48}}


def _prompts(n: int, offset: int = 0) -> list:  # type: ignore[type-arg]
    return [
        build_prompt(
            MarketFeatures(
                symbol="BTCUSDT",
                ts_event_ns=i,
                mid=28165.47 + 0.01 * (i + offset),
                spread_bps=0.0036,
                returns_bps=((10, 0.5 * i), (60, -0.25 * i)),
                volatility_bps=0.8,
                imbalance=(i % 5 - 2) / 2,
                position_lots=i % 3,
                max_position_lots=5,
            )
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def handle(ray_serve: None):  # type: ignore[no-untyped-def]
    from ray import serve

    from actors.serve.llm_app import build_app

    # strict: a request about an event before the model's cutoff is refused (calls that
    # name no event time, as most tests here, are not checked)
    args = {"engine": ENGINE, "batch_wait_timeout_s": 0.05, "point_in_time": "strict"}
    h = serve.run(build_app(args), name=APP, route_prefix=None)
    yield h
    serve.delete(APP)


def test_real_generation_through_serve_is_batched_and_valid(handle) -> None:  # type: ignore[no-untyped-def]
    import msgspec

    async def go() -> list[dict[str, object]]:
        responses = [handle.remote(msgspec.to_builtins(p)) for p in _prompts(8)]
        return list(await asyncio.gather(*responses))

    replies = asyncio.run(go())
    assert len(replies) == 8 and all(r["error"] == "" for r in replies)
    assert max(int(r["batch_size"]) for r in replies) >= 2  # @serve.batch formed batches
    assert all(int(r["completion_tokens"]) > 0 for r in replies)
    described = handle.describe.remote().result()
    assert described["model"] == "SmolLM2-135M-Instruct-Q4_1"
    # the client's cache key carries every engine setting that changes an answer
    from sapphire.llm.engines import engine_config_from_dict, engine_fingerprint

    assert described["engine"] == engine_fingerprint(engine_config_from_dict(dict(ENGINE)))


def test_client_validates_counts_and_caches(handle) -> None:  # type: ignore[no-untyped-def]
    from actors.serve.llm_client import ServeDecisionClient

    client = ServeDecisionClient(handle, timeout_s=60.0)
    prompts = _prompts(4, offset=100)

    async def go() -> tuple[list[LlmDecision], list[LlmDecision]]:
        first = await client.decide_many(prompts)
        again = await client.decide_many(prompts)
        return first, again

    first, again = asyncio.run(go())
    s = client.stats
    assert s.ok + s.malformed_json + s.schema_violation == 4
    assert s.ok >= 3  # grammar-constrained: JSON unless max_tokens cut it
    assert all(d.action in ("buy", "sell", "hold") for d in first)
    assert s.cache_hits == s.ok  # valid answers are served from L1 the second time
    assert [d for d in again] == first


def test_a_real_decision_is_metered_and_one_before_the_cutoff_refused(handle) -> None:  # type: ignore[no-untyped-def]
    from actors.serve.llm_client import ServeDecisionClient

    client = ServeDecisionClient(handle, timeout_s=60.0)
    prompt = _prompts(1, offset=700)[0]
    april_2023, june_2026 = 1_680_652_800 * 10**9, 1_780_000_000 * 10**9
    refused = asyncio.run(client.decide_detailed(prompt, april_2023))
    assert refused.error.startswith("point_in_time: event at 2023-04-05")
    assert "cutoff 2024-11-01 (llm.point_in_time=strict)" in refused.error
    assert refused.before_cutoff and refused.decision == HOLD
    assert client.stats.refused == 1 and client.stats.ok + client.stats.errors == 0  # not asked
    answer = asyncio.run(client.decide_detailed(prompt, june_2026))
    assert answer.valid and not answer.before_cutoff and not answer.cache_hit
    assert answer.prompt_tokens > 50 and answer.completion_tokens > 5
    assert answer.batch_size >= 1 and answer.queue_wait_ns >= 0
    assert answer.cpu_s > 0 and answer.latency_ns > 0
    assert answer.cost > 0 and answer.cost_currency == "USD"  # ops/prices.yaml, on_prem
    again = asyncio.run(client.decide_detailed(prompt, june_2026))
    assert again.cache_hit and again.cost == 0 and again.decision == answer.decision


def test_client_timeout_returns_hold_and_counts(handle) -> None:  # type: ignore[no-untyped-def]
    from actors.serve.llm_client import ServeDecisionClient

    client = ServeDecisionClient(handle, timeout_s=60.0)
    asyncio.run(client._model_identity())
    client.timeout_s = 0.001
    decision = asyncio.run(client.decide(_prompts(1, offset=500)[0]))
    assert decision == HOLD and client.stats.timeouts == 1 and client.stats.ok == 0


def test_bad_request_is_answered_with_an_error_not_a_crash(handle) -> None:  # type: ignore[no-untyped-def]
    reply = handle.remote({"system": "s", "user": 5, "x": 1}).result()
    assert reply["text"] == "" and reply["error"].startswith("bad request")
    reply = handle.remote({"system": "s", "user": "u" * 5000}).result()
    assert "longer than" in reply["error"]
    ok = handle.remote({"system": "Answer in JSON.", "user": "market BTCUSDT"}).result()
    assert ok["error"] == ""


def test_autoscaling_adds_replicas_under_load_and_removes_them_after(ray_serve: None) -> None:
    import msgspec
    from ray import serve

    from actors.serve.llm_app import build_app

    app, dep = "sapphire-llm-autoscale", "LlmDecisionDeployment"
    args = {
        "engine": {**ENGINE, "sampling": {"max_tokens": 16}},
        "ray_actor_options": {"num_cpus": 0.5},
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 2,
            "metrics_interval_s": 0.5,
            "look_back_period_s": 2.0,
            "upscale_delay_s": 1.0,
            "downscale_delay_s": 3.0,
        },
    }
    handle = serve.run(build_app(args), name=app, route_prefix=None)

    def running() -> int:
        status = serve.status().applications[app].deployments[dep]
        return int(status.replica_states.get("RUNNING", 0))

    prompts = [msgspec.to_builtins(p) for p in _prompts(16, offset=1000)]

    async def load_until_scaled() -> int:
        stop = asyncio.Event()

        async def worker(prompt: dict[str, object]) -> None:
            while not stop.is_set():
                await handle.remote(prompt)

        workers = [asyncio.create_task(worker(p)) for p in prompts]
        peak, t_end = running(), time.monotonic() + 60
        while peak < 2 and time.monotonic() < t_end:
            await asyncio.sleep(0.5)
            peak = max(peak, await asyncio.to_thread(running))
        stop.set()
        await asyncio.gather(*workers)
        return peak

    assert running() == 1
    assert asyncio.run(load_until_scaled()) == 2
    t_end = time.monotonic() + 45
    while running() > 1 and time.monotonic() < t_end:
        time.sleep(0.5)
    assert running() == 1
    serve.delete(app)


def test_agent_requests_answered_by_the_deployment_reach_the_agent(handle, shared_data) -> None:  # type: ignore[no-untyped-def]
    from actors.serve.llm_client import ServeDecisionClient, answer_requests
    from sapphire.agents.llm_agent import LlmAgent
    from tests.agents.test_llm_agent import BTC, _quotes

    quotes = _quotes(shared_data / "book" / "hftbacktest_binance-spot_BTCUSDT_bbo.csv.gz", 600)
    agent = LlmAgent("llm-serve", BTC, {"decision_interval_ns": 1, "decision_timeout_ns": 10**12})
    client = ServeDecisionClient(handle, timeout_s=60.0)
    answered = 0
    for q in quotes[:3]:
        agent.on_event(q, q.ts_event_ns)
        requests = agent.drain_requests()
        for request_id, decision in asyncio.run(answer_requests(client, requests)):
            agent.on_decision(request_id, decision, q.ts_event_ns)
            answered += 1
    assert answered == 3
    assert agent.stats.ok == 3 and agent.stats.timeouts == 0
    s = client.stats
    # equal features give equal prompts: repeats are answered from the L1 cache
    assert s.ok + s.malformed_json + s.schema_violation + s.cache_hits == 3


def test_identical_prompts_are_answered_once_across_clients_through_redis(handle) -> None:  # type: ignore[no-untyped-def]
    """Two clients, as two agent actors (or one actor before and after a restart), share the
    real Redis as L2: the second gets the first's decision without a model call."""
    import uuid

    from actors.llm_bridge import REDIS_TIMEOUT_S
    from actors.serve.llm_client import ServeDecisionClient
    from sapphire.adapters.redis_cache import RedisCache
    from sapphire.llm.prompt import MarketFeatures, build_prompt

    prefix = f"sapphire-test:llm:{uuid.uuid4().hex}:"
    prompt = build_prompt(
        MarketFeatures(
            symbol="BTCUSDT",
            ts_event_ns=1,
            mid=60_000.0,
            spread_bps=0.2,
            returns_bps=((10, 1.5), (60, -3.0)),
            volatility_bps=4.0,
            imbalance=0.1,
            position_lots=0,
            max_position_lots=5,
            pnl_quote=0.0,
        )
    )

    # the LLM bridge's Redis timeout, not the hot path's 50 ms: a CI run at load 8 timed a
    # read out, and the second client asked the model instead
    def l2() -> RedisCache:
        return RedisCache(prefix=prefix, socket_timeout_s=REDIS_TIMEOUT_S)

    first = ServeDecisionClient(handle, timeout_s=60.0, redis=l2())
    second = ServeDecisionClient(handle, timeout_s=60.0, redis=l2())
    try:
        answer = asyncio.run(first.decide(prompt))
        assert first.stats.ok == 1 and first.stats.cache_hits == 0
        again = asyncio.run(second.decide(prompt))
        assert again == answer
        assert second.stats.cache_hits == 1
        assert second.stats.ok + second.stats.malformed_json + second.stats.timeouts == 0
        assert second.tiers.stats["l2"].hits == 1
    finally:
        RedisCache(prefix=prefix).clear_prefix()
