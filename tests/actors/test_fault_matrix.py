"""The fault matrix in live mode (real Ray, real unpatched ccxt, the Binance double), several
seeds each: every actor kind killed mid-step, the whole driver killed and the run resumed,
and random venue faults (429, 5xx, timeouts, lost and late answers, so reports come twice
and late). After each: the stored journal equals the venue's own record order by order,
positions equal the venue's trades, the store has no duplicate (producer_id, seq), nothing
was placed twice, and the run reports no success it did not have.

Paper mode's cells are in test_chaos (each actor), test_resume (every actor), test_multinode
(a node) and test_process_faults (the driver SIGKILLed, the disk);
``benchmarks/fault_matrix.py`` prints the table."""

from __future__ import annotations

import random
import subprocess
import threading
from pathlib import Path

import pytest
import ray

from sapphire.adapters.binance_double import Fault, FaultKind
from tests.actors.double_thread import DoubleThread
from tests.actors.harness import kill_schedule, victim_handle
from tests.actors.live_env import (
    LiveRun,
    assert_journal_is_the_venues,
    live_config,
    start_venue,
    venue_position_lots,
)

pytestmark = pytest.mark.slow

# the second seed of each cell in `./dev full` only: one system start per seed (CI time)
SEEDS = (11, pytest.param(23, marks=pytest.mark.full))
MAX_EVENTS = 12_000
VICTIMS = ("coordinator", "market_data", "execution", "sink", "agent:mm")


def check(run: LiveRun, double: DoubleThread) -> None:
    result = run.results[-1]
    summary = result.summary
    assert not summary["failure"], summary["failure"]
    assert result.unacked_rows == 0
    assert summary["counters"]["orders"] > 0 and summary["fills"] > 0
    assert double.venue.duplicate_submits == 0, "an order was placed twice"
    assert_journal_is_the_venues(run)
    positions = sum(a["position_lots"] for a in summary["agents"].values())
    assert positions == venue_position_lots(run)
    for table in ("orders", "fills", "intents", "risk_decisions"):
        keys = [(r["producer_id"], r["seq"]) for r in run.stored(table)]
        assert len(keys) == len(set(keys)), f"{table}: a row stored twice"


@pytest.mark.parametrize("seed", SEEDS)
def test_live_every_actor_killed_mid_step(
    ray_live: None, shared_data: Path, tmp_path: Path, seed: int
) -> None:
    # every actor kind killed in turn in one run (one system start, not one per kind), in a
    # seeded order at seeded steps of the run's first ten, a seeded moment into the next step
    kills = {s: (v, delay) for v, s, delay in kill_schedule(seed, VICTIMS, range(2, 10))}
    double, inst_file = start_venue(shared_data, tmp_path)
    config = live_config(double, inst_file, tmp_path / "runs", max_events=MAX_EVENTS)
    run = LiveRun.start(config, double, f"kill-{seed}")
    killed: list[str] = []
    try:

        def arm(step: int) -> None:
            if step in kills and run.handles is not None:
                victim, delay_s = kills[step]
                victim_ref = victim_handle(run.handles, victim)
                # killed while the next step is in flight
                threading.Timer(delay_s, ray.kill, (victim_ref,), {"no_restart": False}).start()
                killed.append(victim)

        while not run.steps(1, on_step=arm):
            pass
        run.finish()
        assert sorted(killed) == sorted(VICTIMS), f"the run ended before its kills {kills}"
        for victim in VICTIMS:
            if victim not in ("coordinator", "sink") and run.handles is not None:
                stats = ray.get(victim_handle(run.handles, victim).stats.remote())
                assert stats["restored"], f"{victim} was not restarted ({kills})"
    finally:
        run.stop()
        double.stop()
    check(run, double)


@pytest.mark.parametrize("seed", SEEDS)
def test_live_driver_killed_and_resumed(
    ray_live: None, shared_data: Path, tmp_path: Path, seed: int
) -> None:
    crash_at = random.Random(seed).randint(3, 8)
    double, inst_file = start_venue(shared_data, tmp_path)
    config = live_config(double, inst_file, tmp_path / "runs", max_events=MAX_EVENTS)
    run = LiveRun.start(config, double, f"driver-{seed}")
    try:
        run.steps(crash_at)
        run.crash()
        # the market goes on while nobody is watching: resting orders fill meanwhile
        double.feed([e for _, e in zip(range(2000), run.feed, strict=False)])
        run.fed += 2000
        run.resume()
        while not run.steps(1):
            pass
        result = run.finish()
    finally:
        run.stop()
        double.stop()
    assert result.summary["restored"]
    assert "adopted" in result.summary["reconciliation"]  # the venue was reconciled on resume
    check(run, double)


_VENUE_FAULTS = (
    Fault(kind=FaultKind.RATE_LIMIT, retry_after_s=1),
    Fault(kind=FaultKind.SERVER_ERROR),
    Fault(kind=FaultKind.UNAVAILABLE),
    Fault(kind=FaultKind.STALL, delay_s=2.5),  # past the client timeout, inside recvWindow
    Fault(kind=FaultKind.SLOW_RESPONSE, delay_s=0.3),
    Fault(kind=FaultKind.LOST_RESPONSE),
    Fault(kind=FaultKind.GATEWAY_TIMEOUT),
)
_ENDPOINTS = (("POST", "order"), ("DELETE", "order"), ("GET", "order"), ("GET", "openOrders"))


@pytest.mark.parametrize("seed", SEEDS)
def test_live_venue_faults(ray_live: None, shared_data: Path, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    double, inst_file = start_venue(shared_data, tmp_path)
    config = live_config(double, inst_file, tmp_path / "runs", max_events=MAX_EVENTS)
    run = LiveRun.start(config, double, f"venue-faults-{seed}")
    injected = 0

    def inject(step: int) -> None:
        nonlocal injected
        for _ in range(rng.randint(0, 2)):
            method, endpoint = rng.choice(_ENDPOINTS)
            fault = rng.choice(_VENUE_FAULTS)

            async def add(m: str = method, e: str = endpoint, f: Fault = fault) -> None:
                double.double.inject(m, e, f)

            double._run(add())
            injected += 1

    try:
        while not run.steps(1, on_step=inject):
            pass
        run.finish()
    finally:
        run.stop()
        double.stop()
    assert injected > 0
    check(run, double)


# the live run stores ~0.5-0.7 MB (checkpoints every step, zstd Parquet): it fills mid-run
@pytest.mark.tiny_fs_size("450k")
def test_live_disk_full_then_resume(
    ray_live: None, shared_data: Path, tmp_path: Path, tiny_fs: Path
) -> None:
    double, inst_file = start_venue(shared_data, tmp_path)
    config = live_config(double, inst_file, tiny_fs / "runs", max_events=MAX_EVENTS)
    run = LiveRun.start(config, double, "disk-full")
    try:
        with pytest.raises(ray.exceptions.RayError, match="No space left"):
            while not run.steps(1):
                pass
        sent_before = set(double.venue.orders)
        run.crash()  # the run stopped; its actors go, as `sapphire run` ends it
        subprocess.run(["mount", "-o", "remount,size=200m", str(tiny_fs)], check=True)
        run.resume()
        while not run.steps(1):
            pass
        run.finish()
    finally:
        run.stop()
        double.stop()
    assert sent_before, "orders must have reached the venue before the disk filled"
    check(run, double)
