"""The venue's one-pass path over a depth message (:meth:`MatchingEngine.on_deltas`) against
the level-by-level one (:meth:`MatchingEngine.on_delta`): the same fills, book and queue
positions for any message, our orders resting anywhere, prices repeated inside a message,
levels crossing our orders or the book, in both fill modes and with both queue kinds.

Why: the replay hands the venue a message as one event only because it promises the
venue trades as if it had got the levels one by one (the recorded runs check that on one
day of data; this checks the cases that day may not hold)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.book.l2 import L2Book
from sapphire.exchange.matching import MatchingEngine
from sapphire.exchange.queue import ConservativeQueue, PowerProb, ProbQueue, QueueModel
from sapphire.exchange.state import SimOrder
from sapphire.model.events import BookDeltas, BookSnapshot, Side
from tests.exchange.test_matching import rest_limit

Fill = tuple[str, int, int, bool, int]

# our resting orders: (side, price); bids at or under 100, asks at or over 101 (the
# snapshot's best prices), so none crosses the book or another of ours when placed
orders_st = st.lists(
    st.one_of(
        st.tuples(st.just(1), st.integers(95, 100), st.integers(1, 12)),
        st.tuples(st.just(-1), st.integers(101, 106), st.integers(1, 12)),
    ),
    min_size=1,
    max_size=6,
)
# a message's levels: prices over both sides' ranges and beyond (so they cross), repeated
# prices allowed, zero deletes a level
levels_st = st.lists(
    st.tuples(st.sampled_from([1, -1]), st.integers(93, 108), st.integers(0, 15)),
    min_size=1,
    max_size=12,
)


def _engine(
    queue: QueueModel, book_cross: bool, orders: list[tuple[int, int, int]]
) -> tuple[MatchingEngine, list[SimOrder], list[Fill]]:
    book = L2Book("X")
    book.apply_snapshot(
        BookSnapshot(
            ts_event_ns=0,
            symbol="X",
            bids=tuple((p, 3 + (100 - p)) for p in range(100, 94, -1)),
            asks=tuple((p, 2 + (p - 101)) for p in range(101, 107)),
            update_id=1,
        )
    )
    fills: list[Fill] = []
    engine: MatchingEngine

    def sink(order: SimOrder, price: int, lots: int, maker: bool, ts: int) -> None:
        # what the paper venue does with a fill, as far as matching can see it
        fills.append((order.client_order_id, price, lots, maker, ts))
        order.filled_lots += lots
        if order.leaves_lots == 0:
            engine.remove(order)

    engine = MatchingEngine("X", book, queue, sink, book_cross_fills=book_cross)
    placed = [
        rest_limit(engine, f"o{i}", Side(side), price, qty)
        for i, (side, price, qty) in enumerate(orders)
    ]
    return engine, placed, fills


def _state(engine: MatchingEngine, orders: list[SimOrder]) -> object:
    book = engine.book
    return (
        book.levels(Side.BUY),
        book.levels(Side.SELL),
        [(o.client_order_id, o.filled_lots, round(o.ahead, 9)) for o in orders],
        {
            int(s): {p: [o.client_order_id for o in q] for p, q in engine.resting(s).items()}
            for s in (Side.BUY, Side.SELL)
        },
    )


@settings(max_examples=300, deadline=None)
@given(
    orders=orders_st,
    messages=st.lists(levels_st, min_size=1, max_size=3),
    book_cross=st.booleans(),
    prob=st.booleans(),
)
def test_a_message_trades_as_its_levels_one_by_one(
    orders: list[tuple[int, int, int]],
    messages: list[list[tuple[int, int, int]]],
    book_cross: bool,
    prob: bool,
) -> None:
    def queue() -> QueueModel:
        return ProbQueue(PowerProb(2.0)) if prob else ConservativeQueue()

    grouped, g_orders, g_fills = _engine(queue(), book_cross, orders)
    single, s_orders, s_fills = _engine(queue(), book_cross, orders)
    assert _state(grouped, g_orders) == _state(single, s_orders)
    for n, levels in enumerate(messages):
        update = 2 + n
        message = BookDeltas(
            ts_event_ns=update,
            symbol="X",
            levels=tuple(levels),
            first_update_id=update,
            final_update_id=update,
            prev_final_update_id=update - 1,
        )
        grouped.on_deltas(message)
        for delta in message.deltas():
            single.on_delta(delta)
        assert g_fills == s_fills
        assert _state(grouped, g_orders) == _state(single, s_orders)
