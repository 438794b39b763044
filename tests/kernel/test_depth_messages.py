"""A replay gives each depth message's levels as one ``BookDeltas`` event. Nothing may change
but the speed: the levels are the recording's, in its order, and the kernel trades exactly
as it does when the same levels come one ``BookDelta`` at a time (the hftbacktest
comparison's market maker on the shared USDT-M BTCUSDT day, where a message carries 68
levels on average)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
import yaml
from hypothesis import given, settings

from sapphire.agents.registry import build_agent
from sapphire.config.system import SystemConfig, parse_config
from sapphire.data.registry import open_stream
from sapphire.data.replay import grouped, merge
from sapphire.data.sample import sample_instrument
from sapphire.kernel import assembly
from sapphire.kernel.agents import AgentStage
from sapphire.kernel.runner import InProcessKernel
from sapphire.kernel.timing import Clock, Timing, Window
from sapphire.model.events import (
    MARKET_EVENT_TYPES,
    AnyMarketEvent,
    BookDelta,
    BookDeltas,
    Quote,
    Side,
    Trade,
    as_levels,
    rows_in,
)
from tests.kernel.probes import traded

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "hftbacktest_mm.yaml"
START_NS = 1_723_161_257_000_000_000


def mm_config(tmp_path: Path, seconds: int = 30, **data: Any) -> SystemConfig:
    raw: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    raw["data"]["end_ns"] = START_NS + seconds * 1_000_000_000
    raw["data"].update(data)
    raw["storage"]["root"] = str(tmp_path)
    return parse_config(raw)


def replay(config: SystemConfig) -> list[AnyMarketEvent]:
    instruments = assembly.load_instruments(config.data)
    feed = assembly.replay_opener(config.data, instruments)()
    clock, end = Clock(config.data.clock), config.data.end_ns or 1 << 62
    try:
        return [e for e in feed if clock.time_of(e) < end]  # the slice, on the run's clock
    finally:
        feed.close()


def test_the_replay_holds_the_recorded_levels_in_order(tmp_path: Path) -> None:
    config = mm_config(tmp_path)
    events = replay(config)
    groups = [e for e in events if type(e) is BookDeltas]
    assert len(groups) > 100
    assert rows_in(groups) > 20 * len(groups)  # tens of levels a message
    # the levels, one by one, are the files' own merge (no grouping) event for event
    instruments = assembly.load_instruments(config.data)
    streams = []
    for path in assembly.data_files(config.data):
        stream = open_stream(path, instruments)
        stream.select_sessions(config.data.sessions)
        streams.append(stream.tagged())
    recorded = [r.event for r in merge(streams) if r.event.ts_event_ns < (config.data.end_ns or 0)]
    assert list(as_levels(events)) == recorded
    assert rows_in(events) == len(recorded)
    for group in groups:  # one message each: complete, or cut where the recording cut it
        assert len(group.levels) > 1


@pytest.mark.parametrize("clock", ["exchange", "receive"])  # the receive clock: the general cutter
def test_messages_trade_as_their_levels_one_by_one(tmp_path: Path, clock: str) -> None:
    config = mm_config(tmp_path, clock=clock)
    events = replay(config)
    as_groups = InProcessKernel(config, "groups", events=iter(events))
    as_groups.run()
    one_by_one = InProcessKernel(config, "levels", events=iter(as_levels(events)))
    one_by_one.run()
    assert traded(as_groups) == traded(one_by_one)
    assert as_groups.summary()["fills"] > 0
    # the rows counted are the levels, however they came (events, and those whose time ran
    # backwards on the run's clock)
    counters, level_counters = as_groups.summary()["counters"], one_by_one.summary()["counters"]
    assert counters["events"] == level_counters["events"] > 0
    assert counters["clamped"] == level_counters["clamped"]
    # the product's own path (the replay feed, grouped) trades the same again
    product = InProcessKernel(config, "feed")
    product.run()
    assert traded(product) == traded(one_by_one)


def test_an_event_cap_inside_a_message_counts_rows(tmp_path: Path) -> None:
    config = mm_config(tmp_path)
    events = replay(config)
    levels = list(as_levels(events))
    # a cap that falls inside the first big message after quoting starts
    at = next(
        i
        for i, e in enumerate(levels)
        if type(e) is BookDelta and e.ts_event_ns > START_NS + 5_000_000_000 and not e.last_in_batch
    )
    cap = at + 1
    capped = msgspec.structs.replace(
        config, data=msgspec.structs.replace(config.data, max_events=cap)
    )
    as_groups = InProcessKernel(capped, "groups", events=iter(events))
    as_groups.run()
    one_by_one = InProcessKernel(capped, "levels", events=iter(levels))
    one_by_one.run()
    assert traded(as_groups) == traded(one_by_one)
    # the cap counts recorded rows (the warm-up's too), however they are grouped
    assert as_groups.cutter.state.rows == one_by_one.cutter.state.rows == cap
    assert as_groups.cutter.state.consumed < cap


def test_each_agent_gets_messages_as_it_declares() -> None:
    """An agent naming ``BookDeltas`` gets a message as one event; one reading ``BookDelta``
    (or every type, by default) gets its levels one by one, as recorded."""
    inst = sample_instrument()
    group = BookDeltas(
        ts_event_ns=10,
        symbol=inst.symbol,
        levels=((1, 100, 5), (-1, 102, 0), (-1, 103, 7)),
        final_update_id=9,
    )
    quote = Quote(
        ts_event_ns=11, symbol=inst.symbol, bid_ticks=100, bid_lots=5, ask_ticks=103, ask_lots=7
    )

    class Probe:
        def __init__(self, agent_id: str, kinds: frozenset[Any] | None) -> None:
            self.agent_id = agent_id
            self.market_events = kinds
            self.seen: list[Any] = []

        def on_event(self, event: Any, now: int) -> list[Any]:
            self.seen.append(event)
            return []

        def on_report(self, report: Any, now: int) -> list[Any]:
            return []

    every = Probe("every", None)
    deltas = Probe("deltas", frozenset({BookDelta, Quote}))
    messages = Probe("messages", MARKET_EVENT_TYPES)
    quotes = Probe("quotes", frozenset({Quote}))
    stage = AgentStage([every, deltas, messages, quotes], Timing(entry_ns=1, response_ns=1))  # type: ignore[list-item]
    stage.step(Window(step=1, start_ns=0, end_ns=100), [group, quote], {})
    assert every.seen == deltas.seen == [*group.deltas(), quote]
    assert [d.last_in_batch for d in group.deltas()] == [False, False, True]
    assert [d.side for d in group.deltas()] == [Side.BUY, Side.SELL, Side.SELL]
    assert messages.seen == [group, quote]
    assert quotes.seen == [quote]
    assert stage.state.events_seen == 4
    # the tutorial's market maker reads every event as its clock: messages whole
    grid = build_agent("grid_maker", "mm", inst, {})
    assert BookDeltas in (grid.market_events or ())  # type: ignore[attr-defined]


_level = st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 50), st.integers(0, 9))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2"]),
            st.integers(0, 3),  # time
            st.integers(0, 2),  # update id
            st.booleans(),  # last_in_batch
            _level,
            st.booleans(),  # a trade instead
        ),
        max_size=60,
    )
)
def test_grouping_gives_back_every_pair(rows: list[Any]) -> None:
    """Whatever the flags, times, ids and sessions: the groups, level by level, are the
    input pairs, and a group is one message (one session, time and id set)."""
    pairs: list[tuple[str, AnyMarketEvent]] = []
    for session, t, uid, last, (side, price, qty), trade in rows:
        if trade:
            pairs.append(
                (
                    session,
                    Trade(
                        ts_event_ns=t,
                        symbol="X",
                        price_ticks=price,
                        qty_lots=qty + 1,
                        taker_side=side,
                        trade_id=len(pairs),
                    ),
                )
            )
            continue
        delta = BookDelta(
            ts_event_ns=t,
            symbol="X",
            side=side,
            price_ticks=price,
            qty_lots=qty,
            final_update_id=uid,
            last_in_batch=last,
        )
        pairs.append((session, delta))
    out = list(grouped(iter(pairs)))
    flat = [(s, d) for s, e in out for d in as_levels([e])]
    assert flat == pairs
    for _, e in out:
        if type(e) is BookDeltas:
            assert len(e.levels) > 1
            assert all(not d.last_in_batch for d in e.deltas()[:-1])


def test_a_lost_depth_message_leaves_the_venue_no_liquidity_and_is_reported(
    tmp_path: Path,
) -> None:
    """One depth message missing from a recording: the venue's book, no longer synced, held
    every later diff and kept the prices of before the loss, and takers filled at them for
    the rest of the session (up to $34 better than the real touch), with nothing in the
    summary. Now nothing is taken from it, and the summary says so."""
    config = mm_config(tmp_path, seconds=60)
    events = replay(config)
    groups = [i for i, e in enumerate(events) if isinstance(e, BookDeltas)]
    lost = groups[len(groups) // 2]
    lost_ns = events[lost].ts_event_ns
    kernel = InProcessKernel(config, "gap", events=iter(events[:lost] + events[lost + 1 :]))
    kernel.run()
    venue: Any = kernel.venue.gateway
    assert not venue.book("BTCUSDT").is_synced  # no snapshot came after the loss
    summary = kernel.summary()
    assert summary["venue_books"] == {
        "balances_below_zero": 0,
        "liquidations": 0,
        "sequence_gaps": 1,
        "stale_snapshots": 0,
        "out_of_sync_at_end": 1,
        "never_synced": 0,  # it was synced until the loss
    }
    after = [f for f in venue.fills if f.ts_event_ns > lost_ns]
    assert all(f.is_maker for f in after)  # the frozen book gave no taker a price
    whole = InProcessKernel(config, "whole", events=iter(events))
    whole.run()
    assert whole.summary()["venue_books"]["sequence_gaps"] == 0
