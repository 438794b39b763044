"""The columnar replay gives exactly the fills of the event-by-event replay."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from sapphire.data.instruments import known_instrument
from sapphire.exchange.columnar import ColumnarFeed, FastBookView, replay_until
from sapphire.exchange.config import PaperExchangeBuilder
from sapphire.exchange.paper import PaperExchange
from sapphire.model.events import AnyMarketEvent, BookDelta, BookSnapshot, Side, Trade
from sapphire.model.orders import CancelOrder, OrderType, SubmitOrder, TimeInForce
from tests.exchange.recorded import SYMBOL, load_events

INST = known_instrument("binance-usdm", "BTCUSDT")
assert INST is not None
STEP = 50_000_000


def _sequenced(events: Sequence[AnyMarketEvent]) -> list[AnyMarketEvent]:
    """Snapshot first, then what the sync rule keeps, in arrival order."""
    snap = next(e for e in events if isinstance(e, BookSnapshot))
    rest = [
        e
        for e in events
        if isinstance(e, Trade) or (isinstance(e, BookDelta) and e.final_update_id > snap.update_id)
    ]
    return [snap, *rest]


def _feed(events: Sequence[AnyMarketEvent]) -> ColumnarFeed:
    rows: list[tuple[int, int, int, int, int, int, bool]] = []
    for e in events:
        if isinstance(e, BookSnapshot):
            levels = [(1, p, q) for p, q in e.bids] + [(-1, p, q) for p, q in e.asks]
            for k, (side, p, q) in enumerate(levels):
                rows.append((0, side, p, q, e.ts_event_ns, e.ts_recv_ns, k == 0))
        elif isinstance(e, BookDelta):
            rows.append(
                (0, int(e.side), e.price_ticks, e.qty_lots, e.ts_event_ns, e.ts_recv_ns, False)
            )
        elif isinstance(e, Trade):
            rows.append(
                (
                    1,
                    int(e.taker_side),
                    e.price_ticks,
                    e.qty_lots,
                    e.ts_event_ns,
                    e.ts_recv_ns,
                    False,
                )
            )
    cols = list(zip(*rows, strict=True))
    return ColumnarFeed(
        SYMBOL,
        np.array(cols[0], np.int8),
        np.array(cols[1], np.int8),
        *(np.array(c, np.int64) for c in cols[2:6]),
        np.array(cols[6], np.bool_),
    )


def _strategy(ex: PaperExchange, t: int, k: int) -> None:
    """Quote inside and around the touch, cancel, and now and then take."""
    bid, ask = ex.book(SYMBOL).best_bid(), ex.book(SYMBOL).best_ask()
    if bid is None or ask is None:
        return
    for view in ex.open_orders():
        if k % 3 == 0:
            ex.cancel(
                CancelOrder(ts_event_ns=t, client_order_id=view.client_order_id, symbol=SYMBOL), t
            )
    side = Side.BUY if k % 2 else Side.SELL
    px = bid[0] - k % 4 if side is Side.BUY else ask[0] + k % 4
    market = k % 17 == 0
    ex.submit(
        SubmitOrder(
            ts_event_ns=t,
            client_order_id=f"c-{k}",
            agent_id="c",
            symbol=SYMBOL,
            side=side,
            qty_lots=200 + 50 * (k % 5),
            limit_ticks=None if market else px,
            order_type=OrderType.MARKET if market else OrderType.LIMIT,
            tif=TimeInForce.IOC if market else TimeInForce.GTC,
        ),
        t,
    )


@pytest.mark.parametrize("prob", [False, True])
def test_columnar_replay_matches_event_replay(shared_data: Path, prob: bool) -> None:
    events = _sequenced(load_events(shared_data, 20.0))
    builder = PaperExchangeBuilder().instrument(INST).balance("USDT", "10000000").leverage(10)  # type: ignore[arg-type]
    builder.constant_latency(entry_ns=5_000_000, response_ns=5_000_000)
    if prob:
        builder.power_prob_queue(2.0)
    slow = PaperExchange(builder.config())
    fast = PaperExchange(builder.config(), books={SYMBOL: FastBookView()})
    feed = _feed(events)
    t, i, j, k = events[0].ts_recv_ns, 0, 0, 0
    while i < len(events):
        t += STEP
        while i < len(events) and events[i].ts_recv_ns <= t:
            slow.on_market_event(events[i])
            i += 1
        j = replay_until(fast, feed, j, t)
        k += 1
        _strategy(slow, t, k)
        _strategy(fast, t, k)
    assert j == len(feed)
    assert len(slow.fills) > 20
    assert list(fast.fills) == list(slow.fills)
    assert fast.account.balances() == slow.account.balances()
    assert fast.book(SYMBOL).best_bid() == slow.book(SYMBOL).best_bid()
