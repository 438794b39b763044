"""LLM agents inside the running system, on a 2-CPU cluster: the decision replica is sized to
what is free, the real 4-bit model answers through Serve while ticks go on, and every
decision is stored with its metering, its point-in-time flag and, when the model's answer was
not used, the reason and the fallback that decided. The same figures reach Prometheus and
the run's cost table. One run checks all of it (the suite's time budget)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from actors import cost, metrics, metrics_export
from actors.system import finish, shutdown_system, start_system
from sapphire.config.ops import MetricsConfig
from sapphire.storage.query import read_table
from tests.actors.harness import make_config
from tests.actors.metrics_scrape import total, wait_for
from tests.ray_local import init_local

pytestmark = pytest.mark.slow
pytest.importorskip("llama_cpp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def ray_two_cpus() -> Iterator[list[str]]:
    from ray._private import ray_constants

    if ray.is_initialized():
        ray.shutdown()
    saved_env = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    options = metrics_export.ray_init_options(
        MetricsConfig(export_port=_free_port(), report_interval_ms=500)
    )
    init_local(num_cpus=2, namespace="sapphire-llm", **options)
    try:
        yield metrics_export.scrape_targets()
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved_env


def _wait_for_answer(agent: object, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        llm = ray.get(agent.stats.remote())["llm"]  # type: ignore[attr-defined]
        if llm.get("ok", 0) + llm.get("cache_hits", 0) > 0:
            return
        time.sleep(0.5)
    raise AssertionError("no answer from the LLM deployment")


def test_llm_decisions_are_sized_metered_flagged_and_stored(
    ray_two_cpus: list[str], tmp_path: Path
) -> None:
    llm_agent = {
        "kind": "llm",
        "symbol": "BTCUSDT",
        "num_cpus": 0.1,
        "params": {"decision_interval_ns": 5_000_000_000, "max_order_lots": 2},
    }
    config = make_config(
        tmp_path,
        data={"source": "sample", "batch_events": 2000, "max_events": 6_000},
        agents=[
            # waits for its first answer (120 s of event time): a real, metered decision
            {
                **llm_agent,
                "id": "llm",
                "params": {**llm_agent["params"]} | {"decision_timeout_ns": 120_000_000_000},
            },
            # the same agent twice: its questions are llm's while their positions agree, and
            # a lease in Redis makes the two actors share one model call for each
            {
                **llm_agent,
                "id": "llm_twin",
                "params": {**llm_agent["params"]} | {"decision_timeout_ns": 120_000_000_000},
            },
            # 1 ns of event time: every answer is late, the fallback decides, and says so
            {
                **llm_agent,
                "id": "llm_fast",
                "params": {**llm_agent["params"]}
                # its own prompts (max_position_lots is in them), not the other's cache hits
                | {"decision_timeout_ns": 1, "fallback": "momentum", "max_position_lots": 4},
            },
        ],
        llm={
            "engine": {
                "kind": "llamacpp",
                "n_threads": 1,
                "max_parallel": 4,
                "sampling": {"max_tokens": 64},
            },
            # a 0.7-CPU replica on 2 cores the rest of the suite also loads: a first answer
            # can take longer than the default 10 s, and then llm would not ask again until
            # its next decision, which the replay paused below never reaches
            "request_timeout_s": 60.0,
        },
        ray={"agent_timeout_s": 60.0},
        # a fresh L2 prefix: Redis outlives test runs, and a decision cached by an earlier
        # run would answer this one's prompts without the model
        # (2 s socket timeout: on 2 loaded cores a 50 ms one marks Redis down mid-wait, and
        # the twins then each ask the model, as they should without a shared level)
        redis={
            "cache_prefix": f"test:llm-system:{uuid.uuid4().hex[:12]}:",
            "socket_timeout_s": 2.0,
        },
    )
    handles = start_system(config, "llm-run")
    try:
        # sized to the 2-CPU cluster: what was free less the agents and the coordinator
        from ray import serve

        dep = serve.status().applications["sapphire-llm"].deployments["LlmDecisionDeployment"]
        assert dep.status == "HEALTHY"
        # 2 - 0.75 (core actors) = 1.25 free at build, less 0.55 still to place (three
        # agents at 0.1, the coordinator's 0.25): 0.7 CPU, under the engine's 1-thread wish; before,
        # it asked for 1 and could hang
        (replica,) = cost.measure_actors(cost.serve_replicas(), 1.0)
        assert replica.cpus == pytest.approx(0.7)
        step = 0
        while True:
            progress = ray.get(handles.coordinator.run_step.remote(step), timeout=300)
            step += 1
            if step == 3:  # the replay outpaces the model: let the first answer arrive
                _wait_for_answer(handles.agents["llm"])
            if progress.done:
                break
        time.sleep(1.0)  # let late answers of llm_fast come back to be stored
        result = finish(handles, step, 0.0)
        report = cost.measure_system(handles, 10.0)
    finally:
        shutdown_system(handles)

    # the run summary flags decisions about events before the model's cutoff (2023 data)
    summary = result.summary["llm"]["llm"]
    assert summary["knowledge_cutoff"] == "2024-11-01" and summary["point_in_time"] == "warn"
    assert summary["before_cutoff"] > 0

    rows = read_table(tmp_path / "store", "llm_decisions", "llm-run").collect()
    assert rows.height == result.summary["rows"]["llm_decisions"]
    # the model's own answer went to whichever twin held the lease
    twins = rows["agent_id"].is_in(["llm", "llm_twin"])
    answered = rows.filter(twins & rows["valid"] & ~rows["cache_hit"]).row(0, named=True)
    assert answered["error"] == "" and answered["fallback"] == ""
    assert answered["model"] == "SmolLM2-135M-Instruct-Q4_1" and answered["before_cutoff"]
    assert answered["prompt_tokens"] > 50 and answered["completion_tokens"] > 5
    assert answered["batch_size"] >= 1 and answered["queue_wait_ns"] >= 0
    assert answered["latency_ns"] > 0 and answered["cpu_s"] > 0
    assert answered["cost"] > 0 and answered["cost_currency"] == "USD"
    # the twins' first question (both flat, same features): one model call between them,
    # the other actor answered from L2 while the first held the lease or after it stored
    first_ts = rows.filter(rows["agent_id"] == "llm")["ts_ns"].min()
    firsts = rows.filter(twins & (rows["ts_ns"] == first_ts))
    assert sorted(firsts["agent_id"]) == ["llm", "llm_twin"]
    assert sorted(firsts["cache_hit"]) == [False, True]
    assert len(set(firsts["action"])) == 1 and len(set(firsts["rationale"])) == 1
    # no answer in time: stored with the reason, and the fallback that decided is explicit
    fast = rows.filter(rows["agent_id"] == "llm_fast")
    timeouts = fast.filter(fast["error"].str.starts_with("timeout: no answer within"))
    assert timeouts.height > 0 and set(timeouts["fallback"]) == {"momentum"}
    assert not any(timeouts["valid"])

    # the replica's CPU time is a line of the run's cost table
    assert any(line.name.startswith("llm:") and line.cpu_s > 0 for line in report.lines)

    def exported(name: str) -> str:
        return metrics.exported_name(name)

    samples = wait_for(
        ray_two_cpus,
        lambda s: (
            total(s, exported(metrics.LLM_DECISIONS), outcome="ok") >= 1
            and total(s, exported(metrics.LLM_DECISIONS), outcome="timeout") >= 1
        ),
    )
    assert total(samples, exported(metrics.LLM_TOKENS), kind="prompt") > 50
    assert total(samples, exported(metrics.LLM_TOKENS), kind="completion") > 5
    assert total(samples, exported(metrics.LLM_QUEUE_WAIT) + "_count") >= 1
    assert total(samples, exported(metrics.LLM_BATCH) + "_count") >= 1
    assert total(samples, exported(metrics.LLM_COST), currency="USD") > 0
    assert total(samples, exported(metrics.LLM_BEFORE_CUTOFF)) >= 1
