"""Quotes derived from depth on Ray (``data.derived_quotes``): ``sapphire run`` derives them
where each source is read (one market data, or one per shard whose sources the coordinator
merges) and trades a depth-only recording exactly as ``sapphire backtest`` does, also when
a restarted reader reopens its sources or a restored coordinator merges again from the start
and skips what it had consumed."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray

from actors.codec import decode_events
from actors.coordinator import SourcesFeed, merge_feed_stats
from actors.market_data import MarketDataActor
from sapphire.config.system import SystemConfig
from sapphire.data.derived_quotes import derived_counts
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
from sapphire.kernel.runner import InProcessKernel
from sapphire.model.events import Quote
from tests.actors.harness import Outcome, assert_same_outcome, run
from tests.data.test_derived_quotes import KRAKEN_BOOK, KRAKEN_TRADES, linear_config, venues_config
from tests.ray_local import init_local, release_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=4, include_dashboard=False, namespace="sapphire-derived-quotes")
    yield
    release_local()


def small_batches(config: SystemConfig) -> SystemConfig:
    """Chunks of 300 events: the readers are asked many times, sessions cross chunks."""
    data = msgspec.structs.replace(config.data, batch_events=300, cache=False)
    return msgspec.structs.replace(config, data=data)


def sharded(root: Path) -> SystemConfig:
    shards_ = [{"symbols": ["BYBIT:ETHUSDT"]}, {"symbols": ["KRAKEN:XMR/USD"]}]
    return small_batches(venues_config(root, [KRAKEN_BOOK, KRAKEN_TRADES], shards=shards_))


def assert_as_one_process(outcome: Outcome, config: SystemConfig) -> None:
    kernel = InProcessKernel(config, "in-process")
    kernel.run()
    summary = kernel.summary()
    for k, venue in enumerate(outcome.venues):
        want = list(kernel.venues[k].gateway.fills)  # type: ignore[attr-defined]
        assert list(venue.fills) == want, f"shard {k}: venue fills differ"
        assert want, f"shard {k} never traded"
    for key in ("agents", "fills", "orders_by_status", "risk_rejections", "input_rejected"):
        assert outcome.summary[key] == summary[key], key
    derived = derived_counts(summary["input_rejected"])
    assert derived and min(derived.values()) > 0


def test_a_depth_only_run_on_ray_trades_as_one_process(ray_local: None, tmp_path: Path) -> None:
    config = small_batches(linear_config(tmp_path))
    baseline = run(config, "derived-ray")
    assert baseline.readers == 1
    assert_as_one_process(baseline, config)
    # a restarted reader reopens the replay; a restored coordinator asks the one reader from
    # the offset it had consumed (the replay fast-forwarded, its quotes derived again from
    # the file's start): both in one run
    outcome = run(
        config, "derived-kills", kills=[("market_data", 5, 0.02), ("coordinator", 40, 0.02)]
    )
    assert outcome.restarted == {"market_data": True, "coordinator": True}
    assert_same_outcome(baseline, outcome)
    assert outcome.summary["input_rejected"] == baseline.summary["input_rejected"]


def test_a_sharded_depth_only_run_on_ray_trades_as_one_process(
    ray_local: None, tmp_path: Path
) -> None:
    config = sharded(tmp_path)
    baseline = run(config, "derived-shards")
    assert baseline.readers == 2  # each shard's market data derived its own venue's quotes
    assert_as_one_process(baseline, config)
    kills = [("reader:1", 3, 0.02), ("coordinator", 40, 0.02)]  # one run, one after the other
    outcome = run(config, "derived-shards-kills", kills=kills)
    assert outcome.restarted == {"reader:1": True, "coordinator": True}
    assert_same_outcome(baseline, outcome)
    assert outcome.summary["input_rejected"] == baseline.summary["input_rejected"]


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


def test_every_reader_gives_the_one_replays_events_and_counts(
    ray_local: None, tmp_path: Path
) -> None:
    config = sharded(tmp_path)
    instruments = load_instruments(config.data)
    want = list(replay_opener(config.data, instruments)())
    assert {e.symbol for e in want if type(e) is Quote} == {"BYBIT:ETHUSDT", "KRAKEN:XMR/USD"}
    # one reader of the merged replay, asked from any offset (a restored coordinator's)
    one = MarketDataActor.remote(  # type: ignore[attr-defined]
        replay_opener(config.data, instruments), 300, str(tmp_path / "ckpt-one"), None
    )
    for offset in (0, len(want) // 2, len(want) - 10):
        data, n = ray.get(one.get_events.remote(offset, 500))
        assert decode_events(data) == want[offset : offset + 500] and n == len(want[offset:][:500])
    # each shard's reader serves its sources; the coordinator's merge gives the same order
    owners = source_shards(config, shards(config, instruments))
    assert owners == [0, 1, 1]
    readers = [
        MarketDataActor.remote(  # type: ignore[attr-defined]
            sources_opener(
                config.data, instruments, tuple(i for i, o in enumerate(owners) if o == k)
            ),
            300,
            str(tmp_path / "ckpt"),
            None,
            market_data_kind(k),
        )
        for k in range(2)
    ]
    key, groups = replay_key(config.data.clock), merge_groups(config.data)
    feed = SourcesFeed(readers, owners, groups, key, 211, skip=0)
    assert read_all(feed, 97) == want
    skip = 2 * len(want) // 3  # a restored coordinator's: merged again, that many dropped
    assert read_all(SourcesFeed(readers, owners, groups, key, 500, skip=skip), 300) == want[skip:]
    # the derived quotes reported are those of what was consumed, as one reader counts them
    for consumed in (len(want) // 2, len(want)):
        replay = replay_opener(config.data, instruments)()
        assert len(list(itertools.islice(replay, consumed))) == consumed
        expected = replay.report(consumed)
        taken = feed.log.taken(consumed)
        asks = [{i: n for i, n in enumerate(taken) if owners[i] == k} for k in range(2)]
        stats = ray.get([r.stats.remote(a) for r, a in zip(readers, asks, strict=True)])
        got = merge_feed_stats(stats)
        assert (got["rejected"], got["sessions_missing"]) == expected
        assert derived_counts(expected[0])
