"""The actor system end to end: kill switch, bad input contained, summary and storage."""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import ray

from actors.system import SystemHandles
from sapphire.data import sample
from sapphire.kernel.runner import InProcessKernel
from sapphire.model.orders import OrderStatus
from tests.actors.harness import make_config, run
from tests.ray_local import init_local, release_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=4, include_dashboard=False, namespace="sapphire-system")
    yield
    release_local()


def assert_halted_after_trip(outcome: Any, orders_before: set[str]) -> None:
    """Orders decided before the switch tripped may still reach the venue (they left before
    it); none decided after it. Checked on the venue's own record and the stored decisions."""
    venue_orders = {o.client_order_id for o in outcome.venue.orders()}
    assert orders_before, "the run must have traded before the trip"
    assert orders_before <= venue_orders
    decisions = outcome.rows["risk_decisions"].sort("seq")
    blocked = decisions.filter(pl.col("reason") == "risk_kill_switch")
    assert blocked.height > 0, "agents kept asking; every later intent must be refused"
    first_block = blocked["ts_ns"].min()
    later = decisions.filter(pl.col("ts_ns") >= first_block)
    assert not later["accepted"].any(), "an intent was accepted after the trip"
    accepted = set(decisions.filter(pl.col("accepted"))["client_order_id"])
    assert venue_orders <= accepted, "the venue got an order risk never accepted"
    assert outcome.venue.open_orders() == []
    assert outcome.summary["kill_switch"] is True


def test_kill_switch_stops_all_order_flow_and_cancels_resting_orders(
    ray_local: None, tmp_path: Path
) -> None:
    at_trip: dict[str, Any] = {}

    def trip(handles: SystemHandles, step: int) -> None:
        if step == 8:
            venue = pickle.loads(ray.get(handles.execution.exchange_record.remote()))
            at_trip["orders"] = {o.client_order_id for o in venue.orders()}
            ray.get(handles.coordinator.trip_kill_switch.remote("test: operator"))

    outcome = run(make_config(tmp_path), "kill-switch", before_step=trip)
    assert_halted_after_trip(outcome, at_trip["orders"])


# the compiled graph in `./dev full` only (CI time): its round fails and quarantines as the
# sockets' does (``_quarantine_unfinished``); plain calls time out on a path of their own
@pytest.mark.parametrize(
    "transport", ["calls", pytest.param("compiled", marks=pytest.mark.full), "sockets"]
)
def test_bad_agents_and_a_failing_venue_are_contained(
    ray_local: None, tmp_path: Path, transport: str
) -> None:
    config = make_config(
        tmp_path,
        agents=[
            {
                "id": "mm",
                "kind": "avellaneda_stoikov",
                "symbol": "BTCUSDT",
                "params": {"order_amount": 0.002, "max_inventory": 0.02, "order_refresh_time": 0.5},
            },
            {"id": "raiser", "kind": "tests.actors.faulty:RaisingAgent", "symbol": "BTCUSDT"},
            {"id": "hanger", "kind": "tests.actors.faulty:HangingAgent", "symbol": "BTCUSDT"},
        ],
        exchange={
            "factory": "tests.actors.faulty:flaky_exchange",
            "params": {"balances": {"USDT": "100000", "BTC": "0"}},
        },
        ray={"agent_timeout_s": 3.0, "transport": transport},
        # a third of the harness replay: the faults all show in its first steps
        data={"source": "sample", "batch_events": 1000, "max_events": 8_000},
    )
    outcome = run(config, f"bad-input-{transport}")
    summary = outcome.summary
    assert "hanger" in summary["quarantined"]
    assert "raiser" not in summary["quarantined"]  # errors are counted, the agent lives on
    assert summary["agent_errors"]["raiser"] > 0  # and shown: the summary had no count
    # the quarantine is stored with its reason, as a refused decision of that agent
    stored = outcome.rows["risk_decisions"].filter(pl.col("reason") == "risk_agent_quarantined")
    assert stored["agent_id"].to_list() == ["hanger"]
    assert "timed out" in stored["detail"][0]
    assert summary["fills"] > 0, "the healthy agent must keep trading"
    orders = outcome.rows["orders"]
    venue_errors = orders.filter(pl.col("reason") == "exchange_error")
    assert venue_errors.height > 0
    assert set(venue_errors["status"]) == {str(OrderStatus.REJECTED)}


def test_malformed_market_data_is_rejected_and_counted_not_fatal(
    ray_local: None, tmp_path: Path
) -> None:
    paths = sample.sample_paths()
    corrupted = tmp_path / paths.trades.name
    lines = gzip.decompress(paths.trades.read_bytes()).decode().splitlines()
    header, body = lines[0], lines[1:]
    bad = [body[0].replace(body[0].split(",")[5], "nan", 1), "garbage,,,", body[3]]
    corrupted.write_bytes(
        gzip.compress("\n".join([header, *body[:200], *bad, *body[200:]]).encode())
    )
    config = make_config(
        tmp_path,
        data={
            "source": "files",
            "files": [str(paths.depth), str(corrupted), str(paths.bbo)],
            "instrument_files": [str(paths.instrument)],
            "batch_events": 1000,
            "max_events": 12_000,
        },
    )
    seen: dict[str, Any] = {}

    def capture(handles: SystemHandles, step: int) -> None:
        seen["stats"] = ray.get(handles.market_data.stats.remote())

    outcome = run(config, "bad-data", before_step=capture)
    assert outcome.rows["ticks"].height > 0
    rejected = seen["stats"]["rejected"]
    assert sum(rejected.values()) >= 3, rejected
    # and the run's own summary says so: the rejections in what the run consumed (it stops
    # at max_events, read ahead differently in each runner), the same as in one process
    assert sum(outcome.summary["input_rejected"].values()) >= 3, outcome.summary
    kernel = InProcessKernel(config, "bad-data-in-process")
    kernel.run()
    assert outcome.summary["input_rejected"] == kernel.summary()["input_rejected"]


def test_the_firm_kill_switch_binds_a_new_run_and_a_running_one(
    ray_local: None, tmp_path: Path
) -> None:
    from sapphire.adapters.kill_switch import FirmKillSwitch

    firm = FirmKillSwitch(tmp_path)  # the store root of make_config
    firm.trip("risk desk: halt", "test")
    halted = run(make_config(tmp_path), "firm-halted")
    assert halted.venue.orders() == [], "no order may reach the venue while tripped"
    assert halted.summary["kill_switch"] is True
    firm.reset("resume trading", "test")
    at_trip: dict[str, Any] = {}

    def trip(handles: SystemHandles, step: int) -> None:
        if step == 8:
            venue = pickle.loads(ray.get(handles.execution.exchange_record.remote()))
            at_trip["orders"] = {o.client_order_id for o in venue.orders()}
            firm.trip("risk desk: halt again", "test")

    running = run(make_config(tmp_path), "firm-running", before_step=trip)
    assert_halted_after_trip(running, at_trip["orders"])
    firm.reset("resume trading", "test")

    # one run's own stop (`sapphire stop RUN_ID`) finds a Ray run from its start: the run's
    # folder is made before its first step (the command refuses an id without one)
    from sapphire.cli import main

    def stop(handles: SystemHandles, step: int) -> None:
        if step == 0:  # before any checkpoint made it: stoppable from the first step
            assert (tmp_path / "one-run").is_dir()
        if step == 8:
            venue = pickle.loads(ray.get(handles.execution.exchange_record.remote()))
            at_trip["orders"] = {o.client_order_id for o in venue.orders()}
            assert main(["stop", "one-run", "--root", str(tmp_path), "--reason", "desk"]) == 0

    stopped = run(make_config(tmp_path), "one-run", before_step=stop)
    assert_halted_after_trip(stopped, at_trip["orders"])


def test_a_run_stopped_before_the_data_end_leaves_its_prefix_in_the_replay_cache(
    ray_local: None, tmp_path: Path
) -> None:
    """``sapphire run`` (``finish``) closes the market-data actor's replay: the streams it
    read part of stay converted, and the next run reads them first, trading the same."""
    from sapphire.data.replay_cache import entries

    cache = tmp_path / "cache"
    data = {"source": "sample", "batch_events": 1000, "max_events": 24_000}
    first = run(make_config(tmp_path / "a", data={**data, "cache_dir": str(cache)}), "cache-1")
    found = entries(cache)
    assert found and all(not e.complete for e in found)  # prefixes: the data goes on
    assert first.summary["replay_cache"]["misses"] == 3
    second = run(make_config(tmp_path / "b", data={**data, "cache_dir": str(cache)}), "cache-2")
    assert second.summary["replay_cache"]["prefixes"] == 3
    assert second.summary["fills"] == first.summary["fills"] > 0
    assert second.summary["input_rejected"] == first.summary["input_rejected"]
    venue_fills = [
        [(f.client_order_id, f.qty_lots, f.price_ticks) for f in o.venue.fills]
        for o in (first, second)
    ]
    assert venue_fills[0] == venue_fills[1]
