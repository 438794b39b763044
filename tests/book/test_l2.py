from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.book.l2 import BookError, DeltaResult, L2Book
from sapphire.model.events import BookDelta, BookSnapshot, Side

BUY, SELL = Side.BUY, Side.SELL


def snap(update_id: int, bids: list[tuple[int, int]], asks: list[tuple[int, int]]) -> BookSnapshot:
    return BookSnapshot(
        ts_event_ns=0, symbol="X", bids=tuple(bids), asks=tuple(asks), update_id=update_id
    )


def delta(
    side: Side, price: int, qty: int, first: int, final: int, prev: int = 0, last: bool = True
) -> BookDelta:
    return BookDelta(
        ts_event_ns=0,
        symbol="X",
        side=side,
        price_ticks=price,
        qty_lots=qty,
        first_update_id=first,
        final_update_id=final,
        prev_final_update_id=prev,
        last_in_batch=last,
    )


def book_100() -> L2Book:
    book = L2Book("X")
    book.apply_snapshot(snap(100, [(99, 5), (98, 7), (97, 1)], [(101, 3), (102, 4)]))
    return book


# -- queries ------------------------------------------------------------------------------
def test_queries_on_snapshot_return_best_first_levels_and_metrics() -> None:
    book = book_100()
    assert book.is_synced and book.last_update_id == 100
    assert book.best_bid() == (99, 5) and book.best_ask() == (101, 3)
    assert book.levels(BUY) == [(99, 5), (98, 7), (97, 1)]
    assert book.levels(SELL, 1) == [(101, 3)]
    assert book.levels(BUY, 2) == [(99, 5), (98, 7)]
    assert book.qty_at(BUY, 98) == 7 and book.qty_at(SELL, 98) == 0
    assert book.mid_ticks() == 100.0
    assert book.spread_ticks() == 2
    assert book.microprice_ticks() == pytest.approx((99 * 3 + 101 * 5) / 8)
    assert book.imbalance() == pytest.approx((5 - 3) / 8)
    assert book.imbalance(2) == pytest.approx((12 - 7) / 19)
    assert not book.is_crossed()
    assert len(book) == 5


def test_empty_book_queries_return_none() -> None:
    book = L2Book("X")
    assert not book.is_synced
    for q in (book.best_bid, book.best_ask, book.mid_ticks, book.spread_ticks):
        assert q() is None
    assert book.microprice_ticks() is None and book.imbalance() is None
    assert book.levels(BUY) == [] and not book.is_crossed()
    book.set_level(BUY, 10, 1)
    assert book.imbalance() is None and book.mid_ticks() is None
    with pytest.raises(ValueError):
        book.imbalance(0)


def test_set_level_zero_deletes_and_missing_delete_is_noop() -> None:
    book = book_100()
    book.set_level(BUY, 99, 0)
    assert book.best_bid() == (98, 7)
    book.set_level(BUY, 50, 0)
    assert book.levels(BUY) == [(98, 7), (97, 1)]
    book.set_level(SELL, 105, 2)
    assert book.levels(SELL) == [(101, 3), (102, 4), (105, 2)]
    with pytest.raises(BookError):
        book.set_level(SELL, 105, -1)


# -- crossing rule ------------------------------------------------------------------------
def test_bid_through_the_asks_removes_stale_asks_at_and_below_it() -> None:
    book = book_100()
    book.set_level(BUY, 102, 9)
    assert book.best_bid() == (102, 9)
    assert book.levels(SELL) == []
    assert not book.is_crossed()


def test_ask_at_best_bid_removes_that_bid_only() -> None:
    book = book_100()
    book.set_level(SELL, 99, 2)
    assert book.best_ask() == (99, 2)
    assert book.levels(BUY) == [(98, 7), (97, 1)]
    assert book.spread_ticks() == 1


# -- sequencing: spot ----------------------------------------------------------------------
def test_spot_first_diff_must_straddle_then_continue() -> None:
    book = book_100()
    assert book.apply_delta(delta(BUY, 99, 6, 90, 100)) is DeltaResult.STALE
    assert book.apply_delta(delta(BUY, 99, 6, 95, 105)) is DeltaResult.APPLIED
    assert book.apply_delta(delta(SELL, 101, 1, 106, 110)) is DeltaResult.APPLIED
    assert (book.best_bid(), book.best_ask(), book.last_update_id) == ((99, 6), (101, 1), 110)
    assert book.stale == 1 and book.gaps == 0


def test_spot_first_diff_after_the_snapshot_leaves_a_gap() -> None:
    book = book_100()
    assert book.apply_delta(delta(BUY, 99, 6, 102, 105)) is DeltaResult.GAP
    assert book.gaps == 1 and not book.is_synced
    assert book.best_bid() == (99, 5)  # a held diff does not touch the book


def test_gap_holds_diffs_and_resync_replays_those_after_the_new_snapshot() -> None:
    book = book_100()
    assert book.apply_delta(delta(BUY, 99, 6, 101, 110)) is DeltaResult.APPLIED
    assert book.apply_delta(delta(BUY, 99, 8, 115, 120)) is DeltaResult.GAP  # 111..114 lost
    assert book.apply_delta(delta(BUY, 98, 1, 121, 130)) is DeltaResult.GAP
    assert book.apply_delta(delta(SELL, 103, 2, 131, 140)) is DeltaResult.GAP
    assert book.gaps == 1 and book.last_update_id == 110
    # The REST snapshot was taken at 125: 115..120 is stale, 121..130 straddles, 131.. follows.
    book.apply_snapshot(snap(125, [(99, 8), (98, 9)], [(101, 3)]))
    assert book.is_synced and book.last_update_id == 140
    assert book.levels(BUY) == [(99, 8), (98, 1)]
    assert book.levels(SELL) == [(101, 3), (103, 2)]
    assert book.stale == 1
    assert book.apply_delta(delta(SELL, 101, 0, 141, 150)) is DeltaResult.APPLIED
    assert book.best_ask() == (103, 2)


def test_diffs_before_the_first_snapshot_are_held_without_counting_a_gap() -> None:
    book = L2Book("X")
    assert book.apply_delta(delta(BUY, 50, 1, 90, 99)) is DeltaResult.GAP
    assert book.apply_delta(delta(BUY, 51, 1, 100, 104)) is DeltaResult.GAP
    assert book.gaps == 0
    book.apply_snapshot(snap(102, [(49, 1)], [(60, 1)]))
    assert book.levels(BUY) == [(51, 1), (49, 1)]
    assert book.last_update_id == 104


def test_resync_fails_again_when_held_diffs_do_not_bridge_the_snapshot() -> None:
    book = L2Book("X")
    book.apply_delta(delta(BUY, 50, 1, 200, 210))
    book.apply_snapshot(snap(150, [(49, 1)], [(60, 1)]))
    assert not book.is_synced and book.gaps == 1
    assert book.apply_delta(delta(BUY, 50, 1, 211, 220)) is DeltaResult.GAP


def test_max_pending_drops_the_oldest_held_diffs() -> None:
    small, large = L2Book("X", max_pending=2), L2Book("X")
    for book in (small, large):
        for i in range(5):
            book.apply_delta(delta(BUY, 50 + i, 1, 100 + 10 * i, 109 + 10 * i))
        book.apply_snapshot(snap(115, [], [(60, 1)]))
    # small kept only 130.. and 140..: nothing bridges 116 any more.
    assert not small.is_synced and small.gaps == 1 and small.levels(BUY) == []
    assert large.is_synced and large.levels(BUY) == [(54, 1), (53, 1), (52, 1), (51, 1)]


# -- sequencing: futures and multi-level messages --------------------------------------------
def test_futures_continuation_uses_pu_and_first_may_match_pu() -> None:
    book = book_100()
    assert book.apply_delta(delta(BUY, 99, 6, 103, 108, prev=100)) is DeltaResult.APPLIED
    assert book.apply_delta(delta(BUY, 99, 7, 111, 115, prev=108)) is DeltaResult.APPLIED
    assert book.apply_delta(delta(BUY, 99, 8, 120, 125, prev=116)) is DeltaResult.GAP
    assert book.best_bid() == (99, 7) and book.gaps == 1


def test_levels_of_one_message_are_checked_once_and_applied_together() -> None:
    book = book_100()
    parts = [(BUY, 100, 2), (SELL, 101, 0), (SELL, 103, 5)]
    results = [
        book.apply_delta(delta(s, p, q, 95, 105, prev=90, last=i == len(parts) - 1))
        for i, (s, p, q) in enumerate(parts)
    ]
    assert results == [DeltaResult.APPLIED] * 3
    assert book.levels(SELL) == [(102, 4), (103, 5)] and book.best_bid() == (100, 2)
    # A replay of the same message is stale, level by level.
    assert book.apply_delta(delta(BUY, 100, 9, 95, 105, prev=90, last=False)) is DeltaResult.STALE
    assert book.best_bid() == (100, 2)


def test_a_message_missing_its_last_level_is_closed_by_the_next_one() -> None:
    book = book_100()
    book.apply_delta(delta(BUY, 99, 1, 95, 105, last=False))
    assert book.apply_delta(delta(BUY, 99, 2, 106, 107)) is DeltaResult.APPLIED
    assert book.apply_delta(delta(BUY, 99, 3, 95, 105)) is DeltaResult.STALE
    assert book.best_bid() == (99, 2)


# -- bad input ------------------------------------------------------------------------------
def test_bad_delta_is_rejected_and_counted() -> None:
    book = book_100()
    assert book.apply_delta(delta(BUY, 99, -1, 101, 101)) is DeltaResult.REJECTED
    assert book.apply_delta(delta(BUY, 0, 1, 101, 101)) is DeltaResult.REJECTED
    assert book.rejected == 2 and book.last_update_id == 100


def test_crossed_or_negative_snapshot_raises_and_leaves_the_book() -> None:
    book = book_100()
    with pytest.raises(BookError, match="crossed"):
        book.apply_snapshot(snap(200, [(101, 1)], [(101, 1)]))
    with pytest.raises(BookError):
        book.apply_snapshot(snap(200, [(99, -1)], []))
    assert book.last_update_id == 100 and book.best_ask() == (101, 3)


def test_clear_forgets_levels_and_sync() -> None:
    book = book_100()
    book.clear()
    assert len(book) == 0 and not book.is_synced and book.last_update_id == 0


def test_snapshot_bytes_restore_round_trip() -> None:
    book = book_100()
    book.apply_delta(delta(BUY, 99, 6, 95, 105))
    other = L2Book("X")
    other.restore(book.snapshot())
    assert other.levels(BUY) == book.levels(BUY) and other.levels(SELL) == book.levels(SELL)
    assert other.last_update_id == 105 and other.is_synced
    assert other.apply_delta(delta(BUY, 99, 7, 106, 110)) is DeltaResult.APPLIED
    with pytest.raises(BookError):
        L2Book("Y").restore(book.snapshot())
    with pytest.raises(BookError):
        L2Book("X").restore(b"\x00garbage")


def test_a_book_restored_in_a_gap_replays_its_held_diffs_after_the_next_snapshot() -> None:
    # a checkpoint taken while the book waits for a snapshot lost the diffs it held: the
    # restored book resynced without them and traded on another book than the original
    book = book_100()
    book.apply_delta(delta(BUY, 99, 8, 115, 120))  # 101..114 lost: a gap
    book.apply_delta(delta(BUY, 98, 1, 121, 130))
    book.apply_delta(delta(SELL, 103, 2, 131, 140))
    other = L2Book("X")
    other.restore(book.snapshot())
    assert not other.is_synced and other.gaps == book.gaps
    resync = snap(125, [(99, 8), (98, 9)], [(101, 3)])
    for b in (book, other):
        b.apply_snapshot(resync)
    assert other.last_update_id == book.last_update_id == 140
    assert other.levels(BUY) == book.levels(BUY) == [(99, 8), (98, 1)]
    assert other.levels(SELL) == book.levels(SELL) == [(101, 3), (103, 2)]
    assert other.stale == book.stale


# -- property: a valid sequence never leaves a crossed book -------------------------------------
levels_st = st.lists(st.tuples(st.integers(1, 60), st.integers(1, 50)), max_size=8)
updates_st = st.lists(
    st.lists(
        st.tuples(st.sampled_from([BUY, SELL]), st.integers(1, 60), st.integers(0, 50)),
        min_size=1,
        max_size=4,
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(bids=levels_st, asks=levels_st, messages=updates_st, futures=st.booleans())
def test_valid_sequences_never_cross_and_keep_best_consistent(
    bids: list[tuple[int, int]],
    asks: list[tuple[int, int]],
    messages: list[list[tuple[Side, int, int]]],
    futures: bool,
) -> None:
    bid_levels = {p: q for p, q in bids if p < 30}
    ask_levels = {p: q for p, q in asks if p > 30}
    book = L2Book("X")
    book.apply_snapshot(snap(1000, list(bid_levels.items()), list(ask_levels.items())))
    prev = 1000
    for parts in messages:
        first, final = prev + 1, prev + len(parts)
        for i, (side, price, qty) in enumerate(parts):
            result = book.apply_delta(
                delta(side, price, qty, first, final, prev if futures else 0, i == len(parts) - 1)
            )
            assert result is DeltaResult.APPLIED
            assert not book.is_crossed()
            if qty:
                assert book.qty_at(side, price) == qty
        prev = final
        bid_px = [p for p, _ in book.levels(BUY)]
        ask_px = [p for p, _ in book.levels(SELL)]
        assert bid_px == sorted(bid_px, reverse=True) and ask_px == sorted(ask_px)
        assert all(q > 0 for _, q in book.levels(BUY) + book.levels(SELL))
    assert book.gaps == 0 and book.last_update_id == prev


def test_plain_int_sides_work_and_unknown_sides_are_rejected() -> None:
    book = book_100()
    raw = delta(BUY, 100, 4, 95, 105)
    as_int = BookDelta(**{**{f: getattr(raw, f) for f in raw.__struct_fields__}, "side": 1})
    assert book.apply_delta(as_int) is DeltaResult.APPLIED
    assert book.best_bid() == (100, 4) and book.qty_at(1, 100) == 4  # type: ignore[arg-type]
    bad = BookDelta(**{**{f: getattr(raw, f) for f in raw.__struct_fields__}, "side": 0})
    assert book.apply_delta(bad) is DeltaResult.REJECTED
    with pytest.raises(ValueError):
        book.levels(BUY, -1)


def test_a_book_restored_mid_message_applies_the_rest_as_the_original() -> None:
    """A checkpoint may fall inside a message (a replay's event cap cuts one): the restored
    book knows the message is open, and that the next diff must straddle its snapshot."""
    book = book_100()
    copy = L2Book("X")
    copy.restore(book.snapshot())
    # straight after a snapshot, a spot diff that straddles it (U <= 101 <= u) is accepted
    assert copy.apply_delta(delta(BUY, 99, 6, 95, 105)) is DeltaResult.APPLIED
    # the message's first level (it straddles the snapshot), the checkpoint, then its rest
    assert book.apply_delta(delta(BUY, 100, 1, 95, 105, last=False)) is DeltaResult.APPLIED
    copy = L2Book("X")
    copy.restore(book.snapshot())
    rest = delta(SELL, 103, 2, 95, 105)
    assert copy.apply_delta(rest) is book.apply_delta(rest) is DeltaResult.APPLIED
    assert copy.levels(SELL) == book.levels(SELL) and copy.levels(BUY) == book.levels(BUY)


def test_a_message_whose_last_level_is_bad_is_over() -> None:
    """The last level rejected (a negative size) still ends its message: a later message
    with the same ids is checked again (stale), not taken for the rest of it."""
    book = book_100()
    assert book.apply_delta(delta(BUY, 99, 6, 101, 105, last=False)) is DeltaResult.APPLIED
    assert book.apply_delta(delta(SELL, 102, -1, 101, 105)) is DeltaResult.REJECTED
    assert book.apply_delta(delta(BUY, 98, 1, 101, 105)) is DeltaResult.STALE
    assert book.levels(BUY)[:2] == [(99, 6), (98, 7)]


def test_a_snapshot_older_than_the_synced_book_is_dropped_and_counted() -> None:
    """A late REST answer (update id 90) after the book moved on to 110: it replaced the
    live book, the next diff was then a gap, and the book stayed frozen."""
    book = book_100()
    assert book.apply_delta(delta(BUY, 99, 6, 101, 110)) is DeltaResult.APPLIED
    book.apply_snapshot(snap(90, [(95, 1)], [(96, 1)]))
    assert book.stale_snapshots == 1 and book.is_synced and book.last_update_id == 110
    assert book.best_bid() == (99, 6) and book.best_ask() == (101, 3)
    assert book.apply_delta(delta(SELL, 101, 0, 111, 120)) is DeltaResult.APPLIED
    assert book.best_ask() == (102, 4) and book.gaps == 0
    # a newer one still replaces it, and the count survives a restore
    book.apply_snapshot(snap(130, [(99, 1)], [(100, 1)]))
    assert book.levels(BUY) == [(99, 1)] and book.last_update_id == 130
    again = L2Book("X")
    again.restore(book.snapshot())
    assert again.stale_snapshots == 1
    # a book pickled before it was counted (a venue actor's checkpoint) still takes one
    import pickle

    old = L2Book("X")
    old.apply_snapshot(snap(100, [(99, 1)], [(101, 1)]))
    del old.__dict__["stale_snapshots"]
    restored = pickle.loads(pickle.dumps(old))
    restored.apply_snapshot(snap(90, [(95, 1)], [(96, 1)]))
    assert restored.stale_snapshots == 1


def test_levels_of_a_feed_without_update_ids_are_applied_as_they_come() -> None:
    """Tardis diffs carry no ids (all 0): every one was dropped as stale after the day's
    snapshot, so a venue replaying them kept the opening book all day."""
    book = L2Book("X")
    book.apply_snapshot(snap(0, [(99, 5)], [(101, 3)]))
    assert book.apply_delta(delta(SELL, 100, 2, 0, 0, last=False)) is DeltaResult.APPLIED
    assert book.apply_delta(delta(BUY, 99, 0, 0, 0)) is DeltaResult.APPLIED
    assert book.apply_delta(delta(BUY, 98, 4, 0, 0)) is DeltaResult.APPLIED
    assert book.levels(BUY) == [(98, 4)] and book.levels(SELL) == [(100, 2), (101, 3)]
    assert book.is_synced and book.stale == 0 and book.gaps == 0
    # without a snapshot first, the levels are the book
    fresh = L2Book("X")
    assert fresh.apply_delta(delta(BUY, 98, 4, 0, 0)) is DeltaResult.APPLIED
    assert fresh.is_synced and fresh.best_bid() == (98, 4)
