"""The venue's book from quotes (``book_from_quotes``): a recording with quotes and trades but
no depth (Tardis quotes, a nautilus parquet, hftbacktest BBO) gave the venue no book at all,
and every market order expired no_liquidity (3,551, 452 and 1,087 orders) with no reason on
the screen. A symbol without depth now trades against its quote; a symbol with depth stays
depth-driven, never both."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from sapphire.exchange.config import PaperExchangeBuilder, PaperExchangeConfig, QuoteBookMode
from sapphire.exchange.paper import PaperExchange
from sapphire.exchange.state import OrderView
from sapphire.model.events import BookDelta, BookSnapshot, Quote, Side, Trade
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    OrderFilled,
    OrderStatus,
    OrderType,
    RejectReason,
    SubmitOrder,
    TimeInForce,
)

SPOT = Instrument(symbol="BTCUSDT", base="BTC", quote="USDT", tick_size="0.01", lot_size="0.001")
BID, ASK = 6_000_000, 6_000_010


def _venue(mode: QuoteBookMode = QuoteBookMode.AUTO) -> PaperExchange:
    builder = PaperExchangeBuilder().instrument(SPOT).balance("USDT", "1000000")
    return PaperExchange(builder.balance("BTC", "100").book_from_quotes(mode).config())


def _quote(ts: int, bid: int = BID, bid_lots: int = 4, ask: int = ASK, ask_lots: int = 3) -> Quote:
    return Quote(
        ts_event_ns=ts,
        symbol="BTCUSDT",
        bid_ticks=bid,
        bid_lots=bid_lots,
        ask_ticks=ask,
        ask_lots=ask_lots,
    )


def _order(
    cid: str,
    side: Side,
    lots: int,
    ts: int,
    limit: int | None = None,
    tif: TimeInForce = TimeInForce.GTC,
) -> SubmitOrder:
    return SubmitOrder(
        ts_event_ns=ts,
        client_order_id=cid,
        agent_id="a",
        symbol="BTCUSDT",
        side=side,
        qty_lots=lots,
        limit_ticks=limit,
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        tif=tif,
    )


def _send(venue: PaperExchange, order: SubmitOrder) -> list[OrderFilled]:
    venue.submit(order, order.ts_event_ns)
    venue.advance(order.ts_event_ns)
    reports = venue.poll(order.ts_event_ns)
    return [r for r in reports if isinstance(r, OrderFilled)]


def _final(venue: PaperExchange, cid: str) -> OrderView:
    view = venue.order_state(cid)
    assert view is not None
    return view


def test_a_market_order_fills_at_the_quoted_ask_up_to_the_quoted_size() -> None:
    venue = _venue()
    venue.on_market_event(_quote(10))
    fills = _send(venue, _order("small", Side.BUY, 2, 20))
    assert [(f.price_ticks, f.qty_lots, f.is_maker) for f in fills] == [(ASK, 2, False)]
    # larger than the quote: the quoted 3 lots fill, the rest expires as a market order's does
    fills = _send(venue, _order("large", Side.BUY, 5, 30))
    assert [(f.price_ticks, f.qty_lots) for f in fills] == [(ASK, 3)]
    assert _final(venue, "large").status is OrderStatus.EXPIRED
    assert _final(venue, "large").filled_lots == 3
    fills = _send(venue, _order("sell", Side.SELL, 6, 40))
    assert [(f.price_ticks, f.qty_lots) for f in fills] == [(BID, 4)]
    health = venue.book_health()
    assert health["expired: remainder"] == 2  # each filled part, its rest expired
    assert "expired: no_liquidity" not in health


def test_before_any_quote_a_market_order_expires_no_liquidity_and_is_counted() -> None:
    venue = _venue()
    assert _send(venue, _order("m", Side.BUY, 1, 5)) == []
    assert _final(venue, "m").status is OrderStatus.EXPIRED
    assert _final(venue, "m").reason is RejectReason.NO_LIQUIDITY
    assert venue.book_health()["expired: no_liquidity"] == 1


def test_each_quote_replaces_the_book_and_an_empty_side_is_none() -> None:
    venue = _venue()
    venue.on_market_event(_quote(10))
    venue.on_market_event(_quote(20, bid=BID + 1, bid_lots=7, ask=ASK + 2, ask_lots=1))
    book = venue.book("BTCUSDT")
    assert book.levels(Side.BUY) == [(BID + 1, 7)]  # one level a side, the old one gone
    assert book.levels(Side.SELL) == [(ASK + 2, 1)]
    venue.on_market_event(_quote(30, ask=0, ask_lots=0))  # a missing side
    assert book.levels(Side.SELL) == [] and book.levels(Side.BUY) == [(BID, 4)]
    venue.on_market_event(_quote(40, bid_lots=0))  # a zero size
    assert book.levels(Side.BUY) == [] and book.levels(Side.SELL) == [(ASK, 3)]


def test_a_crossed_quote_leaves_the_book_and_is_counted() -> None:
    venue = _venue()
    venue.on_market_event(_quote(10))
    venue.on_market_event(_quote(20, bid=ASK, ask=BID))
    assert venue.ignored_events == 1
    assert venue.book("BTCUSDT").best_ask() == (ASK, 3)


def test_a_resting_order_fills_by_the_existing_rules() -> None:
    venue = _venue()
    venue.on_market_event(_quote(10))
    # a bid at the quoted bid joins behind the quoted 4 lots
    assert _send(venue, _order("bid", Side.BUY, 2, 20, limit=BID)) == []
    order = venue.engine("BTCUSDT").resting(Side.BUY)[BID][0]
    assert order.ahead == 4
    # a trade at our price takes the 4 ahead first, then 1 of ours (queue rule)
    venue.on_market_event(
        Trade(ts_event_ns=30, symbol="BTCUSDT", price_ticks=BID, qty_lots=5, taker_side=Side.SELL)
    )
    fills = [r for r in venue.poll(30) if isinstance(r, OrderFilled)]
    assert [(f.qty_lots, f.is_maker) for f in fills] == [(1, True)]
    # the quote's ask drops onto our bid: its size would have traded with us (book cross)
    venue.on_market_event(_quote(40, bid=BID - 5, ask=BID, ask_lots=3))
    fills = [r for r in venue.poll(40) if isinstance(r, OrderFilled)]
    assert [(f.price_ticks, f.qty_lots) for f in fills] == [(BID, 1)]
    assert _final(venue, "bid").status is OrderStatus.FILLED


def test_a_symbol_with_depth_ignores_quotes() -> None:
    venue = _venue()
    venue.on_market_event(
        BookSnapshot(
            ts_event_ns=10,
            symbol="BTCUSDT",
            bids=((BID - 100, 9), (BID - 101, 9)),
            asks=((ASK + 100, 9),),
            update_id=5,
        )
    )
    venue.on_market_event(_quote(20))  # a better quote: not the depth book's
    book = venue.book("BTCUSDT")
    assert book.levels(Side.BUY) == [(BID - 100, 9), (BID - 101, 9)]
    assert book.levels(Side.SELL) == [(ASK + 100, 9)]
    assert venue.ignored_events == 1
    fills = _send(venue, _order("m", Side.BUY, 1, 30))
    assert [f.price_ticks for f in fills] == [ASK + 100]


def test_the_first_depth_diff_drops_the_quotes_levels_and_quotes_are_ignored_after() -> None:
    venue = _venue()
    venue.on_market_event(_quote(10))
    # an unsequenced diff (Tardis): the depth book starts from it, never beside the quote
    venue.on_market_event(
        BookDelta(
            ts_event_ns=20, symbol="BTCUSDT", side=Side.SELL, price_ticks=ASK + 50, qty_lots=2
        )
    )
    book = venue.book("BTCUSDT")
    assert book.levels(Side.BUY) == [] and book.levels(Side.SELL) == [(ASK + 50, 2)]
    venue.on_market_event(_quote(30))
    assert book.levels(Side.SELL) == [(ASK + 50, 2)] and book.levels(Side.BUY) == []


def test_a_sequenced_first_diff_waits_for_its_snapshot_as_with_no_quotes() -> None:
    venue = _venue()
    venue.on_market_event(_quote(10))
    diff = BookDelta(
        ts_event_ns=20,
        symbol="BTCUSDT",
        side=Side.BUY,
        price_ticks=BID,
        qty_lots=2,
        first_update_id=101,
        final_update_id=101,
        prev_final_update_id=100,
    )
    venue.on_market_event(diff)
    assert not venue.book("BTCUSDT").is_synced  # no liquidity until the snapshot
    assert _send(venue, _order("m", Side.BUY, 1, 30)) == []
    venue.on_market_event(
        BookSnapshot(
            ts_event_ns=40, symbol="BTCUSDT", bids=((BID, 1),), asks=((ASK, 1),), update_id=100
        )
    )
    health = venue.book_health()
    assert health["sequence_gaps"] == 0  # the quote's levels were no snapshot to continue
    assert venue.book("BTCUSDT").levels(Side.BUY) == [(BID, 2)]  # the held diff replayed


def test_a_first_snapshot_replaces_the_quotes_levels() -> None:
    venue = _venue()
    venue.on_market_event(_quote(10))
    venue.on_market_event(
        BookSnapshot(ts_event_ns=20, symbol="BTCUSDT", bids=((BID - 1, 1),), asks=((ASK + 1, 2),))
    )
    venue.on_market_event(_quote(30))
    book = venue.book("BTCUSDT")
    assert book.levels(Side.BUY) == [(BID - 1, 1)] and book.levels(Side.SELL) == [(ASK + 1, 2)]


def test_off_keeps_quotes_out_of_the_book() -> None:
    venue = _venue(QuoteBookMode.OFF)
    venue.on_market_event(_quote(10))
    assert venue.book("BTCUSDT").best_ask() is None
    assert _send(venue, _order("m", Side.BUY, 1, 20)) == []
    assert venue.book_health()["expired: no_liquidity"] == 1


def test_the_mode_is_a_venue_param() -> None:
    config = msgspec.convert(
        {"instruments": [SPOT], "book_from_quotes": "off"},
        PaperExchangeConfig,
        from_attributes=True,
    )
    assert config.book_from_quotes is QuoteBookMode.OFF
    try:
        msgspec.convert(
            {"instruments": [SPOT], "book_from_quotes": "always"},
            PaperExchangeConfig,
            from_attributes=True,
        )
    except msgspec.ValidationError as exc:
        assert "book_from_quotes" in str(exc)
    else:
        raise AssertionError("an unknown mode was taken")


def test_a_quote_built_venue_survives_a_checkpoint() -> None:
    venue = _venue()
    venue.on_market_event(_quote(10))
    twin = PaperExchange.restore(venue.snapshot())
    for v in (venue, twin):
        v.on_market_event(_quote(20, ask_lots=1))
    assert _send(twin, _order("m", Side.BUY, 2, 30)) == _send(venue, _order("m", Side.BUY, 2, 30))
    assert twin.book_health() == venue.book_health()


@given(
    quotes=st.lists(
        st.tuples(st.integers(1, 50), st.integers(0, 5), st.integers(1, 50), st.integers(0, 5)),
        min_size=1,
        max_size=8,
    ),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    lots=st.integers(1, 12),
)
def test_a_market_order_takes_the_last_quote_and_no_more(
    quotes: list[tuple[int, int, int, int]], side: Side, lots: int
) -> None:
    venue = _venue()
    last: tuple[int, int, int, int] | None = None
    for i, (bid_off, bid_lots, spread, ask_lots) in enumerate(quotes):
        bid = BID - bid_off
        venue.on_market_event(_quote(10 + i, bid, bid_lots, bid + spread, ask_lots))
        last = (bid, bid_lots, bid + spread, ask_lots)  # a spread >= 1: never crossed
    assert last is not None
    fills = _send(venue, _order("m", side, lots, 100))
    price, size = (last[2], last[3]) if side is Side.BUY else (last[0], last[1])
    want = min(lots, size)
    assert sum(f.qty_lots for f in fills) == want
    assert all(f.price_ticks == price for f in fills)
    view = _final(venue, "m")
    assert view.status is (OrderStatus.FILLED if want == lots else OrderStatus.EXPIRED)
    if want == 0:
        assert view.reason is RejectReason.NO_LIQUIDITY


def test_a_self_trade_expiry_is_left_to_the_refusals_count() -> None:
    """The runners count a self-trade expiry with the venue's refusals already: the venue's
    own expiry count (the summary's "venue expired" lines) leaves it out, never twice."""
    venue = _venue()
    venue.on_market_event(_quote(10))
    assert _send(venue, _order("ask", Side.SELL, 1, 20, limit=ASK - 1)) == []
    assert _send(venue, _order("buy", Side.BUY, 1, 30)) == []  # meets our own ask first
    assert _final(venue, "buy").reason is RejectReason.SELF_TRADE
    assert not [k for k in venue.book_health() if k.startswith("expired")]
