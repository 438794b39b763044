"""The cross book's own rules, below the kernel: what the journal forgets while a cross is
still under way at the venue."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from sapphire.coordination.crossing import CrossBook
from sapphire.coordination.journal import JournalEntry
from sapphire.model.instrument import Instrument, InstrumentKind
from sapphire.model.orders import (
    AmendOrder,
    OrderStatus,
    OrderType,
    OrderUpdate,
    RejectReason,
    Side,
    SubmitOrder,
    TimeInForce,
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


def test_a_cross_is_never_through_the_touch() -> None:
    # a sell resting at 100 while the best ask is 98: a buy limit at 101 crossed it at 100,
    # 2 ticks worse than the venue would have filled it; at or inside the touch it crosses
    from sapphire.coordination.crossing import match

    order, _ = _incoming()
    order = msgspec.structs.replace(order, limit_ticks=101)
    resting = [_resting()]
    assert match(order, resting, None, market_bound=98) == []
    assert [c.price_ticks for c in match(order, resting, None, market_bound=100)] == [100]
    # the core bounds every cross by the touch it last saw
    from sapphire.kernel.marks import MarkBook
    from sapphire.model.events import Quote

    marks = MarkBook()
    marks.update(
        Quote(ts_event_ns=0, symbol="X", bid_ticks=97, bid_lots=1, ask_ticks=98, ask_lots=1)
    )
    assert marks.cross_bound("X", 1) == 98 and marks.cross_bound("X", -1) == 97
    assert marks.cross_bound("Y", 1) is None


def test_a_refused_cross_gives_its_lots_back_to_the_resting_order() -> None:
    """The venue refused the cross's amend (the resting order had traded past it): the lots
    held for it stayed held, the resting order had none available, and the kill switch's
    cancel-all passed it by (it filled 5 more lots after the kill). The incoming order's
    lots that did not cross never went to the venue: they stay unavailable."""
    book = CrossBook(entry_ns=5_000)
    order, incoming = _incoming()
    resting = _resting()
    book.route(order, incoming, [resting], None)
    assert resting.reserved_lots == 4 and resting.venue_lots == 6
    refused = _answer(
        status=OrderStatus.PARTIALLY_FILLED,
        reason=RejectReason.EXCHANGE_ERROR,
        message="amend rejected: below the filled quantity",
        filled_lots=8,
        leaves_lots=2,
    )
    book.resolve(refused, None)
    assert resting.reserved_lots == 0 and resting.venue_lots == 10  # the venue kept it
    assert incoming.reserved_lots == 4 and incoming.available_lots == 0


def test_a_cross_book_from_a_checkpoint_before_the_firm_view_restores() -> None:
    import pickle

    book = CrossBook(entry_ns=5_000)
    for name in ("_firm_qty", "_crossed", "_failed"):  # as a checkpoint of last session's
        delattr(book, name)
    again = pickle.loads(pickle.dumps(book))
    again.forget("a-1")  # raised AttributeError
    assert again.firm_view(_answer(status=OrderStatus.ACCEPTED)).status is OrderStatus.ACCEPTED


def test_a_venue_report_of_an_order_crossed_in_part_counts_its_crossed_lots() -> None:
    # b-1 buys 16: 4 cross a-1's sell, 12 go to the venue; the venue's FILLED of its 12
    # said "filled 12" of an order of 16, and stored rows said so
    book = CrossBook(entry_ns=5_000)
    order, incoming = _incoming()
    order = msgspec.structs.replace(order, qty_lots=16)
    incoming = msgspec.structs.replace(incoming, qty_lots=16)
    resting = msgspec.structs.replace(_resting(), qty_lots=4, venue_lots=4)
    commands = book.route(order, incoming, [resting], None)
    assert [type(c).__name__ for c in commands] == ["CancelOrder", "SubmitOrder"]
    book.resolve(_answer(status=OrderStatus.CANCELED), None)  # the cross is booked
    venue_filled = OrderUpdate(
        ts_event_ns=7_000,
        client_order_id="b-1",
        agent_id="b",
        symbol="BTCUSDT",
        status=OrderStatus.FILLED,
        filled_lots=12,
        leaves_lots=0,
    )
    _, told = book.resolve(venue_filled, None)
    assert told is not None and told.status is OrderStatus.FILLED and told.filled_lots == 16


def test_a_remainder_the_venue_would_refuse_is_not_sent() -> None:
    # a sell of 5 lots (309 USDT) crossing 4: its 1-lot remainder (62 USDT) was rejected by
    # the venue's 100 USDT minimum, and the order with it, after 4 lots had crossed
    from sapphire.model.instrument import Instrument

    inst = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001", min_notional="100")
    book = CrossBook(entry_ns=5_000)
    order, incoming = _incoming()
    order = msgspec.structs.replace(order, qty_lots=5, limit_ticks=618_000)
    incoming = msgspec.structs.replace(incoming, qty_lots=5, limit_ticks=618_000)
    resting = msgspec.structs.replace(_resting(), qty_lots=4, venue_lots=4, limit_ticks=618_000)
    commands = book.route(order, incoming, [resting], inst)
    assert [type(c).__name__ for c in commands] == ["CancelOrder"]  # nothing to the venue
    out, _ = book.resolve(_answer(status=OrderStatus.CANCELED), inst)
    final = [r for r in out if isinstance(r, OrderUpdate) and r.client_order_id == "b-1"]
    assert final and final[0].status is OrderStatus.CANCELED and final[0].filled_lots == 4
    assert "1 lots not sent: below the venue's minimum" in final[0].message


def test_crossed_money_is_kept_per_settlement_asset() -> None:
    # an inverse leg's BTC and a linear leg's USDT were added into one "quote" figure
    inv = Instrument(
        symbol="BTCUSD",
        kind=InstrumentKind.INVERSE_PERPETUAL,
        base="BTC",
        quote="USD",
        tick_size="0.5",
        lot_size="1",
        maker_fee_bps="-2.5",
        taker_fee_bps="7.5",
    )
    lin = Instrument(
        symbol="ETHUSDT",
        kind=InstrumentKind.PERPETUAL,
        base="ETH",
        quote="USDT",
        tick_size="0.05",
        lot_size="0.01",
        maker_fee_bps="-2.5",
        taker_fee_bps="7.5",
    )
    book = CrossBook(0)
    for n, (inst, px, lots) in enumerate([(inv, 120_000, 1000), (lin, 40_000, 100)], 1):
        resting = JournalEntry(
            client_order_id=f"r{n}",
            agent_id="A",
            symbol=inst.symbol,
            side=Side.SELL,
            qty_lots=lots,
            limit_ticks=px,
            status=OrderStatus.ACCEPTED,
            venue_lots=lots,
        )
        incoming = JournalEntry(
            client_order_id=f"i{n}",
            agent_id="B",
            symbol=inst.symbol,
            side=Side.BUY,
            qty_lots=lots,
            limit_ticks=px,
            status=OrderStatus.PENDING,
        )
        order = SubmitOrder(
            ts_event_ns=n,
            client_order_id=f"i{n}",
            agent_id="B",
            symbol=inst.symbol,
            side=Side.BUY,
            qty_lots=lots,
            limit_ticks=px,
            order_type=OrderType.LIMIT,
            tif=TimeInForce.GTC,
        )
        book.route(order, incoming, [resting], inst, None)
        canceled = OrderUpdate(
            ts_event_ns=n,
            client_order_id=f"r{n}",
            agent_id="A",
            symbol=inst.symbol,
            status=OrderStatus.CANCELED,
            filled_lots=0,
            leaves_lots=0,
        )
        book.resolve(canceled, inst)
    money = book.stats.money
    assert book.stats.crosses == 2 and sorted(money) == ["BTC", "USDT"]
    assert money["BTC"].notional == Decimal(1000) / 60_000  # 1,000 USD contracts at 60,000
    assert money["USDT"].notional == 2000  # 1 ETH at 2,000
    assert money["USDT"].taker_fees_avoided == Decimal("1.5")


class _OldCrossingStats(msgspec.Struct, kw_only=True):
    """CrossingStats as checkpoints before session 22 pickled it (one sum for all assets)."""

    crosses: int = 0
    crossed_lots: int = 0
    crossed_notional_quote: Decimal = Decimal(0)
    taker_fees_avoided_quote: Decimal = Decimal(0)
    maker_fees_avoided_quote: Decimal = Decimal(0)
    resting_canceled: int = 0
    resting_amended: int = 0
    failed_lots: int = 0
    overfill_lots: int = 0


def test_a_checkpoint_of_the_one_sum_stats_still_restores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # every coordinator checkpoint pickles its cross book: renaming the stats' fields made
    # a --resume of any run checkpointed before fail with "Unexpected keyword argument"
    import pickle

    from sapphire.coordination import crossing

    _OldCrossingStats.__module__ = crossing.__name__
    _OldCrossingStats.__qualname__ = "CrossingStats"
    book = CrossBook(0)
    new = crossing.CrossingStats
    monkeypatch.setattr(crossing, "CrossingStats", _OldCrossingStats)
    book.stats = _OldCrossingStats(crosses=2, crossed_notional_quote=Decimal("12.5"))  # type: ignore[assignment]
    data = pickle.dumps(book)
    monkeypatch.setattr(crossing, "CrossingStats", new)
    restored = pickle.loads(data)
    assert restored.stats.crosses == 2
    assert restored.stats.money[""].notional == Decimal("12.5")
    assert restored.stats.crossed_notional_quote == 0
