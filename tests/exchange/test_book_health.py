"""What the run summary says of the venue's books: a book that diffs came to and no snapshot
ever synced offered no liquidity for the whole run; it was said nowhere (a spot session with
no snapshot: 2,317 orders, 2,316 expired, 0 fills, and no reason on the screen)."""

from __future__ import annotations

from sapphire.exchange.config import PaperExchangeBuilder
from sapphire.exchange.paper import PaperExchange
from sapphire.model.events import BookDelta, BookSnapshot, Side
from sapphire.model.instrument import Instrument

SPOT = Instrument(symbol="BTCUSDT", base="BTC", quote="USDT", tick_size="0.01", lot_size="0.001")
IDLE = Instrument(symbol="ETHUSDT", base="ETH", quote="USDT", tick_size="0.01", lot_size="0.001")


def _venue() -> PaperExchange:
    return PaperExchange(
        PaperExchangeBuilder().instrument(SPOT).instrument(IDLE).balance("USDT", "1000").config()
    )


def _diff(ts: int, first: int, final: int, prev: int) -> BookDelta:
    return BookDelta(
        ts_event_ns=ts,
        symbol="BTCUSDT",
        side=Side.BUY,
        price_ticks=6_000_000,
        qty_lots=5,
        first_update_id=first,
        final_update_id=final,
        prev_final_update_id=prev,
    )


def test_a_book_no_snapshot_ever_synced_is_counted_an_idle_one_is_not() -> None:
    venue = _venue()
    for i in range(3):
        venue.on_market_event(_diff(10 + i, 100 + i, 100 + i, 99 + i))
    health = venue.book_health()
    assert health["never_synced"] == 1  # BTCUSDT; ETHUSDT had no data: nothing to say
    assert health["out_of_sync_at_end"] == 0 and health["sequence_gaps"] == 0
    venue.on_market_event(
        BookSnapshot(
            ts_event_ns=20,
            symbol="BTCUSDT",
            bids=((6_000_000, 1),),
            asks=((6_000_100, 1),),
            update_id=101,
        )
    )
    assert venue.book_health()["never_synced"] == 0


def test_the_screen_says_so() -> None:
    from tests.cli.test_summary import _screen, _summary

    screen = _screen(_summary(venue_books={"never_synced": 1}))
    assert "venue book: never synced (diffs, and no snapshot ever came: no liquidity)" in screen
