"""Helpers to run the actor system in tests and collect what it did (from the venue's and
the store's own records, not from the coordinator's view)."""

from __future__ import annotations

import pickle
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from actors.system import SystemHandles, finish, shutdown_system, start_system
from sapphire.config.system import SystemConfig, parse_config
from sapphire.storage.query import read_table

# A client a few ms from the venue: windows of up to 20 ms are exact (the lookahead)
LATENCY = {
    "feed_ns": 2_000_000,
    "decision_ns": 500_000,
    "entry_ns": 20_000_000,
    "response_ns": 20_000_000,
}
TABLES = ("ticks", "signals", "intents", "orders", "fills", "positions", "pnl", "risk_decisions")


def make_config(root: Path, **overrides: Any) -> SystemConfig:
    raw: dict[str, Any] = {
        "data": {"source": "sample", "batch_events": 1000, "max_events": 24_000},
        "agents": [
            {
                "id": "mm",
                "kind": "avellaneda_stoikov",
                "symbol": "BTCUSDT",
                "params": {"order_amount": 0.002, "max_inventory": 0.02, "order_refresh_time": 0.5},
            },
            {
                "id": "mom",
                "kind": "momentum",
                "symbol": "BTCUSDT",
                "params": {"order_lots": 2, "allow_short": True, "fast_span": 5, "slow_span": 30},
            },
        ],
        "risk": {
            "price_band_bps": 50,
            "default_agent": {"max_position_lots": 40, "max_orders_per_second": 50},
        },
        "exchange": {
            "kind": "paper",
            "params": {"balances": {"USDT": "100000", "BTC": "0"}, "latency": LATENCY},
        },
        "storage": {"root": str(root), "batch_rows": 500, "flush_interval_s": 0.2},
        "ray": {"agent_timeout_s": 20.0},
    }
    for key, value in overrides.items():
        raw[key] = value
    return parse_config(raw)


class Outcome:
    def __init__(
        self,
        handles: SystemHandles,
        summary: dict[str, Any],
        venue: Any,
        venues: list[Any] | None = None,
    ) -> None:
        self.summary = summary
        self.venue = venue
        self.venues = venues or [venue]  # each shard's venue record (``venue`` is shard 0's)
        self.restarted: dict[str, bool] = {}  # each killed actor: did Ray restart it
        self.readers = len(handles.readers)  # market-data actors reading the replay by shard
        store = handles.storage_root / "store"
        self.rows = {
            t: read_table(store, t, handles.run_id).drop("run_id", "date").collect().sort("seq")
            for t in TABLES
        }

    @property
    def victim_restarted(self) -> bool:
        """Every killed actor was restarted (False where the run killed none)."""
        return bool(self.restarted) and all(self.restarted.values())

    @property
    def venue_fills(self) -> list[Any]:
        return list(self.venue.fills)

    def positions(self) -> dict[str, int]:
        return {k: v["position_lots"] for k, v in self.summary["agents"].items()}


def drive_to_end(handles: SystemHandles) -> int:
    step = 0
    while True:
        progress = ray.get(handles.coordinator.run_step.remote(step), timeout=180)
        step += 1
        if progress.done:
            return step


def run(
    config: SystemConfig,
    run_id: str,
    *,
    chaos: tuple[str, int] | None = None,
    kills: Sequence[tuple[str, int, float]] = (),
    before_step: Any = None,
    kill_delay_s: float = 0.02,
) -> Outcome:
    """Drive a system to the end; with ``chaos=(victim, step)``, kill that actor while the
    step is in flight (Ray restarts it). ``kills``: several ``(victim, step, delay_s)``, one
    after another in one run (each victim restarted before the next kill's step): every
    actor kind's recovery for the cost of one system start, not one each."""
    schedule = list(kills) or ([(chaos[0], chaos[1], kill_delay_s)] if chaos else [])
    at_step = {step: (victim, delay) for victim, step, delay in schedule}
    if len(at_step) != len(schedule):
        raise ValueError(f"two kills at one step: {schedule}")
    handles = start_system(config, run_id)
    try:
        step = 0
        while True:
            if before_step is not None:
                before_step(handles, step)
            ref = handles.coordinator.run_step.remote(step)
            if step in at_step:
                victim, delay = at_step[step]
                time.sleep(delay)
                ray.kill(victim_handle(handles, victim), no_restart=False)
            progress = ray.get(ref, timeout=180)
            step += 1
            if progress.done:
                break
        if step <= max(at_step, default=-1):
            raise AssertionError(f"the run ended at step {step}, before its kills {schedule}")
        result = finish(handles, step, 0.0)
        venues = [pickle.loads(ray.get(v.exchange_record.remote())) for v in handles.venues]
        outcome = Outcome(handles, result.summary, venues[0], venues)
        outcome.restarted = {
            victim: victim_restarted(handles, victim, result.summary) for victim, _, _ in schedule
        }
        return outcome
    finally:
        shutdown_system(handles)


def kill_schedule(
    seed: int, victims: Sequence[str], steps: Sequence[int]
) -> list[tuple[str, int, float]]:
    """Each of ``victims`` killed once, in a seeded order, at seeded distinct ``steps`` (in
    step order) and a seeded moment (0-50 ms) into its step: ``(victim, step, delay_s)``."""
    rng = random.Random(seed)
    order = rng.sample(list(victims), len(victims))
    at = sorted(rng.sample(list(steps), len(victims)))
    return [(v, s, rng.uniform(0.0, 0.05)) for v, s in zip(order, at, strict=True)]


def victim_restarted(handles: SystemHandles, victim: str, summary: dict[str, Any]) -> bool:
    if victim == "coordinator":
        return bool(summary["restored"])
    if victim == "sink":
        return bool(ray.get(handles.sink.stats.remote())["restarted"])
    return bool(ray.get(victim_handle(handles, victim).stats.remote())["restored"])


def victim_handle(handles: SystemHandles, victim: str) -> Any:
    if victim.startswith("agent:"):
        return handles.agents[victim.split(":", 1)[1]]
    if victim.startswith("venue:"):  # a shard's venue actor
        return handles.venues[int(victim.split(":", 1)[1])]
    if victim.startswith("reader:"):  # a shard's market data (a replay read shard by shard)
        return handles.readers[int(victim.split(":", 1)[1])]
    return {
        "coordinator": handles.coordinator,
        "market_data": handles.market_data,
        "execution": handles.execution,
        "sink": handles.sink,
    }[victim]


def assert_same_outcome(expected: Outcome, got: Outcome) -> None:
    assert got.venue_fills == expected.venue_fills, "venue fills differ"
    for k, (want_venue, got_venue) in enumerate(zip(expected.venues, got.venues, strict=True)):
        assert list(got_venue.fills) == list(want_venue.fills), f"shard {k}: venue fills differ"
    assert got.positions() == expected.positions()
    assert got.summary["fills"] == expected.summary["fills"]
    assert got.summary["orders_by_status"] == expected.summary["orders_by_status"]
    for table in TABLES:
        want, have = expected.rows[table], got.rows[table]
        assert have.height == want.height, f"{table}: {have.height} rows stored, want {want.height}"
        assert have["seq"].n_unique() == have.height, f"{table}: duplicated rows"
        assert have.equals(want), f"{table}: stored rows differ"
