from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.agents.base import AgentConfigError
from sapphire.agents.features import microprice_ticks
from sapphire.agents.mean_reversion import MeanReversionAgent, zscore
from sapphire.model import OrderIntent, Side, Signal, Trade
from tests.agents.streams import BTCUSDT, drive, spot_quotes_trades


def trade(ts: int, px: int) -> Trade:
    return Trade(ts_event_ns=ts, symbol="BTCUSDT", price_ticks=px, qty_lots=1, taker_side=Side.BUY)


def test_microprice_leans_towards_thin_side() -> None:
    # (100*3 + 102*1) / 4 = 100.5: the big ask keeps the fair price near the bid.
    assert microprice_ticks(100, 1, 102, 3) == 100.5


def test_mean_reversion_with_spike_sells_at_hand_computed_z() -> None:
    # window [1, 2, 3, 4, 10]: mean 4, sample var (9+4+1+0+36)/4 = 12.5, z = 6/sqrt(12.5) = 1.697
    agent = MeanReversionAgent(
        "r", BTCUSDT, {"window": 5, "entry_z": 1.5, "exit_z": 0.2, "allow_short": True}
    )
    out: list[object] = []
    for i, px in enumerate((1, 2, 3, 4, 10)):
        out = list(agent.on_event(trade(i, px), i))
    assert agent.state.z == pytest.approx(6 / math.sqrt(12.5), rel=1e-12)
    assert isinstance(out[0], Signal) and out[0].strength < 0
    assert isinstance(out[1], OrderIntent) and out[1].side is Side.SELL


def test_mean_reversion_config_with_exit_above_entry_raises() -> None:
    with pytest.raises(AgentConfigError, match="exit_z"):
        MeanReversionAgent("r", BTCUSDT, {"entry_z": 1.0, "exit_z": 1.0})


@given(st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=50))
def test_zscore_from_sums_matches_direct_formula(values: list[float]) -> None:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    z = zscore(values[-1], sum(values), sum(v * v for v in values), n, 1e-6)
    if math.sqrt(var) > 1e-3 * max(1.0, max(abs(v) for v in values)):
        assert z == pytest.approx((values[-1] - mean) / math.sqrt(var), rel=1e-6, abs=1e-6)


def test_mean_reversion_on_real_stream_keeps_position_in_band() -> None:
    agent = MeanReversionAgent(
        "r", BTCUSDT, {"window": 100, "entry_z": 2.0, "order_lots": 3, "allow_short": True}
    )
    out = drive(agent, spot_quotes_trades())
    assert any(isinstance(o, OrderIntent) for o in out)
    assert abs(agent.core.position_lots) <= 3
