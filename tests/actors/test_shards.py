"""A sharded config on Ray: each shard's venue and agents are actors of their own; the run
trades and stores exactly what ``sapphire backtest`` does, and a shard's venue actor killed
mid-step loses and duplicates nothing (each venue checkpoints under its own name)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray
import yaml

from actors.coordinator import FeedRanDry, SourcesFeed
from actors.market_data import MarketDataActor
from sapphire.config.system import SystemConfig, parse_config
from sapphire.kernel.assembly import (
    load_instruments,
    market_data_kind,
    replay_key,
    replay_opener,
    shards,
    source_shards,
    sources_opener,
)
from sapphire.kernel.runner import InProcessKernel
from sapphire.storage.query import read_table
from tests.actors.harness import TABLES, Outcome, assert_same_outcome, run
from tests.kernel.test_shards import SPOT, USDM, shards_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="sapphire-shards")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shards")


@pytest.fixture(scope="module")
def baseline(ray_local: None, root: Path) -> Outcome:
    return run(shards_config(root, ray={"agent_timeout_s": 20.0}), "shards-base")


def test_a_sharded_run_on_ray_trades_and_stores_as_one_process(
    baseline: Outcome, root: Path
) -> None:
    # each shard's market data read its own venue's files, on the shard's resources
    assert baseline.readers == 2
    config = shards_config(root)
    config_file = root / "shards.yaml"
    config_file.write_text(yaml.safe_dump(msgspec.to_builtins(config)))
    done = subprocess.run(
        [
            *(sys.executable, "-m", "sapphire.cli", "backtest", "--config", str(config_file)),
            *("--run-id", "shards-in-process", "--no-progress"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # each shard's venue actor traded its own symbol, as the in-process shard's venue did
    kernel = InProcessKernel(config, "again")
    kernel.run()
    for k, symbol in enumerate((USDM, SPOT)):
        want = list(kernel.venues[k].gateway.fills)  # type: ignore[attr-defined]
        assert list(baseline.venues[k].fills) == want, f"shard {k}: venue fills differ"
        assert want and {f.symbol for f in want} == {symbol}
    assert baseline.summary["fills"] == kernel.summary()["fills"]
    # the data's rejections and missing sessions are those of what the run consumed, not of
    # how far each reader had read ahead (one reader in one process, two chunked on Ray)
    assert baseline.summary["input_rejected"] == kernel.summary()["input_rejected"]
    assert baseline.summary["sessions_missing"] == kernel.summary()["sessions_missing"] == []
    store = root / "store"
    for table in TABLES:
        ray_rows = baseline.rows[table]
        in_process = (
            read_table(store, table, "shards-in-process")
            .drop("run_id", "date")
            .collect()
            .sort("seq")
        )
        assert ray_rows.height > 0, table
        assert ray_rows.equals(in_process), f"stored {table} differ"


def test_killing_a_shards_venue_mid_step_loses_and_duplicates_nothing(
    baseline: Outcome, tmp_path: Path
) -> None:
    outcome = run(
        shards_config(tmp_path, ray={"agent_timeout_s": 20.0}),
        "shards-chaos",
        chaos=("venue:1", 12),
    )
    assert outcome.victim_restarted, "the spot shard's venue was not restarted by Ray"
    assert_same_outcome(baseline, outcome)


@pytest.mark.parametrize(("victim", "step"), [("reader:1", 3), ("coordinator", 40)])
def test_killing_a_shards_market_data_or_the_merging_coordinator_loses_nothing(
    baseline: Outcome, tmp_path: Path, victim: str, step: int
) -> None:
    # a restarted reader reopens its sources at the offsets asked for; a restored
    # coordinator merges the readers' sources again from the start and drops what its
    # windows had consumed (the restored cutter state's count)
    outcome = run(
        shards_config(tmp_path, ray={"agent_timeout_s": 20.0}),
        f"shards-chaos-{victim.replace(':', '-')}",
        chaos=(victim, step),
    )
    assert outcome.victim_restarted, f"{victim} was not restarted by Ray"
    assert_same_outcome(baseline, outcome)


def all_sessions_config(root: Path) -> SystemConfig:
    """Both venues' shared recordings whole: USDT-M's three sessions (2023-04-04, 2024-07-18,
    2024-08-08) and spot's two (2024-08-08, 2023-04-05), so the merge switches sessions,
    and spot's 2023-04-05 overlaps USDT-M's 2023-04-04 in time."""
    raw = msgspec.to_builtins(shards_config(root))
    raw["data"]["venues"][0]["files"] = [
        f"shared:{d}/hftbacktest_binance-usdm_BTCUSDT_{kind}.csv.gz"
        for d, kind in (("book", "depth"), ("trades", "trades"), ("book", "bbo"))
    ]
    raw["data"].pop("start_ns")
    raw["data"].pop("end_ns")
    return parse_config(raw)


def read_all(feed: SourcesFeed, window: int) -> list[Any]:
    async def go() -> list[Any]:
        out: list[Any] = []
        while True:
            await feed.ensure(window)
            got = list(itertools.islice(feed, window))
            out.extend(got)
            if len(got) < window:
                return out

    return asyncio.run(go())


def test_shard_readers_merge_into_exactly_the_one_readers_order(
    ray_local: None, tmp_path: Path
) -> None:
    config = all_sessions_config(tmp_path)
    instruments = load_instruments(config.data)
    owners = source_shards(config, shards(config, instruments))
    assert owners == [0, 0, 0, 1, 1, 1]
    want = list(replay_opener(config.data, instruments)())
    assert len(want) > 100_000
    readers = [
        MarketDataActor.remote(  # type: ignore[attr-defined]
            sources_opener(
                config.data, instruments, tuple(i for i, o in enumerate(owners) if o == k)
            ),
            1000,
            str(tmp_path / "ckpt"),
            None,
            market_data_kind(k),
        )
        for k in range(2)
    ]
    key = replay_key(config.data.clock)
    # small chunks: every source is refetched many times, sessions cross chunk ends
    assert read_all(SourcesFeed(readers, owners, key, 777, skip=0), 500) == want
    # a restored coordinator merges again from the start and drops what it had consumed
    assert read_all(SourcesFeed(readers, owners, key, 4096, skip=123_457), 2000) == want[123_457:]
    # a reader killed mid-read is restarted by Ray, reopens its sources where asked
    feed = SourcesFeed(readers, owners, key, 1000, skip=0)
    first = read_all_until(feed, 500, 40_000)
    ray.kill(readers[1], no_restart=False)
    assert first + read_all(feed, 500) == want
    # taking more than ``ensure`` asked for is an error, never the data's end
    dry = SourcesFeed(readers, owners, key, 100, skip=0)
    asyncio.run(dry.ensure(10))
    with pytest.raises(FeedRanDry):
        list(itertools.islice(dry, 50_000))


def read_all_until(feed: SourcesFeed, window: int, most: int) -> list[Any]:
    async def go() -> list[Any]:
        out: list[Any] = []
        while len(out) < most:
            await feed.ensure(window)
            out.extend(itertools.islice(feed, window))
        return out

    return asyncio.run(go())
