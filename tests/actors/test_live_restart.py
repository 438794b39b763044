"""Live trading across runs (real Ray, real unpatched ccxt, the Binance double): a crashed run
followed by a new run id, and a refused API key. Actor kills and a resumed driver are in
test_fault_matrix. The stored journal equals the venue's own record order by order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.actors.live_env import (
    PREFIX,
    SECRET,
    LiveRun,
    assert_journal_is_the_venues,
    live_config,
    start_venue,
)

pytestmark = pytest.mark.slow


def test_a_new_run_after_a_crash_never_takes_over_the_crashed_runs_orders(
    ray_live: None, shared_data: Path, tmp_path: Path
) -> None:
    double, inst_file = start_venue(shared_data, tmp_path)
    crashed = LiveRun.start(live_config(double, inst_file, tmp_path / "a"), double, "crashed")
    ids = crashed.venue_ids()

    def resting() -> set[str]:
        return {
            v
            for v, status in ((v, double.venue.final_status(v)) for v in double.venue.orders)
            if ids.is_ours(v) and status is not None and not status.is_final
        }

    try:  # the run crashes at a moment when it has orders resting at the venue
        while not resting() and not crashed.steps(1):
            pass
    finally:
        crashed.stop()  # every actor gone, nothing cancelled: its orders rest at the venue
    orphans = resting()
    assert orphans, "the crashed run must leave resting orders behind"
    try:
        # default policy: halt. Nothing is sent while orders nobody knows rest at the venue.
        config_b = live_config(double, inst_file, tmp_path / "b")
        halted = LiveRun.start(config_b, double, "halted", after=crashed)
        halted.steps(3, feed=False)  # it reconciles before the market moves on
        held = halted.finish()
        halted.stop()
        assert held.summary["kill_switch"], held.summary["venue_alerts"]
        assert held.summary["reconciliation"]["unknown_orders"] == len(orphans)
        assert held.summary["counters"]["orders"] == 0
        assert not [v for v in double.venue.orders if halted.venue_ids().is_ours(v)]
        assert resting() == orphans  # a halt leaves them to the operator
        # policy cancel_all: the crashed run's orphans are cancelled (`cancel` would leave
        # another Sapphire run's orders open), the new run trades under its own ids
        fresh = LiveRun.start(
            live_config(double, inst_file, tmp_path / "c", unknown_orders="cancel_all"),
            double,
            "fresh",
            after=halted,
        )
        fresh.steps(1, feed=False)
        while not fresh.steps(1):
            pass
        result = fresh.finish()
        fresh.stop()
    finally:
        double.stop()
    assert all(str(double.venue.final_status(v)) == "canceled" for v in orphans)
    assert result.summary["reconciliation"]["unknown_cancelled"] == len(orphans)
    assert result.summary["counters"]["orders"] > 0
    # its stored fills are exactly the venue's trades of its own ids: none of the crashed
    # run's trades is booked as its own, and none of its orders was adopted
    assert_journal_is_the_venues(fresh)
    assert result.summary["reconciliation"]["adopted"] == 0
    assert double.venue.duplicate_submits == 0


def test_a_refused_api_key_ends_sapphire_run_non_zero(shared_data: Path, tmp_path: Path) -> None:
    double, inst_file = start_venue(shared_data, tmp_path)
    try:
        config = live_config(double, inst_file, tmp_path / "runs", max_events=3000)
        path = tmp_path / "live.yaml"
        import msgspec

        raw = msgspec.to_builtins(config)
        raw["ray"]["num_cpus"] = 2
        path.write_text(yaml.safe_dump(raw))
        env = {**os.environ, f"{PREFIX}_API_KEY": "not-the-key", f"{PREFIX}_API_SECRET": SECRET}
        env.pop("RAY_ADDRESS", None)
        done = subprocess.run(
            [sys.executable, "-m", "sapphire.cli", "run", "--config", str(path), "--no-progress"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        double.stop()
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "failed" in done.stderr and "Authentication" in done.stderr, done.stderr[-2000:]
    assert not double.venue.orders, "no order may leave with a refused key"
