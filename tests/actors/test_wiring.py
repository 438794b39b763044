"""The replay feed the market-data actor wraps: pacing by recorded time, and a restart's
fast-forward that is not paced."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

from actors import wiring
from actors.wiring import ReplayFeed
from sapphire.config.system import ExchangeConfig
from sapphire.data import sample


def _feed(speed: float) -> ReplayFeed:
    inst = sample.sample_instrument()
    return ReplayFeed(sample.event_files(), {inst.symbol: inst}, "ts_recv_ns", speed)


def test_speed_releases_events_at_a_multiple_of_recorded_time() -> None:
    fast = list(itertools.islice(_feed(0.0), 3000))
    span_s = (fast[-1].ts_recv_ns - fast[0].ts_recv_ns) / 1e9
    assert span_s > 0.2  # enough recorded time to measure pacing against
    started = time.perf_counter()
    paced = list(itertools.islice(_feed(span_s / 0.5), 3000))  # should take ~0.5 s
    elapsed = time.perf_counter() - started
    assert paced == fast
    assert 0.45 <= elapsed < 5.0


def test_skip_fast_forwards_without_pacing_and_continues_in_order() -> None:
    reference = list(itertools.islice(_feed(0.0), 5000))
    feed = _feed(1.0)  # recorded pace: skipping 4,990 events must not sleep through them
    started = time.perf_counter()
    feed.skip(4990)
    rest = list(itertools.islice(iter(feed), 10))
    assert time.perf_counter() - started < 5.0
    assert rest == reference[4990:]


def test_a_replay_driver_never_imports_ccxt() -> None:
    """ccxt is 0.7 s of imports: only a live venue's run loads it (the wiring imports its
    config lazily), so `sapphire run` on a replay starts that much sooner."""
    code = (
        "import sys, actors.system, actors.report, sapphire.cli.run_cmd\n"
        "sys.exit(1 if 'ccxt' in sys.modules else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "ccxt was imported"
    gateway = wiring.live_gateway_builder(
        ExchangeConfig(kind="ccxt", params={"exchange_id": "binance"}), "run-x"
    )
    assert callable(gateway)  # the live path still finds its config
