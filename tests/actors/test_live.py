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


def _publish_and_run(handles: Any, double: Any, inst: Any, trades: list[Any]) -> Any:
    """Connect the run's feed to the double, publish ``trades`` there, run to the end."""
    step = drive(handles, max_steps=1)  # connects the feed (nothing published yet)
    deadline = 100
    while double.subscribers("btcusdt@trade") == 0 and deadline:
        time.sleep(0.1)
        deadline -= 1
    double.publish_trades(inst, trades)
    step = drive(handles, start_step=step, max_steps=40)
    return finish(handles, step, 0.0)


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
        result = _publish_and_run(handles, double, inst, trades)
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


def test_a_live_feed_feeds_each_shard_its_own_symbols(
    ray_live: None, shared_data: Path, tmp_path: Path
) -> None:
    """A live feed with the paper venue, sharded by symbol: each shard's venue and agents get
    their symbols' events (the coordinator failed its first step on an assertion that a
    live run is one shard, and a resume failed the same way)."""
    import json

    import ccxt.pro

    from sapphire.adapters.binance_venue import BinanceVenue
    from sapphire.data.instruments import instrument_json, load_exchange_info
    from sapphire.data.registry import open_stream
    from sapphire.exchange.config import PaperExchangeBuilder
    from sapphire.model import Trade
    from tests.actors.double_thread import DoubleThread
    from tests.actors.live_env import INFO

    # the double lists BTCUSDT and an ETHUSDT made from it (its exchangeInfo entry renamed)
    info = json.loads((shared_data / INFO).read_text())
    (btc_entry,) = [s for s in info["symbols"] if s["symbol"] == "BTCUSDT"]
    info["symbols"] = [btc_entry, {**btc_entry, "symbol": "ETHUSDT", "baseAsset": "ETH"}]
    info_path = tmp_path / "info.json"
    info_path.write_text(json.dumps(info))
    listed = load_exchange_info(info_path)
    inst_file, eth_file = tmp_path / "btcusdt.json", tmp_path / "ethusdt.json"
    inst_file.write_bytes(instrument_json(listed["BTCUSDT"]))
    eth_file.write_bytes(instrument_json(listed["ETHUSDT"]))
    builder = PaperExchangeBuilder().instrument(listed["BTCUSDT"]).instrument(listed["ETHUSDT"])
    for asset, amount in (("USDT", "100000"), ("BTC", "1"), ("ETH", "1")):
        builder = builder.balance(asset, amount)
    double = DoubleThread(BinanceVenue(builder.config(), info))
    inst = listed["BTCUSDT"]
    trades = [e for e in open_stream(sample.sample_paths().trades, inst) if isinstance(e, Trade)]
    trades = trades[:100]
    urls = double.double.ccxt_urls(ccxt.pro.binance().urls["api"])
    config = parse_config(
        {
            "data": {
                "source": "ccxt",
                "instrument_files": [str(inst_file), str(eth_file)],
                "live": {"api_urls": urls, "max_wait_s": 0.5},
                "batch_events": 50,
                "max_events": len(trades),
            },
            "agents": [
                {"id": "mom_btc", "kind": "momentum", "symbol": "BTCUSDT"},
                {"id": "mom_eth", "kind": "momentum", "symbol": "ETHUSDT"},
            ],
            "exchange": {
                "kind": "paper",
                "params": {"balances": {"USDT": "100000", "BTC": "1", "ETH": "1"}},
            },
            "storage": {"root": str(tmp_path / "runs"), "flush_interval_s": 0.2},
            "shards": [{"symbols": ["BTCUSDT"]}, {"symbols": ["ETHUSDT"]}],
        }
    )
    handles = start_system(config, "live-shards")
    try:
        result = _publish_and_run(handles, double, inst, trades)
        seen = {a: ray.get(h.stats.remote(a))["events_seen"] for a, h in handles.agents.items()}
    finally:
        shutdown_system(handles)
        double.stop()
    assert result.summary["counters"]["events"] == len(trades)
    assert seen == {"mom_btc": len(trades), "mom_eth": 0}, seen
