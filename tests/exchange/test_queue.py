"""Queue-position models: FIFO among our orders, conservative vs probabilistic cancels."""

from __future__ import annotations

import pytest

from sapphire.book.l2 import L2Book
from sapphire.exchange.config import QueueConfig, QueueModelKind
from sapphire.exchange.matching import MatchingEngine
from sapphire.exchange.queue import (
    ConservativeQueue,
    Power3Prob,
    PowerProb,
    ProbQueue,
    log_prob,
    queue_from_config,
)
from sapphire.exchange.state import SimOrder
from sapphire.model.events import BookDelta, BookDeltas, BookSnapshot, Side, Trade
from sapphire.model.orders import OrderType, TimeInForce
from tests.book.test_l2 import delta


def _order(cid: str, qty: int) -> SimOrder:
    return SimOrder(
        client_order_id=cid,
        agent_id="t",
        symbol="X",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        tif=TimeInForce.GTC,
        limit_ticks=100,
        qty_lots=qty,
        ts_ns=0,
    )


def test_trade_fills_only_after_queue_ahead_is_traded_through() -> None:
    q = ConservativeQueue()
    a = _order("a", 5)
    q.on_place(a, 10, None)
    assert q.on_trade([a], 10) == []
    assert a.ahead == 0.0
    assert q.on_trade([a], 3) == [(a, 3)]


def test_trade_volume_goes_fifo_through_our_orders() -> None:
    q = ConservativeQueue()
    a, b = _order("a", 4), _order("b", 4)
    q.on_place(a, 2, None)
    q.on_place(b, 1, a)  # level shrank, but b is still behind a
    assert b.ahead == 2.0
    fills = q.on_trade([a, b], 8)
    # 2 recorded lots, then a's 4, then b gets the remaining 2
    assert fills == [(a, 4), (b, 2)]


def test_conservative_cancel_moves_us_only_when_level_shrinks_below_ahead() -> None:
    q = ConservativeQueue()
    a = _order("a", 1)
    q.on_place(a, 10, None)
    q.on_depth([a], 10, 15)
    assert a.ahead == 10.0
    q.on_depth([a], 15, 12)
    assert a.ahead == 10.0
    q.on_depth([a], 12, 4)
    assert a.ahead == 4.0


def test_prob_queue_moves_us_forward_on_cancels_but_not_for_traded_volume_twice() -> None:
    q = ProbQueue(PowerProb(2.0))
    a = _order("a", 1)
    q.on_place(a, 10, None)
    q.on_depth([a], 10, 20)  # 10 joined behind us
    assert a.ahead == 10.0
    q.on_trade([a], 4)  # 4 traded ahead of us
    assert a.ahead == 6.0
    q.on_depth([a], 20, 16)  # the depth update that reports that trade: no extra move
    assert a.ahead == 6.0
    q.on_depth([a], 16, 12)  # 4 cancelled: back (10) is bigger, so most were behind us
    assert 4.0 < a.ahead < 6.0


def test_prob_queue_keeps_later_orders_behind_earlier_ones() -> None:
    q = ProbQueue(log_prob)
    a, b = _order("a", 1), _order("b", 1)
    q.on_place(a, 5, None)
    q.on_place(b, 50, a)
    q.on_depth([a, b], 50, 20)
    assert 0.0 <= a.ahead <= b.ahead <= 20.0


@pytest.mark.parametrize(
    "prob",
    [PowerProb(1.0), PowerProb(3.0), log_prob, Power3Prob(3.0)],
    ids=["power1", "power3", "log", "power3_prob3"],  # stable ids: xdist workers must agree
)
def test_probabilities_are_in_unit_interval_and_favour_the_bigger_side(prob: object) -> None:
    assert callable(prob)
    for front, back in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (3.0, 30.0), (30.0, 3.0)]:
        p = prob(front, back)
        assert 0.0 <= p <= 1.0
    assert prob(1.0, 100.0) > prob(100.0, 1.0)


def test_queue_from_config_selects_each_kind() -> None:
    assert isinstance(queue_from_config(QueueConfig()), ConservativeQueue)
    for kind in (QueueModelKind.PROB_POWER, QueueModelKind.PROB_LOG, QueueModelKind.PROB_POWER3):
        assert isinstance(queue_from_config(QueueConfig(kind=kind)), ProbQueue)


def _level(side: Side, price: int, qty: int, update: int) -> BookDelta:
    return delta(side, price, qty, update, update, prev=update - 1)


@pytest.mark.parametrize("queue", [ConservativeQueue(), ProbQueue(PowerProb(2.0))])
@pytest.mark.parametrize("book_cross_fills", [False, True])
@pytest.mark.parametrize("grouped", [False, True])
def test_a_level_the_books_crossing_rule_removes_moves_our_queue_as_a_delete(
    queue: ConservativeQueue | ProbQueue, book_cross_fills: bool, grouped: bool
) -> None:
    """An ask recorded at our bid's price: the book drops its stale bids there (the
    crossing rule), the 10 lots that were ahead of us among them. Our order is then at the
    front, as if that level had been deleted, and the next trade at our price fills it
    (it used to keep the 10 lots ahead of it, and then the new size, in both fill modes)."""
    book = L2Book("X")
    book.apply_snapshot(
        BookSnapshot(ts_event_ns=0, symbol="X", bids=((100, 10),), asks=((105, 5),), update_id=1)
    )
    fills: list[tuple[int, int]] = []
    engine = MatchingEngine(
        "X",
        book,
        queue,
        lambda o, p, q, m, t: fills.append((p, q)),
        book_cross_fills=book_cross_fills,
    )
    order = _order("a", 50)
    engine.rest(order)
    assert order.ahead == 10.0
    crossing = _level(Side.SELL, 100, 3, 2)
    if grouped:  # the same level as a depth message's (the venue's one-pass path)
        engine.on_deltas(
            BookDeltas(
                ts_event_ns=2,
                symbol="X",
                levels=((-1, 100, 3), (-1, 104, 1)),
                first_update_id=2,
                final_update_id=2,
                prev_final_update_id=1,
            )
        )
    else:
        engine.on_delta(crossing)
    assert book.qty_at(Side.BUY, 100) == 0 and order.ahead == 0.0
    assert fills == ([(100, 3)] if book_cross_fills else [])
    engine.on_delta(_level(Side.SELL, 100, 0, 3))
    engine.on_delta(_level(Side.BUY, 100, 4, 4))  # new size, behind us
    assert order.ahead == 0.0
    engine.on_trade(
        Trade(
            ts_event_ns=5, symbol="X", price_ticks=100, qty_lots=2, taker_side=Side.SELL, trade_id=1
        )
    )
    assert fills[-1] == (100, 2)
