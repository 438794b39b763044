"""The cross book's own rules, below the kernel: what the journal forgets while a cross is
still under way at the venue."""

from __future__ import annotations

import msgspec

from sapphire.coordination.crossing import CrossBook
from sapphire.coordination.journal import JournalEntry
from sapphire.model.orders import (
    AmendOrder,
    OrderStatus,
    OrderUpdate,
    RejectReason,
    Side,
    SubmitOrder,
)


def _resting() -> JournalEntry:
    return JournalEntry(
        client_order_id="a-1",
        agent_id="a",
        symbol="BTCUSDT",
        side=Side.SELL,
        qty_lots=10,
        limit_ticks=100,
        status=OrderStatus.ACCEPTED,
        venue_lots=10,
    )


def _incoming() -> tuple[SubmitOrder, JournalEntry]:
    order = SubmitOrder(
        ts_event_ns=1_000,
        client_order_id="b-1",
        agent_id="b",
        symbol="BTCUSDT",
        side=Side.BUY,
        qty_lots=4,
        limit_ticks=100,
    )
    fields = msgspec.structs.asdict(order)
    del fields["ts_event_ns"]
    return order, JournalEntry(**fields, submitted_ns=order.ts_event_ns)


def _answer(**fields: object) -> OrderUpdate:
    """The venue's answer about the resting order ``a-1``."""
    return OrderUpdate(
        ts_event_ns=6_000, client_order_id="a-1", agent_id="a", symbol="BTCUSDT", **fields
    )  # type: ignore[arg-type]


def test_an_order_forgotten_while_its_cross_is_at_the_venue_is_resolved_then_forgotten() -> None:
    # the resting order fills whole at the venue while the cross's amend is on its way; the
    # journal, whose memory is shorter than that trip, forgets it before the venue refuses
    book = CrossBook(entry_ns=5_000)
    order, incoming = _incoming()
    commands = book.route(order, incoming, [_resting()], None)
    assert [type(c) for c in commands] == [AmendOrder]
    book.forget("a-1")
    refused = _answer(
        status=OrderStatus.REJECTED,
        reason=RejectReason.UNKNOWN_ORDER,
        message="amend rejected: no open order with this id",
    )
    out, delivered = book.resolve(refused, None)
    assert delivered == refused
    # nothing crossed: the incoming order ends with its 4 lots not crossed
    finals = [r for r in out if isinstance(r, OrderUpdate)]
    assert [f.client_order_id for f in finals] == ["b-1"]
    assert "4 lots not" in finals[0].message
    # and the forgotten order is gone now that its cross is resolved
    assert "a-1" not in book._venue_lots and "a-1" not in book._forgotten


def test_an_order_with_nothing_under_way_is_forgotten_at_once() -> None:
    book = CrossBook(entry_ns=5_000)
    order, incoming = _incoming()
    book.route(order, incoming, [_resting()], None)
    done = _answer(status=OrderStatus.ACCEPTED, leaves_lots=6, message="amended")
    out, _ = book.resolve(done, None)
    assert sum(1 for r in out if not isinstance(r, OrderUpdate)) == 2  # the cross's two fills
    book.forget("a-1")
    assert "a-1" not in book._venue_lots and not book._forgotten


def test_a_market_order_crosses_no_further_than_the_price_band() -> None:
    # a resting sell at 100 while the mark fell: a market buy crossed it at any price
    from sapphire.coordination.crossing import match
    from sapphire.model.orders import OrderType, TimeInForce

    order, _ = _incoming()
    market = msgspec.structs.replace(
        order, limit_ticks=None, order_type=OrderType.MARKET, tif=TimeInForce.IOC
    )
    resting = [_resting()]
    assert [c.price_ticks for c in match(market, resting, None, market_bound=100)] == [100]
    assert match(market, resting, None, market_bound=99) == []  # beyond the band: the venue
    assert match(market, resting, None) == []  # no mark: the venue's book prices it
    # a limit order's own price bounds it, whatever the mark
    assert len(match(order, resting, None)) == 1
