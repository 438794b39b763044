"""Matching rules below the paper venue: what a book snapshot and a trade may fill."""

from __future__ import annotations

import pytest

from sapphire.book.l2 import L2Book
from sapphire.exchange.config import SelfTradeMode
from sapphire.exchange.matching import MatchingEngine
from sapphire.exchange.queue import ConservativeQueue
from sapphire.exchange.state import SimOrder
from sapphire.model.events import BookSnapshot, Side, Trade
from sapphire.model.orders import OrderType, TimeInForce


def _engine(**options: bool) -> tuple[MatchingEngine, list[tuple[str, int, int]]]:
    fills: list[tuple[str, int, int]] = []
    engine: MatchingEngine

    def sink(order: SimOrder, price: int, lots: int, maker: bool, ts: int) -> None:
        fills.append((order.client_order_id, price, lots))
        order.filled_lots += lots
        if order.leaves_lots == 0:
            engine.remove(order)

    engine = MatchingEngine("X", L2Book("X"), ConservativeQueue(), sink, **options)
    return engine, fills


def limit_order(
    cid: str, side: Side, price: int, qty: int, tif: TimeInForce = TimeInForce.GTC
) -> SimOrder:
    return SimOrder(
        client_order_id=cid,
        agent_id="t",
        symbol="X",
        side=side,
        order_type=OrderType.LIMIT,
        tif=tif,
        limit_ticks=price,
        qty_lots=qty,
        ts_ns=0,
    )


def rest_limit(engine: MatchingEngine, cid: str, side: Side, price: int, qty: int) -> SimOrder:
    """A GTC limit order of ours, resting at ``price`` (also used by test_matching_messages)."""
    order = limit_order(cid, side, price, qty)
    engine.rest(order)
    return order


def _snapshot(ts: int, asks: tuple[tuple[int, int], ...]) -> BookSnapshot:
    return BookSnapshot(ts_event_ns=ts, symbol="X", bids=((90, 5),), asks=asks, update_id=ts)


def test_a_snapshot_fills_only_size_it_adds_at_or_through_our_order() -> None:
    engine, fills = _engine()
    engine.on_snapshot(_snapshot(1, ((101, 5),)))
    order = rest_limit(engine, "b", Side.BUY, 100, 10)
    engine.on_snapshot(_snapshot(2, ((100, 3), (101, 5))))  # 3 lots appear at our price
    assert fills == [("b", 100, 3)]
    # the same book again, twice: nothing new was offered, nothing more fills
    engine.on_snapshot(_snapshot(3, ((100, 3), (101, 5))))
    engine.on_snapshot(_snapshot(4, ((100, 3), (101, 5))))
    assert order.filled_lots == 3
    engine.on_snapshot(_snapshot(5, ((100, 5), (101, 5))))  # 2 more appear
    assert order.filled_lots == 5


def test_without_trade_through_fills_all_one_trade_fills_at_most_its_size() -> None:
    engine, fills = _engine(trade_through_fills_all=False)
    engine.on_snapshot(_snapshot(1, ((102, 5),)))
    rest_limit(engine, "high", Side.BUY, 101, 5)
    rest_limit(engine, "low", Side.BUY, 100, 5)
    sell = Trade(ts_event_ns=2, symbol="X", price_ticks=100, qty_lots=5, taker_side=Side.SELL)
    engine.on_trade(sell)
    assert sum(lots for _, _, lots in fills) == 5  # the 101 order took it all; 100 gets 0
    assert fills == [("high", 101, 5)]


@pytest.mark.parametrize(
    ("limit", "lots", "meets_ours"),
    [
        (None, 10, False),  # 100 x 10 fills it
        (250, 15, False),  # 100 and 150 cover 15
        (None, 21, True),  # 20 recorded, then ours
        (190, 50, False),  # its limit stops before ours
    ],
)
def test_a_taker_meets_our_own_order_only_where_its_walk_reaches_it(
    limit: int | None, lots: int, meets_ours: bool
) -> None:
    # a market buy the best ask covers never reaches our ask far above: no self-trade (it
    # was rejected as one whenever we rested anything on the other side)
    expired: list[str] = []
    fills: list[tuple[str, int, int]] = []

    def sink(order: SimOrder, price: int, qty: int, maker: bool, ts: int) -> None:
        fills.append((order.client_order_id, price, qty))
        order.filled_lots += qty

    engine = MatchingEngine(
        "X",
        L2Book("X"),
        ConservativeQueue(),
        sink,
        self_trade=SelfTradeMode.EXPIRE_MAKER,  # ours expires, the taker walks on
        expire=lambda order, ts: expired.append(order.client_order_id),
    )
    engine.on_snapshot(_snapshot(1, ((100, 10), (150, 10))))
    rest_limit(engine, "ours", Side.SELL, 200, 5)
    taker = SimOrder(
        client_order_id="t",
        agent_id="t",
        symbol="X",
        side=Side.BUY,
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        tif=TimeInForce.IOC,
        limit_ticks=limit,
        qty_lots=lots,
        ts_ns=0,
    )
    engine.take(taker, lots, 2)
    assert expired == (["ours"] if meets_ours else [])
    assert all(cid == "t" for cid, *_ in fills) and sum(q for *_, q in fills) == min(lots, 20)
    # no size given: any of ours within the limit is one it can meet
    assert engine.crosses_own(Side.BUY, 250) and not engine.crosses_own(Side.BUY, 190)


def _taker(cid: str, side: Side, limit: int, qty: int) -> SimOrder:
    return limit_order(cid, side, limit, qty, TimeInForce.IOC)


def test_a_book_out_of_sync_offers_nothing_until_a_snapshot_resyncs_it() -> None:
    """A lost depth message leaves the book as it was before it: a taker filled at those
    frozen prices for the rest of the session (up to $34 better than the real touch on a
    recording with one message dropped)."""
    from sapphire.model.events import BookDelta

    engine, fills = _engine()
    engine.on_snapshot(_snapshot(10, ((101, 5),)))
    assert engine.take(_taker("a", Side.BUY, 101, 1), 1, 11) == 1  # synced: it takes
    lost = BookDelta(  # ids 11..12 never came: this one does not continue the book
        ts_event_ns=12,
        symbol="X",
        side=Side.SELL,
        price_ticks=101,
        qty_lots=0,
        first_update_id=13,
        final_update_id=14,
    )
    engine.on_delta(lost)
    assert not engine.book.is_synced
    assert engine.fillable(Side.BUY, 101, 13) == []
    assert not engine.would_take(Side.BUY, 101)
    assert engine.take(_taker("b", Side.BUY, 101, 2), 2, 13) == 0
    engine.on_snapshot(_snapshot(20, ((101, 4),)))  # resynced: the market is there again
    assert engine.book.is_synced and engine.take(_taker("c", Side.BUY, 101, 2), 2, 21) == 2
    assert fills == [("a", 101, 1), ("c", 101, 2)]
