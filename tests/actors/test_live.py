"""The actor system trading live through ccxt: real, unpatched ccxt in the execution actor,
against the local Binance double on loopback, whose market moves with the same recorded
events the agents see. Every order the coordinator sent ends in the venue's final state,
and nothing is placed twice."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray

from actors.system import drive, finish, shutdown_system, start_system
from sapphire.config.system import parse_config
from sapphire.data import sample
from tests.actors.live_env import (
    PREFIX,
    LiveRun,
    assert_journal_is_the_venues,
    live_config,
    start_venue,
)

pytestmark = pytest.mark.slow

MAX_EVENTS = 20_000


def test_the_system_trades_live_through_ccxt_with_one_final_state_per_order(
    ray_live: None, shared_data: Path, tmp_path: Path
) -> None:
    double, inst_file = start_venue(shared_data, tmp_path)
    config = live_config(double, inst_file, tmp_path / "runs", max_events=MAX_EVENTS)
    # the test replays the same events into the venue, one batch ahead of each step
    run = LiveRun.start(config, double, "live")
    try:
        while not run.steps(1):
            pass
        result = run.finish()
        assert run.handles is not None
        agent_stats = [ray.get(a.stats.remote()) for a in run.handles.agents.values()]
    finally:
        run.stop()
        double.stop()
    summary = result.summary
    venue = double.venue
    assert all(s["errors"] == 0 for s in agent_stats), agent_stats
    assert summary["counters"]["orders"] > 0, (summary["quarantined"], agent_stats)
    assert venue.duplicate_submits == 0, "an order was placed twice"
    assert summary["fills"] > 0
    assert venue.orders, "orders must have reached the venue over HTTP"
    assert sum(summary["orders_by_status"].values()) == summary["counters"]["orders"]
    # every order the venue has is in the journal, finished the same way; fills are the venue's
    journal = assert_journal_is_the_venues(run)
    assert len(journal) == summary["counters"]["orders"]
    # every id the venue saw carries this run's tag (never a bare, collision-prone agent-seq)
    assert all(run.venue_ids().is_ours(cid) for cid in venue.orders)


def test_live_market_data_reaches_agents_and_the_store_once(
    ray_live: None, shared_data: Path, tmp_path: Path
) -> None:
    import ccxt.pro

    from sapphire.data.registry import open_stream
    from sapphire.model import Trade

    double, inst_file = start_venue(shared_data, tmp_path)
    inst = double.venue.paper.instruments["BTCUSDT"]
    trades = [e for e in open_stream(sample.sample_paths().trades, inst) if isinstance(e, Trade)]
    trades = trades[:150]
    urls = double.double.ccxt_urls(ccxt.pro.binance().urls["api"])
    config = parse_config(
        {
            "data": {
                "source": "ccxt",
                "instrument_files": [str(inst_file)],
                "live": {"api_urls": urls, "max_wait_s": 0.5},
                "batch_events": 50,
                "max_events": len(trades),
            },
            "agents": [
                {
                    "id": "mom",
                    "kind": "momentum",
                    "symbol": "BTCUSDT",
                    "params": {"order_lots": 300, "fast_span": 3, "slow_span": 10},
                }
            ],
            "exchange": {
                "kind": "ccxt",
                "params": {"credentials_prefix": PREFIX, "api_urls": urls, "rate_limit_ms": 1},
            },
            "storage": {"root": str(tmp_path / "runs"), "flush_interval_s": 0.2},
        }
    )
    handles = start_system(config, "live-data")
    try:
        step = drive(handles, max_steps=1)  # connects the feed (nothing published yet)
        deadline = 100
        while double.subscribers("btcusdt@trade") == 0 and deadline:
            time.sleep(0.1)
            deadline -= 1
        double.publish_trades(inst, trades)
        step = drive(handles, start_step=step, max_steps=40)
        result = finish(handles, step, 0.0)
        feed_stats = ray.get(handles.market_data.stats.remote())
    finally:
        shutdown_system(handles)
        double.stop()
    assert result.summary["counters"]["events"] == len(trades), feed_stats
    from sapphire.storage.query import read_table

    ticks = read_table(tmp_path / "runs" / "store", "ticks", "live-data").collect().sort("seq")
    assert ticks["trade_id"].to_list() == [t.trade_id for t in trades]


def test_a_run_whose_venue_was_never_reached_fails(
    ray_live: None, shared_data: Path, tmp_path: Path
) -> None:
    # the venue unreachable from start to end: every order was refused "venue start-up
    # failed", and the run printed a normal summary and exited 0
    import socket

    double, inst_file = start_venue(shared_data, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    config = live_config(double, inst_file, tmp_path / "runs", max_events=3_000)

    def closed(url: Any) -> Any:
        if isinstance(url, str):
            return f"http://127.0.0.1:{port}/" + url.partition("://")[2].partition("/")[2]
        return {k: closed(v) for k, v in url.items()}

    raw = msgspec.to_builtins(config)
    raw["exchange"]["params"]["api_urls"] = closed(raw["exchange"]["params"]["api_urls"])
    handles = start_system(parse_config(raw), "unreached")
    try:
        step = drive(handles, max_steps=200)
        result = finish(handles, step, 0.0)
    finally:
        shutdown_system(handles)
        double.stop()
    assert result.failure.startswith("the venue was never reached: venue start-up failed")
    assert result.summary["fills"] == 0
