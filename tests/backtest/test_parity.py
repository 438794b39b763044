"""Vectorized and event-driven engines give the same fills and PnL on real OHLCV."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from sapphire.agents.bar_policy import StakeConfig
from sapphire.agents.indicator import load_strategy
from sapphire.agents.indicator_agent import IndicatorAgent
from sapphire.backtest._loaders import bar_events
from sapphire.backtest.bar_gateway import BarCosts, BarGateway
from sapphire.backtest.event_driven import run_event_driven
from sapphire.backtest.vectorized import run_vectorized
from tests.agents.streams import ohlcv

RSI_LS = "sapphire.agents.strategies.rsi_bollinger:RsiBollingerLongShort"


@pytest.mark.parametrize(
    ("file", "bars", "strategy", "params", "stake"),
    [
        (
            "freqtrade_ETH-BTC_5m_2018-01.csv.gz",
            1600,
            "EmaCross",
            {"fast": 8, "slow": 21},
            {"stake_fraction": 0.5, "initial_cash": "1000"},
        ),
        (
            "basana_bitstamp_BTC-USD_1m_2020-01-01.csv",
            None,
            "EmaCross",
            {"fast": 5, "slow": 13},
            {"stake_lots": 2_000_000, "initial_cash": "10000"},
        ),
        (  # a slow EMA (tune_ema_cross.yaml searches slow up to 200): it settles later
            "nautilus_btc-perp_1m_2021-12-31_2022-02-01.csv.gz",
            6000,
            "EmaCross",
            {"fast": 19, "slow": 150},
            {"stake_fraction": 0.5, "initial_cash": "10000"},
        ),
        (  # `sapphire new-agent --bar`'s template, its window tuned past its old 20 bars
            "basana_bitstamp_BTC-USD_1m_2020-01-01.csv",
            None,
            "sapphire.templates.bar_strategy:TemplateBarStrategy",
            {"window": 30, "margin": 0.0005},
            {"stake_fraction": 0.5, "initial_cash": "10000"},
        ),
        (  # 1,091 missing candles
            "freqtrade_binance_XRP-ETH_1m_2019-10.csv.gz",
            5000,
            "EmaCross",
            {"fast": 5, "slow": 13},
            {"stake_fraction": 0.5, "initial_cash": "10"},
        ),
        (
            "basana_bitstamp_BTC-USD_1m_2020-01-01.csv",
            None,
            RSI_LS,
            {"rsi_buy": 40, "rsi_sell": 60, "bb_dev": 1.5},
            {"stake_fraction": 0.9, "initial_cash": "10000"},
        ),
    ],
)
def test_vectorized_and_event_driven_give_identical_fills_and_pnl(
    file: str, bars: int | None, strategy: str, params: dict[str, Any], stake: dict[str, Any]
) -> None:
    inst, frame = ohlcv(file, bars)
    costs = BarCosts(fee_bps=Decimal(10), slippage_bps=Decimal(3))
    stake_cfg = StakeConfig(
        stake_lots=stake.get("stake_lots"),
        stake_fraction=stake.get("stake_fraction"),
        initial_cash=Decimal(stake["initial_cash"]),
    )
    vec = run_vectorized(load_strategy(strategy, params), frame, inst, costs, stake_cfg)  # type: ignore[arg-type]
    agent = IndicatorAgent(
        "p",
        inst,
        {"strategy": strategy, "strategy_params": params, "stake": stake},
    )
    evt = run_event_driven(
        agent,
        bar_events(frame, "X"),
        BarGateway(inst, costs),
        inst,
        stake_cfg.initial_cash,  # type: ignore[arg-type]
    )
    assert len(vec.fills) >= 6, "the slice must trade"
    assert vec.fills == evt.fills
    assert vec.final_equity == evt.final_equity
    # annualised at the bar rate by both (a file with missing candles gave two Sharpes)
    assert vec.periods_per_year == evt.periods_per_year > 0
    assert vec.equity == evt.equity
    assert vec.equity_ts == evt.equity_ts  # each point at its bar's close, in both
    assert vec.final_equity != stake_cfg.initial_cash
    # the agent's own book-keeping agrees with the engine's ledger
    assert agent.core.position_lots == evt.fills[-1].position_after


def test_event_driven_bar_backtest_is_byte_for_byte_deterministic() -> None:
    inst, frame = ohlcv("basana_bitstamp_BTC-USD_1m_2020-01-01.csv", None)
    costs = BarCosts(fee_bps=Decimal(10), slippage_bps=Decimal(3))
    encoded = []
    for _ in range(2):
        agent = IndicatorAgent(
            "d", inst, {"strategy": "EmaCross", "strategy_params": {"fast": 5, "slow": 13}}
        )
        result = run_event_driven(
            agent,
            bar_events(frame, "X"),
            BarGateway(inst, costs),
            inst,  # type: ignore[arg-type]
            Decimal(10_000),
        )
        encoded.append(msgspec.msgpack.encode(result))
    assert encoded[0] == encoded[1]
