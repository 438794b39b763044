"""freqtrade-style strategies: signal columns, and bar-by-bar signals equal whole-frame ones."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from sapphire.agents.indicator import (
    IndicatorStrategy,
    StrategyError,
    compute_signals,
    load_strategy,
)
from sapphire.agents.indicator_agent import IndicatorAgent
from tests.agents.streams import bars, ohlcv


class DropsRows(IndicatorStrategy):
    def populate_indicators(self, df: pl.DataFrame) -> pl.DataFrame:
        return df.head(3)


def test_compute_signals_adds_all_signal_columns_as_int8() -> None:
    _, frame = ohlcv("basana_bitstamp_BTC-USD_1m_2020-01-01.csv")
    out = compute_signals(load_strategy("EmaCross", {"fast": 5, "slow": 20}), frame)  # type: ignore[arg-type]
    for col in ("enter_long", "exit_long", "enter_short", "exit_short"):
        assert out[col].dtype == pl.Int8
    assert out["enter_long"].sum() > 5
    assert out["enter_short"].sum() == 0
    # a cross up is never also a cross down
    assert (out["enter_long"] * out["exit_long"]).sum() == 0


def test_broken_strategy_and_bad_names_raise_strategy_error() -> None:
    _, frame = ohlcv("basana_bitstamp_BTC-USD_1m_2020-01-01.csv")
    with pytest.raises(StrategyError, match="number of rows"):
        compute_signals(DropsRows(), frame)  # type: ignore[arg-type]
    with pytest.raises(StrategyError, match="unknown strategy"):
        load_strategy("NoSuch")
    with pytest.raises(StrategyError, match="not an IndicatorStrategy"):
        load_strategy("polars:DataFrame")
    with pytest.raises(StrategyError, match="rsi_buy"):
        load_strategy("RsiBollinger", {"rsi_buy": 80, "rsi_sell": 70})


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("EmaCross", {"fast": 12, "slow": 26}),
        ("RsiBollingerLongShort", {}),
        # a band longer than the default warm-up: the window must hold it (it held 501 bars
        # and a null band, which polars compared as above every close)
        ("RsiBollingerLongShort", {"bb_period": 800, "rsi_buy": 45, "rsi_sell": 55}),
    ],
)
def test_bar_by_bar_window_signals_equal_whole_frame_signals(
    name: str, params: dict[str, Any]
) -> None:
    inst, stream = bars("basana_bitstamp_BTC-USD_1m_2020-01-01.csv")
    _, frame = ohlcv("basana_bitstamp_BTC-USD_1m_2020-01-01.csv")
    target = (
        name
        if name != "RsiBollingerLongShort"
        else ("sapphire.agents.strategies.rsi_bollinger:RsiBollingerLongShort")
    )
    strategy = load_strategy(target, params)
    whole = compute_signals(strategy, frame)  # type: ignore[arg-type]
    agent = IndicatorAgent("a", inst, {"strategy": target, "strategy_params": params})
    start = strategy.startup_candle_count
    checked = 0
    for i, bar in enumerate(stream[: start + 300]):
        agent.on_event(bar, bar.ts_event_ns)
        if i >= start:
            row = whole.row(i, named=True)
            expect = (row["enter_long"], row["exit_long"], row["enter_short"], row["exit_short"])
            assert tuple(int(x) for x in agent._last_signals()) == expect, i
            checked += 1
    assert checked == 300
    assert len(agent.state.ts) == agent.window
