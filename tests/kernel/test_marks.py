"""The one mark-price rule (sapphire.kernel.marks): quotes, else trades, else bar closes."""

from __future__ import annotations

from sapphire.kernel.marks import MarkBook
from sapphire.model.events import Bar, Quote, Side, Trade


def bar(close: int, symbol: str = "BTCUSD") -> Bar:
    return Bar(
        ts_event_ns=0,
        symbol=symbol,
        interval_ns=60_000_000_000,
        open_ticks=close - 5,
        high_ticks=close + 5,
        low_ticks=close - 10,
        close_ticks=close,
        volume_lots=7,
    )


def test_a_bar_only_symbol_is_marked_at_each_close() -> None:
    """Bar strategies have no quotes: risk needs the close as the mark (else every order is
    denied risk_no_market)."""
    marks = MarkBook()
    assert marks.get("BTCUSD") is None
    marks.update(bar(700_000))
    assert marks.get("BTCUSD") == 700_000.0
    marks.update(bar(700_123))
    assert marks.get("BTCUSD") == 700_123.0


def test_quotes_outrank_trades_and_bars() -> None:
    marks = MarkBook()
    marks.update(Trade(ts_event_ns=0, symbol="X", price_ticks=99, qty_lots=1, taker_side=Side.BUY))
    assert marks.get("X") == 99.0
    q = Quote(ts_event_ns=1, symbol="X", bid_ticks=100, bid_lots=1, ask_ticks=102, ask_lots=1)
    marks.update(q)
    marks.update(bar(90, "X"))
    marks.update(Trade(ts_event_ns=2, symbol="X", price_ticks=50, qty_lots=1, taker_side=Side.SELL))
    assert marks.get("X") == 101.0  # the mid, whatever trades or bars say


def test_a_depth_recording_is_marked_by_its_trades_after_its_snapshot() -> None:
    # a snapshot, then deltas (not folded here) and trades, no quote stream: the mark moves
    # on with the trades instead of freezing at the snapshot's mid for the rest of the run
    from sapphire.model.events import BookSnapshot

    marks = MarkBook()
    marks.update(BookSnapshot(ts_event_ns=0, symbol="X", bids=((100, 1),), asks=((102, 1),)))
    assert marks.get("X") == 101.0
    marks.update(Trade(ts_event_ns=1, symbol="X", price_ticks=150, qty_lots=1, taker_side=Side.BUY))
    assert marks.get("X") == 150.0
    # a crossed or empty-priced snapshot or a zero close is no mark
    marks.update(BookSnapshot(ts_event_ns=2, symbol="X", bids=((200, 1),), asks=((199, 1),)))
    marks.update(bar(0, "X"))
    assert marks.get("X") == 150.0


def test_a_stopped_quote_stream_hands_the_mark_to_trades_and_snapshots() -> None:
    """A recording whose quotes ended 46 s before its trades kept every PnL row of those
    46 s at the last quote; a late snapshot's mid replaced a live quote's."""
    from sapphire.kernel.marks import QUOTE_STALE_NS
    from sapphire.model.events import BookSnapshot

    marks = MarkBook()
    marks.update(
        Quote(ts_event_ns=0, symbol="X", bid_ticks=100, bid_lots=1, ask_ticks=102, ask_lots=1)
    )
    live = QUOTE_STALE_NS - 1
    marks.update(
        Trade(ts_event_ns=live, symbol="X", price_ticks=90, qty_lots=1, taker_side=Side.SELL)
    )
    snap = BookSnapshot(ts_event_ns=live, symbol="X", bids=((80, 1),), asks=((82, 1),))
    marks.update(snap)
    assert marks.get("X") == 101.0  # the quotes are live: they mark
    stale = QUOTE_STALE_NS
    marks.update(
        Trade(ts_event_ns=stale, symbol="X", price_ticks=90, qty_lots=1, taker_side=Side.SELL)
    )
    assert marks.get("X") == 90.0
    later = BookSnapshot(ts_event_ns=stale + 1, symbol="X", bids=((80, 1),), asks=((82, 1),))
    marks.update(later)
    assert marks.get("X") == 81.0
    # the quotes come back: they mark again
    marks.update(
        Quote(ts_event_ns=stale + 2, symbol="X", bid_ticks=84, bid_lots=1, ask_ticks=86, ask_lots=1)
    )
    marks.update(
        Trade(ts_event_ns=stale + 3, symbol="X", price_ticks=99, qty_lots=1, taker_side=Side.BUY)
    )
    assert marks.get("X") == 85.0


def test_a_mark_book_of_an_older_checkpoint_keeps_its_quoted_symbols_quoted() -> None:
    """Checkpoints written before quotes were timed hold a set of quoted symbols: those stay
    marked by quotes only until their next quote times them."""
    from sapphire.kernel.marks import QUOTE_STALE_NS

    old = MarkBook.__new__(MarkBook)
    old.__setstate__((None, {"marks": {"X": 101.0}, "quoted": {"X"}}))
    later = 10 * QUOTE_STALE_NS
    old.update(
        Trade(ts_event_ns=later, symbol="X", price_ticks=90, qty_lots=1, taker_side=Side.SELL)
    )
    assert old.get("X") == 101.0
    old.update(
        Quote(ts_event_ns=later, symbol="X", bid_ticks=84, bid_lots=1, ask_ticks=86, ask_lots=1)
    )
    stale = later + QUOTE_STALE_NS
    old.update(
        Trade(ts_event_ns=stale, symbol="X", price_ticks=90, qty_lots=1, taker_side=Side.SELL)
    )
    assert old.get("X") == 90.0
