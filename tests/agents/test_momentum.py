from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.agents.base import AgentConfigError
from sapphire.agents.momentum import MomentumAgent
from sapphire.model import OrderIntent, OrderType, Quote, Side, Signal, Trade
from tests.agents.streams import BTCUSDT, drive, spot_quotes_trades


def quote(ts: int, bid: int, ask: int, bid_lots: int = 1, ask_lots: int = 1) -> Quote:
    return Quote(
        ts_event_ns=ts,
        symbol="BTCUSDT",
        bid_ticks=bid,
        bid_lots=bid_lots,
        ask_ticks=ask,
        ask_lots=ask_lots,
    )


def test_momentum_with_rising_prices_emits_signal_and_buy_at_hand_computed_emas() -> None:
    agent = MomentumAgent("m", BTCUSDT, {"fast_span": 1, "slow_span": 3, "threshold_bps": 1})
    # microprice with equal sizes is the mid: 100, 110, 120.
    # fast (alpha 1) = 120; slow (alpha 0.5): 100 -> 105 -> 112.5; (120-112.5)/112.5 = 6.7 %
    assert agent.on_event(quote(1, 99, 101), 1) == ()
    assert agent.on_event(quote(2, 109, 111), 2) == ()
    out = agent.on_event(quote(3, 119, 121), 3)
    assert agent.state.fast == 120.0
    assert agent.state.slow == 112.5
    assert isinstance(out[0], Signal) and out[0].strength > 0
    assert isinstance(out[1], OrderIntent)
    assert (out[1].side, out[1].qty_lots, out[1].order_type) == (Side.BUY, 1, OrderType.MARKET)
    assert out[1].client_order_id == "m-2"


def test_momentum_with_open_order_does_not_send_another() -> None:
    agent = MomentumAgent("m", BTCUSDT, {"fast_span": 1, "slow_span": 3})
    for i, px in enumerate((100, 110, 120, 130)):
        out = agent.on_event(quote(i, px - 1, px + 1), i)
    assert out == ()  # the buy from bar 3 is still pending


def test_momentum_config_with_fast_not_below_slow_raises_clear_error() -> None:
    with pytest.raises(AgentConfigError, match="fast_span"):
        MomentumAgent("m", BTCUSDT, {"fast_span": 10, "slow_span": 10})
    with pytest.raises(AgentConfigError, match="unknown field"):
        MomentumAgent("m", BTCUSDT, {"fast_spam": 10})
    with pytest.raises(AgentConfigError, match="order_lots"):
        MomentumAgent("m", BTCUSDT, {"order_lots": 0})


def test_momentum_on_real_quotes_alternates_sides_and_stays_within_one_order() -> None:
    agent = MomentumAgent(
        "m",
        BTCUSDT,
        {
            "fast_span": 20,
            "slow_span": 200,
            "order_lots": 5,
            "allow_short": True,
            "threshold_bps": 0.02,
        },
    )
    out = drive(agent, spot_quotes_trades())
    orders = [o for o in out if isinstance(o, OrderIntent)]
    assert len(orders) >= 2
    assert all(a.side != b.side for a, b in itertools.pairwise(orders))
    assert abs(agent.core.position_lots) <= 5


@given(
    prices=st.lists(st.integers(1, 10_000), min_size=1, max_size=200),
    allow_short=st.booleans(),
)
def test_momentum_position_never_exceeds_one_order_on_any_price_path(
    prices: list[int], allow_short: bool
) -> None:
    agent = MomentumAgent(
        "m",
        BTCUSDT,
        {
            "fast_span": 2,
            "slow_span": 5,
            "threshold_bps": 0,
            "order_lots": 3,
            "allow_short": allow_short,
        },
    )
    events = [
        Trade(ts_event_ns=i, symbol="BTCUSDT", price_ticks=p, qty_lots=1, taker_side=Side.BUY)
        for i, p in enumerate(prices)
    ]
    drive(agent, events)
    low = -3 if allow_short else 0
    assert low <= agent.core.position_lots <= 3
    assert agent.core.position_lots == agent.state.regime * 3
