"""An LLM agent inside the running system: it asks the real 4-bit model on Ray Serve through
a DeploymentHandle, keeps trading ticks meanwhile, and every decision is stored."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from actors.system import finish, shutdown_system, start_system
from sapphire.storage.query import read_table
from tests.actors.harness import make_config

pytestmark = pytest.mark.slow
pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def ray_serve() -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="sapphire-llm")
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def _wait_for_answer(agent: object, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        llm = ray.get(agent.stats.remote())["llm"]  # type: ignore[attr-defined]
        if sum(llm.values()) > 0:
            return
        time.sleep(0.5)
    raise AssertionError("no answer from the LLM deployment")


def test_llm_agent_decisions_flow_through_serve_and_are_stored(
    ray_serve: None, tmp_path: Path
) -> None:
    config = make_config(
        tmp_path,
        data={"source": "sample", "batch_events": 2000, "max_events": 60_000},
        agents=[
            {
                "id": "llm",
                "kind": "llm",
                "symbol": "BTCUSDT",
                "params": {
                    "decision_interval_ns": 5_000_000_000,
                    "decision_timeout_ns": 120_000_000_000,
                    "max_order_lots": 2,
                },
            },
        ],
        llm={"engine": {"kind": "llamacpp", "n_threads": 1, "max_parallel": 4}},
        ray={"agent_timeout_s": 60.0},
    )
    handles = start_system(config, "llm-run")
    try:
        step = 0
        while True:
            progress = ray.get(handles.coordinator.run_step.remote(step), timeout=300)
            step += 1
            if step == 5:
                # the replay outpaces the model: let the first answer arrive (the agent keeps
                # its request open, its deadline is in event time), then replay on
                _wait_for_answer(handles.agents["llm"])
            if progress.done:
                break
        stats = ray.get(handles.agents["llm"].stats.remote())
        result = finish(handles, step, 0.0)
        llm_rows = result.summary["rows"].get("llm_decisions", 0)
    finally:
        shutdown_system(handles)
    assert stats["llm"]["ok"] + stats["llm"]["cache_hits"] > 0, stats
    assert llm_rows > 0
    stored = read_table(tmp_path / "store", "llm_decisions", "llm-run").collect()
    assert stored.height == llm_rows
    assert set(stored["action"]) <= {"buy", "sell", "hold"}
