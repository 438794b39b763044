"""The replay feed the market-data actor wraps: pacing by recorded time, and a restart's
fast-forward that is not paced."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def _built_apart(tmp_path: Path, actor_module: str, builders: list[Any], check: str) -> str:
    """Unpickle ``builders`` as Ray does, in a fresh process that imported ``actor_module``,
    call each and run ``check`` on what they built (``built``): the process's error, else the
    replay's libraries it then holds ('' for none)."""
    import pickle

    path = tmp_path / "builder.pkl"
    path.write_bytes(pickle.dumps(builders))
    code = (
        f"import pickle, sys, ray, {actor_module}\n"
        f"built = [b() for b in pickle.loads(open({str(path)!r}, 'rb').read())]\n"
        f"{check}\n"
        "sys.exit(', '.join(sorted({'polars', 'pyarrow', 'numpy'} & set(sys.modules))) or 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done.stderr.strip() if done.returncode else ""


def test_the_venue_actor_builds_its_paper_venue_without_the_replays_libraries(
    tmp_path: Path,
) -> None:
    """Its checkpoints are whole-file writes (``sapphire.storage.files``), not Parquet, and
    its builder (``sapphire.kernel.builders``) and the venue's money rule
    (``sapphire.storage.money``) need no polars, pyarrow or numpy: a venue actor's process
    starts about 0.4 s of CPU sooner, at every system start. The builder is unpickled, as
    Ray does: its module used to bring the replay's wiring with it."""
    from actors.wiring import gateway_builder, load_instruments
    from tests.actors.harness import make_config

    config = make_config(tmp_path)
    build = gateway_builder(config.exchange, load_instruments(config.data), "run-x")
    check = "assert type(built[0]).__name__ == 'PaperExchange', built"
    assert _built_apart(tmp_path, "actors.execution", [build], check) == ""


def test_an_agent_actor_builds_its_agents_without_the_replays_libraries(tmp_path: Path) -> None:
    """An agent actor unpickles its builders (``sapphire.kernel.builders``) and builds the
    built-in kinds without polars, pyarrow or numpy, which the replay's wiring imports: about
    a third of a second of CPU at every agent actor's start and restart."""
    from actors.wiring import agent_builder, load_instruments
    from tests.actors.harness import make_config

    config = make_config(tmp_path)
    instruments = load_instruments(config.data)
    builders = [agent_builder(s, instruments[s.symbol], instruments) for s in config.agents]
    assert {s.kind for s in config.agents} == {"avellaneda_stoikov", "momentum"}
    check = "assert len(built) == 2, built"
    assert _built_apart(tmp_path, "actors.agent", builders, check) == ""


def test_a_resume_with_another_config_is_refused_and_a_refused_start_holds_no_claim(
    tmp_path: Path,
) -> None:
    """A --resume took whatever config it was given: two configs' rows under one run id,
    an agent dropped from it gone from the store, exit 0. And every refused start left its
    claim behind (a later process with that pid made the id look "running")."""
    import msgspec
    import pytest

    from actors.system import check_run_start, release_claim
    from actors.wiring import WiringError
    from tests.actors.harness import make_config

    config = make_config(tmp_path)
    with pytest.raises(WiringError, match="no checkpoints"):
        check_run_start(config, "never-ran", resume=True)
    assert not (tmp_path / "never-ran" / "claimed").exists()
    release_claim(check_run_start(config, "r1", resume=False))
    assert (tmp_path / "r1" / "run-config.json").is_file()
    (tmp_path / "r1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r1" / "checkpoints" / "coordinator.ckpt").write_bytes(b"x")  # it ran
    fewer = msgspec.structs.replace(config, agents=config.agents[1:])
    with pytest.raises(WiringError, match=r"another config \(agents differ"):
        check_run_start(fewer, "r1", resume=True)
    assert not (tmp_path / "r1" / "claimed").exists()
    faster = msgspec.structs.replace(
        config, data=msgspec.structs.replace(config.data, speed=1.0, batch_events=77)
    )
    release_claim(check_run_start(faster, "r1", resume=True))  # pace and memory knobs: fine
    risky = msgspec.structs.replace(
        config, risk=msgspec.structs.replace(config.risk, price_band_bps=1)
    )
    with pytest.raises(WiringError, match=r"risk\.price_band_bps differ"):
        check_run_start(risky, "r1", resume=True)
