"""The indicator agent's fast paths: the primed signal table and the window buffer."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from sapphire.agents.indicator import StrategyError
from sapphire.agents.indicator_agent import IndicatorAgent
from sapphire.backtest._loaders import bar_events
from sapphire.backtest.bar_gateway import BarCosts, BarGateway
from sapphire.backtest.event_driven import run_event_driven
from tests.agents.streams import ohlcv

FILE = "basana_bitstamp_BTC-USD_1m_2020-01-01.csv"
CONFIG = {
    "strategy": "EmaCross",
    "strategy_params": {"fast": 5, "slow": 13},
    "stake": {"stake_fraction": 0.5, "initial_cash": "10000"},
}


def test_primed_agent_trades_exactly_like_the_window_agent_and_skips_polars() -> None:
    inst, frame = ohlcv(FILE)
    costs = BarCosts(fee_bps=Decimal(10), slippage_bps=Decimal(3))
    results = []
    for primed in (False, True):
        agent = IndicatorAgent("p", inst, CONFIG)
        if primed:
            assert agent.prime(frame) == frame.height  # type: ignore[arg-type]
            # the window is never recomputed: a strategy whose populate fails proves it
            agent.strategy.populate_indicators = None  # type: ignore[assignment,method-assign]
        results.append(
            run_event_driven(
                agent,
                bar_events(frame, "X"),  # type: ignore[arg-type]
                BarGateway(inst, costs),
                inst,
                Decimal(10_000),
            )
        )
    window, primed_result = results
    assert len(window.fills) >= 6
    assert primed_result.fills == window.fills
    assert primed_result.equity == window.equity


def test_primed_table_is_ignored_for_bars_that_differ_from_it() -> None:
    inst, frame = ohlcv(FILE)
    events = list(bar_events(frame, "X"))  # type: ignore[arg-type]
    agent = IndicatorAgent("p", inst, CONFIG)
    agent.prime(frame.head(500))  # type: ignore[attr-defined]
    calls = 0
    populate = agent.strategy.populate_indicators

    def counting(df):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return populate(df)

    agent.strategy.populate_indicators = counting  # type: ignore[method-assign]
    for bar in events[:520]:
        agent.on_event(bar, bar.ts_event_ns)
    assert calls == 20  # bars 500..519 lie outside the primed history
    # a bar at a primed timestamp with another close is recomputed, not looked up
    primed_ts = next(
        e.ts_event_ns for e in events[400:500] if e.close_ticks != events[520].close_ticks
    )
    moved = msgspec.structs.replace(events[520], ts_event_ns=primed_ts)
    agent.on_event(moved, moved.ts_event_ns)
    assert calls == 21


def test_prime_needs_integer_closes() -> None:
    inst, frame = ohlcv(FILE)
    agent = IndicatorAgent("p", inst, CONFIG)
    with pytest.raises(StrategyError, match="close_ticks"):
        agent.prime(frame.drop("close_ticks"))  # type: ignore[attr-defined]


def test_restored_agent_rebuilds_its_window_buffer_and_continues_identically() -> None:
    inst, frame = ohlcv(FILE)
    events = list(bar_events(frame, "X"))  # type: ignore[arg-type]
    # a small window makes the double buffer wrap several times
    config = {**CONFIG, "window_extra": 3}
    reference = IndicatorAgent("r", inst, config)
    first = IndicatorAgent("r", inst, config)
    signals_ref, signals_restored = [], []
    for bar in events[:900]:
        reference.on_event(bar, bar.ts_event_ns)
        first.on_event(bar, bar.ts_event_ns)
    second = IndicatorAgent("r", inst, config)
    second.restore(first.snapshot())
    for bar in events[900:1300]:
        reference.on_event(bar, bar.ts_event_ns)
        second.on_event(bar, bar.ts_event_ns)
        signals_ref.append(reference._last_signals())
        signals_restored.append(second._last_signals())
    assert signals_restored == signals_ref
    assert any(any(s) for s in signals_ref)
    assert second.snapshot() == reference.snapshot()
