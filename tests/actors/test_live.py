"""The actor system trading live through ccxt: real, unpatched ccxt in the execution actor,
against the local Binance double on loopback, whose market moves with the same recorded
events the agents see. Every order the coordinator sent ends in the venue's final state,
and nothing is placed twice."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray

from actors import wiring
from actors.system import SystemHandles, drive, finish, shutdown_system, start_system
from sapphire.adapters.binance_venue import BinanceVenue
from sapphire.config.system import parse_config
from sapphire.data import sample
from sapphire.data.instruments import instrument_json, load_exchange_info
from sapphire.exchange.config import PaperExchangeBuilder
from tests.actors.double_thread import API_KEY, DoubleThread

pytestmark = pytest.mark.slow

SECRET = "live-test-secret-never-printed"
PREFIX = "SAPPHIRE_LIVE_TEST"
BATCH = 1000
MAX_EVENTS = 20_000


@pytest.fixture(scope="module")
def ray_live() -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    # workers read credentials from their environment, as in production
    os.environ[f"{PREFIX}_API_KEY"] = API_KEY
    os.environ[f"{PREFIX}_API_SECRET"] = SECRET
    ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="sapphire-live")
    yield
    ray.shutdown()


def test_the_system_trades_live_through_ccxt_with_one_final_state_per_order(
    ray_live: None, shared_data: Path, tmp_path: Path
) -> None:
    info_path = shared_data / "exchange" / "basana_binance_exchangeInfo_BTCUSDT.json"
    inst = load_exchange_info(info_path)["BTCUSDT"]
    inst_file = tmp_path / "btcusdt-spot.json"
    inst_file.write_bytes(instrument_json(inst))
    venue = BinanceVenue(
        PaperExchangeBuilder()
        .instrument(inst)
        .balance("USDT", "100000")
        .balance("BTC", "1")
        .config(),
        json.loads(info_path.read_text()),
    )
    double = DoubleThread(venue)
    paths = sample.sample_paths()
    raw: dict[str, Any] = {
        "data": {
            "source": "files",
            "files": [str(paths.depth), str(paths.trades), str(paths.bbo)],
            "instrument_files": [str(inst_file)],
            "batch_events": BATCH,
            "max_events": MAX_EVENTS,
            # the double is fed a batch ahead of each step: a step is BATCH events, not a
            # window of market time (a live venue is not simulated, so no window is exact)
            "window_ns": 3_600_000_000_000,
            "approximate": True,
        },
        "agents": [
            {
                "id": "mom",
                "kind": "momentum",
                "symbol": "BTCUSDT",
                "params": {
                    "order_lots": 300,
                    "allow_short": True,
                    "fast_span": 20,
                    "slow_span": 200,
                    "threshold_bps": 0.1,
                },
            },
            {
                "id": "mm",
                "kind": "avellaneda_stoikov",
                "symbol": "BTCUSDT",
                "params": {"order_amount": 0.002, "max_inventory": 0.02, "order_refresh_time": 0.5},
            },
        ],
        "risk": {"price_band_bps": 50, "default_agent": {"max_position_lots": 3000}},
        "exchange": {
            "kind": "ccxt",
            "params": {
                "credentials_prefix": PREFIX,
                "timeout_ms": 2000,
                "recv_window_ms": 3000,
                "settle_margin_ms": 50,
                "rate_limit_ms": 1,
                "api_urls": double.double.ccxt_urls(_binance_api_urls()),
            },
        },
        "storage": {"root": str(tmp_path / "runs"), "flush_interval_s": 0.2},
    }
    config = parse_config(raw)
    # the test replays the same events into the venue, one batch ahead of each step
    feed = iter(
        wiring.ReplayFeed(
            wiring.data_files(config.data),
            wiring.load_instruments(config.data),
            config.data.clock,
        )
    )
    handles: SystemHandles = start_system(config, "live")
    try:
        step = 0
        while True:
            batch = [e for _, e in zip(range(BATCH), feed, strict=False)]
            double.feed(batch)
            step = drive(handles, start_step=step, max_steps=1)
            if not batch or step * BATCH >= MAX_EVENTS:
                break
        # then drain: the last orders are sent, answered and reconciled until the venue has
        # nothing left to tell (bounded: the double gets no more market data)
        step = drive(handles, start_step=step, max_steps=10)
        result = finish(handles, step, 0.0)
        agent_stats = [ray.get(a.stats.remote()) for a in handles.agents.values()]
    finally:
        shutdown_system(handles)
        double.stop()
    summary = result.summary
    assert all(s["errors"] == 0 for s in agent_stats), agent_stats
    assert summary["counters"]["orders"] > 0, (summary["quarantined"], agent_stats)
    assert venue.duplicate_submits == 0, "an order was placed twice"
    assert summary["fills"] > 0
    orders_at_venue = set(venue.orders)
    assert orders_at_venue, "orders must have reached the venue over HTTP"
    assert sum(summary["orders_by_status"].values()) == summary["counters"]["orders"]
    # every order the venue has finished is finished the same way in the coordinator's journal
    statuses = {}
    for row in result_rows(tmp_path / "runs" / "store", "live"):
        statuses[row["client_order_id"]] = row["status"]
    for cid in orders_at_venue:
        final = venue.final_status(cid)
        if final is not None:
            assert statuses.get(cid) == str(final), (cid, statuses.get(cid), final)


def _binance_api_urls() -> dict[str, Any]:
    import ccxt

    urls: dict[str, Any] = ccxt.binance().urls["api"]
    return urls


def result_rows(store: Path, run_id: str) -> list[dict[str, Any]]:
    from sapphire.storage.query import read_table

    frame = read_table(store, "orders", run_id).collect().sort("seq")
    return list(msgspec.to_builtins(frame.to_dicts()))


def test_live_market_data_reaches_agents_and_the_store_once(
    ray_live: None, shared_data: Path, tmp_path: Path
) -> None:
    import ccxt.pro

    from sapphire.data.registry import open_stream
    from sapphire.model import Trade

    info_path = shared_data / "exchange" / "basana_binance_exchangeInfo_BTCUSDT.json"
    inst = load_exchange_info(info_path)["BTCUSDT"]
    inst_file = tmp_path / "btcusdt-spot.json"
    inst_file.write_bytes(instrument_json(inst))
    builder = PaperExchangeBuilder().instrument(inst).balance("USDT", "100000")
    venue = BinanceVenue(builder.balance("BTC", "1").config(), json.loads(info_path.read_text()))
    double = DoubleThread(venue)
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
