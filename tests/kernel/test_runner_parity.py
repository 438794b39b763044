"""The same config through ``sapphire backtest`` (one process) and ``sapphire run`` (Ray
actors: agents, coordinator, execution and sink apart) trades identically and stores
identical tables, but for the run id."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest
import ray
import yaml

from actors.system import RunResult, finish, shutdown_system, start_system
from sapphire.kernel.runner import InProcessKernel
from sapphire.storage.query import read_table
from tests.actors.harness import TABLES, drive_to_end
from tests.kernel.conftest import LATENCY, kernel_config
from tests.kernel.probes import ProbeAgent
from tests.ray_local import init_local, release_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=4, include_dashboard=False, namespace="sapphire-parity")
    yield
    release_local()


def on_ray(config: Any, run_id: str) -> tuple[RunResult, Any]:
    """The Ray system to the end: its result and the venue's own record."""
    handles = start_system(config, run_id)
    try:
        steps = drive_to_end(handles)
        result = finish(handles, steps, 0.0)
        venue = pickle.loads(ray.get(handles.execution.exchange_record.remote()))
    finally:
        shutdown_system(handles)
    return result, venue


def stored(root: Path, run_id: str) -> dict[str, pl.DataFrame]:
    return {
        t: read_table(root / "store", t, run_id).drop("run_id", "date").collect().sort("seq")
        for t in TABLES
    }


def test_backtest_and_run_trade_and_store_the_same(ray_local: None, tmp_path: Path) -> None:
    config = kernel_config(tmp_path, data={"max_events": 15_000})
    config_file = tmp_path / "demo.yaml"

    config_file.write_text(yaml.safe_dump(msgspec.to_builtins(config)))
    # the in-process runner, through the product's command
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sapphire.cli",
            "backtest",
            "--config",
            str(config_file),
            "--run-id",
            "in-process",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result, venue = on_ray(config, "on-ray")
    kernel = InProcessKernel(config, "again")
    kernel.run()
    want: Any = kernel.venue.gateway
    assert list(venue.fills) == list(want.fills)
    assert [o.client_order_id for o in venue.orders()] == [o.client_order_id for o in want.orders()]
    summary = kernel.summary()
    assert result.summary["agents"] == summary["agents"]
    assert result.summary["fills"] == summary["fills"] > 0
    assert result.summary["orders_by_status"] == summary["orders_by_status"]
    assert result.summary["risk_rejections"] == summary["risk_rejections"]
    # opposing agents crossed in the firm, the same on Ray
    assert result.summary["crossing"] == summary["crossing"]
    assert summary["crossing"]["crosses"] > 0
    in_process, ray_rows = stored(tmp_path, "in-process"), stored(tmp_path, "on-ray")
    for table in TABLES:
        assert ray_rows[table].height > 0 or table == "positions", table
        assert ray_rows[table].equals(in_process[table]), f"stored {table} differ"


@pytest.mark.parametrize(
    ("params", "latency"),
    [
        ({"qty_lots": 21}, LATENCY),  # oversized: denied for its size
        ({"qty_lots": 5}, {**LATENCY, "feed_ns": 50_000_000}),  # a slower feed
    ],
)
def test_risk_and_timing_are_the_same_on_ray(
    ray_local: None, tmp_path: Path, params: dict[str, Any], latency: dict[str, int]
) -> None:
    config = kernel_config(
        tmp_path,
        agents=[
            {
                "id": "probe",
                "kind": "tests.kernel.probes:ProbeAgent",
                "symbol": "BTCUSDT",
                "params": params,
            }
        ],
        data={"max_events": 8_000},
        exchange={"params": {"balances": {"USDT": "100000", "BTC": "0"}, "latency": latency}},
    )
    kernel = InProcessKernel(config, "probe-local")
    kernel.run()
    local: Any = kernel.agents.agents["probe"]
    handles = start_system(config, f"probe-{params['qty_lots']}")
    try:
        steps = drive_to_end(handles)
        result = finish(handles, steps, 0.0)
        remote = ProbeAgent("probe", kernel.instruments["BTCUSDT"], {})
        remote.restore(ray.get(handles.agents["probe"].agent_state.remote()))
    finally:
        shutdown_system(handles)
    assert remote.log == local.log  # every input, at the same time
    assert result.summary["risk_rejections"] == kernel.summary()["risk_rejections"]
    if params["qty_lots"] > 20:
        assert result.summary["risk_rejections"] == {"risk_order_size": 1}
        assert any(kind.startswith("OrderDenied") for kind, _, _ in remote.log)
    else:
        first = next((ts, now) for kind, ts, now in remote.log if kind == "Quote")
        assert first[1] - first[0] == 50_000_000


def test_the_venue_book_is_the_same_on_ray(ray_local: None, tmp_path: Path) -> None:
    from tests.kernel.test_book_sync import RECORDINGS, checked_config

    files, instrument, _ = RECORDINGS["sample"]
    config = checked_config(files, instrument, max_events=20_000)
    config = msgspec.structs.replace(
        config, storage=msgspec.structs.replace(config.storage, root=str(tmp_path))
    )
    _, venue = on_ray(config, "book-on-ray")
    kernel = InProcessKernel(config, "book-local")
    kernel.run()
    local: Any = kernel.venue.gateway
    assert venue.book("BTCUSDT").is_synced
    counts = ("quotes", "matched", "unsynced", "crossed", "comparable", "comparable_matched")
    assert {c: getattr(venue, c) for c in counts} == {c: getattr(local, c) for c in counts}
    assert venue.comparable_matched == venue.comparable > 0


def test_invalid_agent_outputs_are_refused_counted_and_never_stored(
    ray_local: None, tmp_path: Path
) -> None:
    config = kernel_config(
        tmp_path,
        agents=[{"id": "bad", "kind": "tests.kernel.probes:BadOutputsAgent", "symbol": "BTCUSDT"}],
        data={"max_events": 6_000},
    )
    kernel = InProcessKernel(config, "bad-local")
    kernel.run()
    local = kernel.summary()
    assert "seq" in local["invalid_outputs"]["bad"]  # the last reason: the repeat
    refused = kernel.agents.state.invalid["bad"]
    assert refused > 0 and refused % 6 == 0  # six bad outputs each time
    result, _ = on_ray(config, "bad-on-ray")
    assert result.unacked_rows == 0, "every row reached the store"
    assert result.summary["invalid_outputs"]["bad"].startswith(f"{refused} refused")
    intents = read_table(tmp_path / "store", "intents", "bad-on-ray").collect()
    assert intents.height == refused // 6  # only the sane order of each burst, once
    assert set(intents["agent_id"]) == {"bad"}
    assert intents["symbol"].unique().to_list() == ["BTCUSDT"]


def test_outputs_that_are_no_sequence_are_refused_the_same_in_both_runners(
    ray_local: None, tmp_path: Path
) -> None:
    """``return intent`` (no list) ended ``sapphire backtest`` with a traceback and nothing
    stored, while ``sapphire run`` retried the step and quarantined the agent: now one
    refused output in both; a generator's outputs are taken, one that raises is the
    agent's error (its input skipped), as a raise in the call is."""
    config = kernel_config(
        tmp_path,
        agents=[
            {"id": "odd", "kind": "tests.kernel.probes:ShapelessOutputsAgent", "symbol": "BTCUSDT"}
        ],
        data={"max_events": 6_000},
    )
    kernel = InProcessKernel(config, "odd-local")
    kernel.run()
    st = kernel.agents.state
    returned: list[int] = kernel.agents.agents["odd"].returned  # type: ignore[attr-defined]
    bare, gen, broken, number, mapping = (returned.count(k) for k in range(5))
    assert min(bare, gen, broken, number, mapping) > 0
    assert st.invalid["odd"] == bare + number + mapping
    assert st.errors["odd"] == broken
    local = kernel.summary()
    assert "not a sequence of outputs" in local["invalid_outputs"]["odd"]
    result, _ = on_ray(config, "odd-on-ray")
    assert result.summary["invalid_outputs"]["odd"] == local["invalid_outputs"]["odd"]
    assert result.summary["agent_errors"] == local["agent_errors"]
    intents = read_table(tmp_path / "store", "intents", "odd-on-ray").collect()
    assert intents.height == gen  # the one generator's intent each time it came


def test_a_paced_replay_trades_the_same_and_keeps_event_time_near_the_pace(
    ray_local: None, tmp_path: Path
) -> None:
    """``data.speed`` > 0 on Ray: the coordinator buffers only past each window's end, not
    ``batch_events`` ahead (at speed 1 that made event time run in 15 s leaps, and LLM answers
    came late in event time); the run still trades as one process does."""
    config = kernel_config(tmp_path, data={"max_events": 12_000, "speed": 20.0})
    kernel = InProcessKernel(config, "paced-local")
    kernel.run()
    handles = start_system(config, "paced-ray")
    try:
        steps = drive_to_end(handles)
        result = finish(handles, steps, 0.0)
        venue = pickle.loads(ray.get(handles.execution.exchange_record.remote()))
        feed = ray.get(handles.coordinator.feed_stats.remote())
    finally:
        shutdown_system(handles)
    want: Any = kernel.venue.gateway
    assert list(venue.fills) == list(want.fills)
    assert result.summary["fills"] == kernel.summary()["fills"] > 0
    # never a whole batch_events (20,000) buffered ahead of the cutter: a few chunks at most
    assert 0 < feed["max_buffered"] <= 4 * 256, feed
