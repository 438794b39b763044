from __future__ import annotations

import math
from decimal import Decimal

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


def test_first_volatility_sample_is_weighed_against_initial_sigma() -> None:
    # one tick in a microsecond is a variance rate of 1e6 ticks^2/s: taken whole, sigma was
    # ~1000 ticks/sqrt(s) for a half-life and the quotes sat hundreds of ticks off the book
    agent = AvellanedaStoikovAgent("mm", BTCUSDT, {**PARAMS, "volatility_halflife": 30.0})
    agent.on_event(quote(SEC, 10_000, 10_010), SEC)
    agent.on_event(quote(SEC + 1_000, 10_001, 10_011), SEC + 1_000)
    assert agent.state.vol_ready
    assert 2.0 <= agent.sigma() < 4.0  # the prior, nudged by one tiny-weight sample
    still = AvellanedaStoikovAgent("mm", BTCUSDT, PARAMS)
    still.on_event(quote(SEC, 10_000, 10_010), SEC)
    still.on_event(quote(2 * SEC, 10_000, 10_010), 2 * SEC)  # an unchanged mid is not sigma 0
    assert still.sigma() == pytest.approx(2.0 * math.sqrt(0.5 ** (1 / 30.0)), rel=1e-9)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"risk_factor": math.inf}, "risk_factor must be finite"),
        ({"kappa": math.nan}, "kappa"),
        ({"trading_intensity_buffer_size": 50, "refit_every": 100}, "never run"),
    ],
)
def test_nonsense_parameters_are_refused_with_their_field(
    params: dict[str, float], field: str
) -> None:
    with pytest.raises(AgentConfigError, match=field):
        AvellanedaStoikovAgent("mm", BTCUSDT, {**PARAMS, **params})


def test_orders_being_cancelled_count_against_max_inventory() -> None:
    # max two orders long: one filled, one bid working. A requote cancels the stale bid; its
    # replacement waits for the cancel, else both could fill (three orders long).
    agent = AvellanedaStoikovAgent(
        "mm", BTCUSDT, {**PARAMS, "order_amount": 0.001, "max_inventory": 0.002}
    )
    first = agent.on_event(quote(SEC, 10_000, 10_010), SEC)
    bid = next(o for o in first if isinstance(o, OrderIntent) and o.side is Side.BUY)
    agent.on_report(_filled(bid), SEC)
    second = agent.on_event(quote(2 * SEC, 10_100, 10_110), 2 * SEC)
    bids = [o for o in second if isinstance(o, OrderIntent) and o.side is Side.BUY]
    assert len(bids) == 1  # position 1 + a new bid 1 <= 2
    third = agent.on_event(quote(3 * SEC, 10_200, 10_210), 3 * SEC)
    assert [o.target_client_order_id for o in third if isinstance(o, CancelIntent)].count(
        bids[0].client_order_id
    ) == 1
    assert not [o for o in third if isinstance(o, OrderIntent) and o.side is Side.BUY]
    for fill in (bids[0],):
        agent.on_report(_filled(fill), 3 * SEC)
    assert agent.core.position_lots <= agent.max_lots


def _filled(intent: OrderIntent) -> OrderFilled:
    return OrderFilled(
        ts_event_ns=intent.ts_event_ns,
        client_order_id=intent.client_order_id,
        agent_id=intent.agent_id,
        symbol=intent.symbol,
        side=intent.side,
        price_ticks=intent.limit_ticks or 0,
        qty_lots=intent.qty_lots,
        fee_quote=Decimal(0),
        is_maker=True,
        fill_id=f"f-{intent.client_order_id}",
    )


def test_a_quote_within_the_limit_is_kept_not_cancelled_and_reposted() -> None:
    # counting a kept quote as new exposure cancelled it at every refresh and posted it
    # again once the cancel came back (order_amount == max_inventory: from flat)
    agent = AvellanedaStoikovAgent(
        "mm", BTCUSDT, {**PARAMS, "order_amount": 0.001, "max_inventory": 0.001}
    )
    outs = [agent.on_event(quote(i * SEC, 10_000, 10_010), i * SEC) for i in range(1, 6)]
    assert [type(o).__name__ for o in outs[0]] == ["OrderIntent", "OrderIntent"]
    assert all(out == [] for out in outs[1:])  # the same book: both quotes stay
