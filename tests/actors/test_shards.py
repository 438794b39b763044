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

from actors.coordinator import ChunkFeed, SourcesFeed, merge_feed_stats
from actors.market_data import MarketDataActor
from actors.system import finish, shutdown_system, start_system
from sapphire.config.system import SystemConfig, parse_config
from sapphire.kernel.assembly import (
    load_instruments,
    market_data_kind,
    merge_groups,
    replay_key,
    replay_opener,
    shards,
    source_shards,
    sources_opener,
)
from sapphire.kernel.builders import WiringError
from sapphire.kernel.runner import InProcessKernel
from sapphire.kernel.windows import WindowCutter
from sapphire.storage.query import read_table
from tests.actors.harness import TABLES, Outcome, assert_same_outcome, drive_to_end, run
from tests.kernel.test_shards import SPOT, USDM, shards_config
from tests.ray_local import init_local, release_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=4, include_dashboard=False, namespace="sapphire-shards")
    yield
    release_local()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shards")


@pytest.fixture(scope="module")
def baseline(ray_local: None, root: Path) -> Outcome:
    return run(shards_config(root, ray={"agent_timeout_s": 20.0}), "shards-base")


def test_a_resource_no_node_has_is_refused_before_any_actor_starts(
    ray_local: None, root: Path
) -> None:
    """Its actors waited out the step timeout, then the run stopped with Ray's GetTimeoutError
    and a --resume that would wait the same: now one line naming the field, at once."""
    config = shards_config(root)
    shards = [
        msgspec.structs.replace(s, resources={"no-such-node": 1.0}) if k == 1 else s
        for k, s in enumerate(config.shards)
    ]
    bad = msgspec.structs.replace(config, shards=tuple(shards))
    with pytest.raises(WiringError, match=r"shards\[1\].resources: no-such-node 1 asked"):
        start_system(bad, "no-node")


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
    assert sum(baseline.summary["input_rejected"].values()) > 0
    assert baseline.summary["input_rejected"] == kernel.summary()["input_rejected"]
    assert baseline.summary["sessions_missing"] == kernel.summary()["sessions_missing"] == []
    # the spot recorder's lag, learnt where the shards' sources are merged (here: the
    # coordinator), is told as one process tells it
    lags = kernel.summary()["recorder_lags"]
    assert baseline.summary["recorder_lags"] == lags and lags.get("2024-08-08", 0) > 10**9
    # the venues' books (a diff lost where a recorded session ends) read the same in both
    assert baseline.summary["venue_books"] == kernel.summary()["venue_books"]
    assert baseline.summary["venue_books"]["out_of_sync_at_end"] == 0
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
    feed: dict[str, int] = {}

    def watch(handles: Any, step: int) -> None:
        if step == 60:
            feed.update(ray.get(handles.coordinator.feed_stats.remote()))

    outcome = run(
        shards_config(tmp_path, ray={"agent_timeout_s": 20.0}),
        "shards-chaos",
        chaos=("venue:1", 12),
        before_step=watch,
    )
    assert outcome.victim_restarted, "the spot shard's venue was not restarted by Ray"
    assert_same_outcome(baseline, outcome)
    # the coordinator went back to its last barrier and got the events since then again
    # from its feed's memory, not by merging the shard readers' sources again from the start
    assert feed["rewinds"] >= 1, feed


def test_killing_a_shards_market_data_and_then_the_merging_coordinator_loses_nothing(
    baseline: Outcome, tmp_path: Path
) -> None:
    # a restarted reader reopens its sources at the offsets asked for; a restored
    # coordinator merges the readers' sources again from the start and drops what its
    # windows had consumed (the restored cutter state's count); one run, one after the other
    kills = [("reader:1", 3, 0.02), ("coordinator", 40, 0.02)]
    outcome = run(
        shards_config(tmp_path, ray={"agent_timeout_s": 20.0}), "shards-kills", kills=kills
    )
    assert outcome.restarted == {"reader:1": True, "coordinator": True}, "not restarted by Ray"
    assert_same_outcome(baseline, outcome)


def test_a_coordinator_restarted_after_its_last_step_reports_what_the_run_consumed(
    baseline: Outcome, tmp_path: Path
) -> None:
    """Ray restarts the coordinator after the run's last step: the retried call answers from
    its checkpoint, so no feed is open there; the data's report is still that of what the
    run consumed (the checkpoint's count, merged again shard by shard), not of what the
    readers had read ahead."""
    handles = start_system(shards_config(tmp_path, ray={"agent_timeout_s": 20.0}), "late")
    try:
        steps = drive_to_end(handles)
        ray.kill(handles.coordinator, no_restart=False)
        result = finish(handles, steps, 0.0)
    finally:
        shutdown_system(handles)
    assert result.summary["restored"]
    assert sum(result.summary["input_rejected"].values()) > 0
    assert result.summary["input_rejected"] == baseline.summary["input_rejected"]
    assert result.summary["sessions_missing"] == baseline.summary["sessions_missing"]
    # and the recorder lags its merge had learnt, from its checkpoint (no feed is open)
    assert result.summary["recorder_lags"] == baseline.summary["recorder_lags"]


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
    # every recorded session, and one no file holds
    raw["data"]["sessions"] = ["2023-04-04", "2023-04-05", "2024-07-18", "2024-08-08", "1999-01-01"]
    # months apart: the merge's order is the subject here, not one run trading across them
    raw["data"]["max_session_gap_s"] = 0
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
    groups = merge_groups(config.data)
    # small chunks: every source is refetched many times, sessions cross chunk ends
    assert read_all(SourcesFeed(readers, owners, groups, key, 777, skip=0), 500) == want
    # a restored coordinator merges again from the start and drops what it had consumed
    assert (
        read_all(SourcesFeed(readers, owners, groups, key, 4096, skip=123_457), 2000)
        == want[123_457:]
    )
    # a checkpoint that consumed more than the replay holds (a resume on changed data
    # files): one clear error, not a coroutine's StopIteration
    with pytest.raises(WiringError, match="fewer events than the checkpoint consumed"):
        asyncio.run(SourcesFeed(readers, owners, groups, key, 4096, skip=len(want) + 5).ensure(10))
    # a reader killed mid-read is restarted by Ray, reopens its sources where asked
    feed = SourcesFeed(readers, owners, groups, key, 1000, skip=0)
    first = read_all_until(feed, 500, 40_000)
    ray.kill(readers[1], no_restart=False)
    assert first + read_all(feed, 500) == want
    # a window may take more than ``ensure`` buffered (events sharing the time at its cap):
    # the feed refills there and then, never taking a source for over
    dry = SourcesFeed(readers, owners, groups, key, 100, skip=0)
    asyncio.run(dry.ensure(10))
    assert list(itertools.islice(dry, 50_000)) == want[:50_000]
    assert dry.refills > 0
    # what the data reports (rejected rows, sessions not met) is that of what was consumed,
    # as one reader reports it, also from readers restarted after their sources were over
    ray.kill(readers[0], no_restart=False)
    ray.kill(readers[1], no_restart=False)
    for consumed in (100_000, len(want)):
        one = replay_opener(config.data, instruments)()
        assert len(list(itertools.islice(one, consumed))) == consumed
        expected = one.report(consumed)
        taken = feed.log.taken(consumed)
        asks = [{i: n for i, n in enumerate(taken) if owners[i] == k} for k in range(2)]
        stats = ray.get([r.stats.remote(a) for r, a in zip(readers, asks, strict=True)])
        got = merge_feed_stats(stats)
        assert (got["rejected"], got["sessions_missing"]) == expected
    assert sum(expected[0].values()) > 0 and expected[1] == ["1999-01-01"]


def test_a_window_past_its_buffer_refills_the_feed_and_reads_on(
    ray_local: None, tmp_path: Path
) -> None:
    """One reader of the merged replay (``ChunkFeed``): windows capped at 50 events keep the
    events that share the time at the cap, often more than ``ensure`` buffered; the feed
    waits for its next chunk there instead of ending the data (it used to stop the run)."""
    config = all_sessions_config(tmp_path)
    instruments = load_instruments(config.data)
    reader = MarketDataActor.remote(  # type: ignore[attr-defined]
        replay_opener(config.data, instruments), 50, str(tmp_path / "ckpt"), None
    )
    feed = ChunkFeed(reader, 0, 64)

    def cut(events: Iterator[Any], before: Any = None) -> list[tuple[int, list[Any]]]:
        cutter = WindowCutter(events, window_ns=10**12, max_window_events=50)
        out = []
        for step in range(400):
            if before is not None:
                asyncio.run(before(52))
            got = cutter.next_window(step, None)
            assert got is not None
            out.append((got[1].end_ns, got[0]))
        return out

    windows = cut(feed, feed.ensure)
    assert windows == cut(iter(replay_opener(config.data, instruments)()))
    assert feed.refills > 0
    assert max(len(events) for _, events in windows) > 52
    # asked past the replay's end (a resume on changed data files): an error, not a short
    # run that ends "done"
    with pytest.raises(ray.exceptions.RayTaskError, match="fewer than the run consumed"):
        ray.get(reader.get_events.remote(10**9, 10))


def read_all_until(feed: SourcesFeed, window: int, most: int) -> list[Any]:
    async def go() -> list[Any]:
        out: list[Any] = []
        while len(out) < most:
            await feed.ensure(window)
            out.extend(itertools.islice(feed, window))
        return out

    return asyncio.run(go())
