"""An agent that declares ``market_events`` is not called for other event types by the
kernel's agent stage, so it must ignore them: no output and no change of state, checked
event by event on the bundled real sample (depth levels, trades and quotes merged)."""

from __future__ import annotations

from typing import Any

import pytest

from sapphire.agents.registry import build_agent
from sapphire.data.registry import stream_events
from sapphire.data.replay import merge_events
from sapphire.data.sample import event_files, sample_instrument
from sapphire.kernel.agents import AgentStage
from sapphire.kernel.timing import Timing, Window
from sapphire.model.events import BookDelta

# the demo's agents (configs/demo.yaml), each with its own declared event types
DECLARING = {
    "avellaneda_stoikov": {
        "order_amount": 0.002,
        "max_inventory": 0.02,
        "risk_factor": 0.1,
        "order_refresh_time": 1.0,
    },
    "momentum": {
        "order_lots": 2,
        "allow_short": True,
        "fast_span": 5,
        "slow_span": 20,
        "threshold_bps": 0.1,
    },
    "mean_reversion": {"order_lots": 2, "allow_short": True, "window": 20},
}


def _events(limit: int = 30_000) -> list[Any]:
    instrument = sample_instrument()
    streams = [stream_events(p, instrument) for p in event_files()]
    out = []
    for event in merge_events(streams):
        out.append(event)
        if len(out) >= limit:
            break
    return out


@pytest.mark.parametrize("kind", sorted(DECLARING))
def test_undeclared_events_change_nothing(kind: str) -> None:
    agent: Any = build_agent(kind, f"{kind}-1", sample_instrument(), DECLARING[kind])
    kinds = agent.market_events
    assert kinds is not None and BookDelta not in kinds
    skipped = traded = 0
    for event in _events():
        now = event.ts_event_ns
        if type(event) in kinds:
            traded += bool(agent.on_event(event, now))
            continue
        before = agent.snapshot()
        assert not agent.on_event(event, now), f"{kind} answered a {type(event).__name__}"
        assert agent.snapshot() == before, f"{kind} changed state on a {type(event).__name__}"
        skipped += 1
    assert skipped > 10_000  # the sample is mostly depth levels
    assert traded  # and the agent did act on the events it reads


def test_the_stage_gives_each_agent_only_its_types_and_the_same_outputs() -> None:
    """The stage's filtered calls give what calling every agent with every event gives."""
    events = _events(20_000)
    timing = Timing(feed_ns=0, decision_ns=0, entry_ns=1, response_ns=1)

    def agents() -> list[Any]:
        return [
            build_agent(kind, f"{kind}-1", sample_instrument(), params)
            for kind, params in sorted(DECLARING.items())
        ]

    staged = AgentStage(agents(), timing)
    window = Window(step=1, start_ns=events[0].ts_event_ns, end_ns=events[-1].ts_event_ns + 1)
    filtered = staged.step(window, events, {})
    every = agents()
    plain = {a.agent_id: [o for e in events for o in a.on_event(e, e.ts_event_ns)] for a in every}
    assert filtered == plain
    assert any(filtered.values())
    assert {a: x.snapshot() for a, x in staged.agents.items()} == {
        a.agent_id: a.snapshot() for a in every
    }
