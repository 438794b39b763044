"""The compiled-graph fast path trades exactly like its pure objects run in one process."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import ray

from actors import wiring
from actors.fastpath import FastPath, replay_events
from sapphire.config.system import SystemConfig
from sapphire.coordination.core import CoordinatorCore
from sapphire.model.events import AnyMarketEvent
from sapphire.model.orders import CancelOrder, SubmitOrder
from tests.actors.harness import make_config

TICKS = 400
EVENTS_PER_TICK = 30  # the sample's agents trade rarely: a few fills need ~12k events


def reference(
    config: SystemConfig, events: Sequence[AnyMarketEvent], per_tick: int
) -> tuple[Any, CoordinatorCore]:
    """The same pure objects driven by hand, one tick at a time, no codec, no Ray."""
    instruments = wiring.load_instruments(config.data)
    agents = {s.id: wiring.agent_builder(s, instruments[s.symbol])() for s in config.agents}
    core = CoordinatorCore(
        instruments,
        config.risk,
        Decimal(config.capital_quote),
        {s.id: s.weight for s in config.agents},
        config.aggregation,
    )
    venue = wiring.gateway_builder(config.exchange, instruments)()
    pending: list[Any] = []
    now_ns = 0
    stream = iter(events)
    batches: Iterator[list[AnyMarketEvent]] = iter(lambda: list(islice(stream, per_tick)), [])
    for batch in [*batches, *([[]] * 16)]:
        if not batch and not pending:
            break  # the venue has nothing more to say at the last event's time
        for event in batch:
            now_ns = max(now_ns, event.ts_recv_ns or event.ts_event_ns)
        outputs: dict[str, list[Any]] = {}
        for agent_id in sorted(agents):
            agent, out = agents[agent_id], []
            for report in pending:
                if report.agent_id == agent_id:
                    out.extend(agent.on_report(report, report.ts_event_ns))
            for event in batch:
                out.extend(agent.on_event(event, event.ts_event_ns))
            outputs[agent_id] = out
        result = core.step(batch, pending, outputs, now_ns)
        for event in batch:
            venue.on_market_event(event)
        for command in result.commands:
            if isinstance(command, SubmitOrder):
                venue.submit(command, now_ns)
            elif isinstance(command, CancelOrder):
                venue.cancel(command, now_ns)
        pending = list(venue.poll(now_ns))
    return venue, core


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[SystemConfig, list[AnyMarketEvent]]:
    config = make_config(tmp_path_factory.mktemp("fastpath"))
    return config, replay_events(config, TICKS * EVENTS_PER_TICK)


@pytest.fixture(scope="module")
def expected(setup: tuple[SystemConfig, list[AnyMarketEvent]]) -> tuple[Any, CoordinatorCore]:
    return reference(*setup, EVENTS_PER_TICK)


def assert_same(venue: Any, summary: dict[str, Any], want: tuple[Any, CoordinatorCore]) -> None:
    want_venue, want_core = want
    assert len(want_venue.fills) >= 3, "the slice must trade for the comparison to mean much"
    assert list(venue.fills) == list(want_venue.fills)
    assert venue.orders() == want_venue.orders()
    assert summary["fills"] == want_core.fill_count
    assert summary["orders_by_status"] == want_core.journal.counts_by_status()


@pytest.mark.parametrize("agent_actors", [None, 1])
def test_local_mode_trades_like_the_pure_objects(
    setup: tuple[SystemConfig, list[AnyMarketEvent]],
    expected: tuple[Any, CoordinatorCore],
    agent_actors: int | None,
) -> None:
    config, events = setup
    path = FastPath(config, mode="local", agent_actors=agent_actors)
    ticks = list(path.run(events, EVENTS_PER_TICK))
    assert len(ticks) >= TICKS
    assert sum(t.commands for t in ticks) > 0
    assert_same(*path.close(), expected)


def test_bad_mode_agent_actors_or_no_agents_are_refused(
    setup: tuple[SystemConfig, list[AnyMarketEvent]], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="mode"):
        FastPath(setup[0], mode="turbo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="agent_actors"):
        FastPath(setup[0], mode="local", agent_actors=0)
    with pytest.raises(wiring.WiringError, match="agent"):
        FastPath(make_config(tmp_path, agents=[]), mode="local")


@pytest.mark.slow
def test_compiled_graph_trades_like_the_pure_objects_and_stamps_each_hop(
    setup: tuple[SystemConfig, list[AnyMarketEvent]], expected: tuple[Any, CoordinatorCore]
) -> None:
    config, events = setup
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="sapphire-fastpath")
    try:
        path = FastPath(config, mode="compiled")
        ticks = list(path.run(events, EVENTS_PER_TICK))
        assert_same(*path.close(), expected)
    finally:
        ray.shutdown()
    assert len(ticks) >= TICKS
    for t in ticks:
        assert t.started < t.risk_done < t.venue_done < t.returned
    assert sum(len(t.reports()) for t in ticks) > 0
