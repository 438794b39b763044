from __future__ import annotations

import pytest

from sapphire.agents import as_model
from sapphire.agents.avellaneda_stoikov import AvellanedaStoikovAgent
from sapphire.agents.base import AgentConfigError
from sapphire.model import CancelIntent, OrderFilled, OrderIntent, Quote, Side, TimeInForce
from tests.agents.streams import BTCUSDT, drive, spot_quotes_trades

SEC = 1_000_000_000
PARAMS = {
    "order_amount": 0.001,
    "max_inventory": 0.003,
    "risk_factor": 0.1,
    "kappa": 1.5,
    "intensity_a": 2.0,
    "initial_sigma": 2.0,
    "order_refresh_time": 1.0,
}


def quote(ts: int, bid: int, ask: int) -> Quote:
    return Quote(
        ts_event_ns=ts, symbol="BTCUSDT", bid_ticks=bid, bid_lots=5, ask_ticks=ask, ask_lots=5
    )


def test_first_quote_posts_glft_bid_and_ask_post_only() -> None:
    agent = AvellanedaStoikovAgent("mm", BTCUSDT, PARAMS)
    out = agent.on_event(quote(SEC, 10_000, 10_010), SEC)
    # flat (q=0): depths c1 + sigma*c2/2 = 0.645385 + 0.216349 = 0.861734 ticks on both sides
    bid_d, ask_d = as_model.glft_depths(0.0, 0.1, 2.0, 1.5, 2.0)
    assert bid_d == pytest.approx(0.861734, abs=1e-6)
    assert ask_d == pytest.approx(bid_d)
    orders = [o for o in out if isinstance(o, OrderIntent)]
    assert [(o.side, o.limit_ticks, o.tif, o.qty_lots) for o in orders] == [
        (Side.BUY, 10_004, TimeInForce.POST_ONLY, 100),  # floor(10005 - 0.86)
        (Side.SELL, 10_006, TimeInForce.POST_ONLY, 100),  # ceil(10005 + 0.86)
    ]


def test_finite_horizon_proposal_matches_reservation_price_and_spread() -> None:
    agent = AvellanedaStoikovAgent(
        "mm", BTCUSDT, {**PARAMS, "execution_timeframe": "finite", "closing_time": 10.0}
    )
    agent.on_event(quote(SEC, 10_000, 10_010), SEC)
    agent.core.position_lots = 200  # q = 2 order amounts long
    bid, ask = agent.proposal(SEC + 5 * SEC)  # 5 s left of the 10 s cycle
    # r = 10005 - 2*0.1*4*5 = 10001; spread = 0.1*4*5 + 20 ln(16/15) = 2 + 1.290770 = 3.290770
    assert (bid + ask) / 2 == pytest.approx(10_001.0)
    assert ask - bid == pytest.approx(3.2907704, abs=1e-6)


def test_stale_quotes_are_cancelled_after_refresh_time_and_full_side_stops() -> None:
    agent = AvellanedaStoikovAgent("mm", BTCUSDT, PARAMS)
    first = agent.on_event(quote(SEC, 10_000, 10_010), SEC)
    assert agent.on_event(quote(SEC + SEC // 2, 10_100, 10_110), SEC + SEC // 2) == ()
    buy = next(o for o in first if isinstance(o, OrderIntent) and o.side is Side.BUY)
    for _ in range(3):  # fill the bid three times: +300 lots = max_inventory
        agent.on_report(
            OrderFilled(
                ts_event_ns=SEC,
                client_order_id=buy.client_order_id,
                agent_id="mm",
                symbol="BTCUSDT",
                side=Side.BUY,
                price_ticks=10_004,
                qty_lots=100,
                fee_quote=0,
                is_maker=True,
                fill_id="x",
                leaves_lots=100,
            ),
            SEC,
        )  # type: ignore[arg-type]
    out = agent.on_event(quote(3 * SEC, 10_100, 10_110), 3 * SEC)
    assert {o.target_client_order_id for o in out if isinstance(o, CancelIntent)} == {
        buy.client_order_id,
        "mm-2",
    }
    new = [o for o in out if isinstance(o, OrderIntent)]
    assert [o.side for o in new] == [Side.SELL]  # long max_inventory: no new bid
    # long inventory skews the ask down towards the mid
    assert new[0].limit_ticks is not None and new[0].limit_ticks < 10_105 + 1


def test_config_with_order_above_max_inventory_raises() -> None:
    with pytest.raises(AgentConfigError, match="order_amount"):
        AvellanedaStoikovAgent("mm", BTCUSDT, {"order_amount": 1.0, "max_inventory": 0.5})
    with pytest.raises(AgentConfigError, match="below one lot"):
        AvellanedaStoikovAgent("mm", BTCUSDT, {"order_amount": 1e-9, "max_inventory": 0.5})
    with pytest.raises(AgentConfigError):
        AvellanedaStoikovAgent("mm", BTCUSDT, {**PARAMS, "inventory_target_base_pct": 120})


def test_on_real_stream_estimates_intensity_and_volatility() -> None:
    agent = AvellanedaStoikovAgent("mm", BTCUSDT, {**PARAMS, "refit_every": 200})
    out = drive(agent, spot_quotes_trades())
    assert agent.state.vol_ready and agent.sigma() > 0
    assert agent.state.kappa != PARAMS["kappa"]  # refitted from real trades
    assert agent.state.kappa > 0 and agent.state.intensity_a > 0
    quotes = [o for o in out if isinstance(o, OrderIntent)]
    assert quotes and all(o.tif is TimeInForce.POST_ONLY for o in quotes)
    assert all((o.limit_ticks or 0) > 0 for o in quotes)
