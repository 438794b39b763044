"""Snapshot/restore: a restored agent continues exactly like the uninterrupted one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from sapphire.agents.base import Agent, AgentStateError
from sapphire.agents.registry import build_agent
from sapphire.model.events import AnyMarketEvent
from tests.agents.streams import BTCUSDT, bars, drive, spot_quotes_trades

TICK_AGENTS = {
    "momentum": {"fast_span": 10, "slow_span": 100, "threshold_bps": 0.02, "allow_short": True},
    "mean_reversion": {"window": 80, "entry_z": 1.5, "exit_z": 0.3, "allow_short": True},
    "avellaneda_stoikov": {"order_amount": 0.001, "max_inventory": 0.01, "refit_every": 100},
    "grid_maker": {"half_spread_ticks": 50, "order_lots": 100, "max_position_lots": 500},
}


def _check_round_trip(make: Callable[[], Agent], events: Sequence[AnyMarketEvent]) -> None:
    cut = len(events) // 3
    reference = make()
    expected = drive(reference, events)
    first = make()
    before = drive(first, events[:cut])
    restored = make()
    restored.restore(first.snapshot())
    after = drive(restored, events[cut:])
    assert len(after) > 0, "the second half must exercise the agent"
    assert before + after == expected
    assert restored.snapshot() == reference.snapshot()


@pytest.mark.parametrize("kind", sorted(TICK_AGENTS))
def test_tick_agent_restored_mid_stream_emits_the_same_outputs(kind: str) -> None:
    events = spot_quotes_trades()
    _check_round_trip(lambda: build_agent(kind, "a", BTCUSDT, TICK_AGENTS[kind]), events)


def test_indicator_agent_restored_mid_stream_emits_the_same_outputs() -> None:
    inst, stream = bars("basana_bitstamp_BTC-USD_1m_2020-01-01.csv", 900)
    params = {"strategy_params": {"fast": 5, "slow": 12}, "stake": {"stake_lots": 1000}}
    _check_round_trip(lambda: build_agent("indicator:EmaCross", "a", inst, params), stream)


def test_restore_with_garbage_raises_instead_of_corrupting() -> None:
    agent = build_agent("momentum", "a", BTCUSDT, {})
    good = agent.snapshot()
    with pytest.raises(AgentStateError, match="cannot restore MomentumAgent snapshot"):
        agent.restore(b"\x93garbage")
    agent.restore(good)
    assert agent.snapshot() == good
