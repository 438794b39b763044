"""The basis agent on hand-built events: an inverse BTCUSD quote leg (BTC-settled, 1-USD
contracts) against a linear ETHUSDT hedge leg (USDT-settled, 0.01 ETH lots)."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from sapphire.agents.base import AgentConfigError
from sapphire.agents.basis import BasisAgent
from sapphire.agents.registry import build_agent, kinds
from sapphire.data.instruments import load_instrument_file
from sapphire.model.events import BookDelta, BookSnapshot, Side, Trade
from sapphire.model.orders import (
    CancelIntent,
    OrderDenied,
    OrderFilled,
    OrderIntent,
    OrderType,
    RejectReason,
)

ROOT = Path(__file__).resolve().parents[2]
BTC = msgspec.structs.replace(
    load_instrument_file(ROOT / "configs/instruments/bybit-inverse-BTCUSD.json"),
    symbol="INV:BTCUSD",
)
ETH = msgspec.structs.replace(
    load_instrument_file(ROOT / "configs/instruments/bybit-linear-ETHUSDT.json"),
    symbol="LIN:ETHUSDT",
)
LEGS = {BTC.symbol: BTC, ETH.symbol: ETH}
PARAMS = {
    "hedge_symbol": ETH.symbol,
    "order_lots": 500,
    "entry_bps": 2.0,
    "exit_bps": 0.5,
    "mean_span": 10,
    "warmup": 3,
}


def book(symbol: str, bid: int, ask: int, ts: int) -> BookSnapshot:
    return BookSnapshot(
        ts_event_ns=ts, symbol=symbol, bids=((bid, 10_000), (bid - 1, 10)), asks=((ask, 10_000),)
    )


def agent(**params: object) -> BasisAgent:
    built = build_agent("basis", "basis", BTC, {**PARAMS, **params}, LEGS)
    assert isinstance(built, BasisAgent)
    return built


def warm(a: BasisAgent) -> int:
    """Both legs quiet at 60,000 USD and 2,400 USDT; returns the next time."""
    ts = 1
    for _ in range(5):
        assert not a.on_event(book(BTC.symbol, 120_000, 120_001, ts), ts)
        assert not a.on_event(book(ETH.symbol, 48_000, 48_001, ts + 1), ts + 1)
        ts += 2
    return ts


def test_rich_quote_leg_is_sold_at_the_touch_and_each_fill_is_hedged_in_usd() -> None:
    a = agent()
    ts = warm(a)
    # BTC up 10 bps against ETH: the quote leg is rich -> short 500 contracts, joining the ask
    out = a.on_event(book(BTC.symbol, 120_120, 120_121, ts), ts)
    assert a.state.deviation_bps > 2.0
    assert len(out) == 1 and isinstance(out[0], OrderIntent)
    sell = out[0]
    assert (sell.symbol, sell.side, sell.qty_lots, sell.limit_ticks) == (
        BTC.symbol,
        Side.SELL,
        500,
        120_121,
    )
    # filled as maker: the hedge buys ETH worth the same USD, at market, on the other leg
    fill = OrderFilled(
        ts_event_ns=ts + 10,
        agent_id="basis",
        client_order_id=sell.client_order_id,
        symbol=BTC.symbol,
        side=Side.SELL,
        price_ticks=120_121,
        qty_lots=500,
        leaves_lots=0,
        fee_quote=BTC.fee_quote(120_121, 500, maker=True),
        is_maker=True,
        fill_id="f1",
    )
    hedges = a.on_report(fill, ts + 10)
    assert a.core.position_lots == -500
    assert len(hedges) == 1 and isinstance(hedges[0], OrderIntent)
    hedge = hedges[0]
    assert hedge.symbol == ETH.symbol and hedge.side is Side.BUY
    assert hedge.order_type is OrderType.MARKET
    # 500 USD / 2,400.025 USD per ETH = 0.2083 ETH -> 21 lots of 0.01
    assert hedge.qty_lots == 21 == a.hedge_target_lots()
    # the hedge's fill is booked on the hedge leg, not on the quote leg's book-keeping
    hedge_fill = msgspec.structs.replace(
        fill,
        client_order_id=hedge.client_order_id,
        symbol=ETH.symbol,
        side=Side.BUY,
        price_ticks=48_001,
        qty_lots=21,
        is_maker=False,
        fill_id="f2",
    )
    assert not a.on_report(hedge_fill, ts + 20)
    assert (a.state.hedge_position_lots, a.core.position_lots, a.rejections) == (21, -500, 0)
    assert a.state.hedge_open == {}
    # back to the mean: the short is bought back (a quote joining the bid)
    ts += 30
    out = []
    for i in range(20):
        out = a.on_event(book(BTC.symbol, 120_000, 120_001, ts + i), ts + i)
        if out:
            break
    assert abs(a.state.deviation_bps) < 2.0
    assert len(out) == 1 and isinstance(out[0], OrderIntent)
    assert (out[0].side, out[0].qty_lots, out[0].limit_ticks) == (Side.BUY, 500, 120_000)


def test_cheap_quote_leg_is_bought_and_a_moved_touch_requotes() -> None:
    a = agent()
    ts = warm(a)
    out = a.on_event(book(BTC.symbol, 119_880, 119_881, ts), ts)
    assert a.state.regime == 1
    assert isinstance(out[0], OrderIntent) and out[0].side is Side.BUY
    assert out[0].limit_ticks == 119_880
    # the bid moves away (a delta deletes our level, the next one is the touch): cancel
    delta = BookDelta(
        ts_event_ns=ts + 1, symbol=BTC.symbol, side=Side.BUY, price_ticks=119_880, qty_lots=0
    )
    out = a.on_event(delta, ts + 1)
    assert len(out) == 1 and isinstance(out[0], CancelIntent)
    # nothing new until the cancel is confirmed
    assert not a.on_event(book(BTC.symbol, 119_870, 119_871, ts + 2), ts + 2)
    # trades and other symbols do not move the books
    trade = Trade(
        ts_event_ns=ts + 3, symbol=BTC.symbol, price_ticks=1, qty_lots=1, taker_side=Side.SELL
    )
    assert not a.on_event(trade, ts + 3)
    assert not a.on_event(book("OTHER", 1, 2, ts + 3), ts + 3)


def test_hedge_refused_by_risk_waits_before_trying_again() -> None:
    a = agent(aggressive=True)
    ts = warm(a)
    out = a.on_event(book(BTC.symbol, 120_120, 120_121, ts), ts)
    sell = out[0]
    assert isinstance(sell, OrderIntent) and sell.order_type is OrderType.MARKET
    fill = OrderFilled(
        ts_event_ns=ts,
        agent_id="basis",
        client_order_id=sell.client_order_id,
        symbol=BTC.symbol,
        side=Side.SELL,
        price_ticks=120_120,
        qty_lots=500,
        leaves_lots=0,
        fee_quote=BTC.fee_quote(120_120, 500, maker=False),
        is_maker=False,
        fill_id="f1",
    )
    hedge = a.on_report(fill, ts)[0]
    assert isinstance(hedge, OrderIntent)
    denied = OrderDenied(
        ts_event_ns=ts,
        agent_id="basis",
        client_order_id=hedge.client_order_id,
        symbol=ETH.symbol,
        reason=RejectReason.RISK_MAX_NOTIONAL,
    )
    assert not a.on_report(denied, ts + 1)
    # not on the next event (within hedge_retry_ns), but after it
    assert not [o for o in a.on_event(book(ETH.symbol, 48_000, 48_001, ts + 2), ts + 2)]
    later = ts + 2 + 1_000_000_000
    retry = a.on_event(book(ETH.symbol, 48_000, 48_001, later), later)
    assert [o.symbol for o in retry if isinstance(o, OrderIntent)] == [ETH.symbol]


def test_snapshot_restores_books_spread_and_both_legs() -> None:
    a = agent()
    ts = warm(a)
    a.on_event(book(BTC.symbol, 120_120, 120_121, ts), ts)
    b = agent()
    b.restore(a.snapshot())
    assert b.state == a.state and b.core == a.core
    nxt = book(ETH.symbol, 48_010, 48_011, ts + 1)
    assert [type(o) for o in a.on_event(nxt, ts + 1)] == [type(o) for o in b.on_event(nxt, ts + 1)]
    assert math.isclose(a.state.deviation_bps, b.state.deviation_bps)


def test_params_are_typed_and_checked() -> None:
    assert "basis" in kinds()
    with pytest.raises(AgentConfigError, match="exit_bps"):
        agent(exit_bps=3.0)
    with pytest.raises(AgentConfigError, match="not among the instruments this agent can trade"):
        agent(hedge_symbol="LIN:BTCUSDT")
    with pytest.raises(AgentConfigError, match="must differ"):
        agent(hedge_symbol=BTC.symbol)
    with pytest.raises(AgentConfigError, match="order_lots"):
        agent(order_lots=0)
    with pytest.raises(AgentConfigError, match="unknown field"):
        agent(hedge="x")
    with pytest.raises(AgentConfigError, match="hedge_symbol"):
        build_agent("basis", "b", BTC, {}, LEGS)


def test_a_feed_break_empties_that_legs_book_until_its_next_snapshot() -> None:
    """A loader that lost a leg's book sends one break marker and nothing more of it until
    the next snapshot: the agent's copy of that leg is no longer the market (the marker
    deleted one real level as if it were a level, and the rest stayed quoted from)."""
    from sapphire.model.events import BREAK_PREV

    a = agent()
    ts = warm(a)
    marker = BookDelta(
        ts_event_ns=ts,
        symbol=BTC.symbol,
        side=Side.BUY,
        price_ticks=120_000,
        qty_lots=0,
        first_update_id=12,
        final_update_id=11,
        prev_final_update_id=BREAK_PREV,
    )
    assert marker.is_break
    assert a.on_event(marker, ts) == ()
    assert a.state.quote_bids == {} and a.state.quote_asks == {}
    assert a.state.hedge_bids  # the other leg's feed did not break
    a.on_event(book(BTC.symbol, 120_000, 120_001, ts + 1), ts + 1)
    assert a.state.quote_bids == {120_000: 10_000, 119_999: 10}
