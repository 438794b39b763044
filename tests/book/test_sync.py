from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.book.fast import replay_depth
from sapphire.book.l2 import L2Book
from sapphire.book.sync import sync_plan
from sapphire.model.events import BookDelta, BookSnapshot, Side

# One row: (is_snapshot, U, u, pu, side, price, qty)
Row = tuple[int, int, int, int, int, int, int]


def plan_rows(rows: list[Row], max_pending: int = 100_000) -> tuple[list[int], int, int]:
    a = np.array(rows, dtype=np.int64).reshape(-1, 7)
    plan = sync_plan(a[:, 0], a[:, 1], a[:, 2], a[:, 3], max_pending=max_pending)
    return plan.order.tolist(), plan.gaps, plan.stale


def test_spot_rows_before_the_snapshot_are_held_and_stale_ones_dropped() -> None:
    rows: list[Row] = [
        (0, 90, 99, 0, 1, 50, 1),  # stale once the snapshot (100) arrives
        (0, 100, 104, 0, 1, 51, 1),  # straddles 101
        (0, 100, 104, 0, -1, 60, 2),  # same message
        (1, 0, 100, 0, 1, 49, 1),
        (1, 0, 100, 0, -1, 61, 1),
        (0, 105, 110, 0, -1, 61, 0),
        (0, 120, 130, 0, -1, 62, 1),  # gap
        (0, 131, 140, 0, -1, 63, 1),  # held, never bridged
    ]
    order, gaps, stale = plan_rows(rows)
    assert order == [3, 4, 1, 2, 5]
    assert (gaps, stale) == (1, 1)


def test_futures_rows_continue_on_pu() -> None:
    rows: list[Row] = [
        (1, 0, 100, 0, 1, 49, 1),
        (0, 95, 103, 90, 1, 50, 1),
        (0, 107, 109, 103, 1, 50, 2),
        (0, 115, 120, 110, 1, 50, 3),  # pu breaks
    ]
    order, gaps, _ = plan_rows(rows)
    assert order == [0, 1, 2] and gaps == 1


def test_sync_plan_rejects_ragged_columns() -> None:
    with pytest.raises(ValueError):
        sync_plan([1, 0], [0], [1, 2], [0, 0])
    with pytest.raises(ValueError):
        sync_plan([1], [0], [1], [0], max_pending=0)


@st.composite
def streams(draw: st.DrawFn) -> list[Row]:
    """A feed in arrival order: mostly continuous diffs, with gaps, replays and snapshots."""
    futures = draw(st.booleans())
    rows: list[Row] = []
    u = draw(st.integers(10, 50))
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["diff"] * 6 + ["gap", "old", "snap"]))
        if kind == "snap":
            # The snapshot lags the stream a little, as a REST response does.
            sid = max(1, u - draw(st.integers(0, 6)))
            for side, price in ((1, draw(st.integers(1, 20))), (-1, draw(st.integers(21, 40)))):
                rows.append((1, 0, sid, 0, side, price, draw(st.integers(1, 9))))
            continue
        step = draw(st.integers(1, 4))
        if kind == "gap":
            first, final, prev = u + 3, u + 3 + step, u + 2
        elif kind == "old":
            first, final, prev = u - 5, u - 5 + step, u - 6
        else:
            first, final, prev = u + 1, u + step, u
        u = max(u, final)
        for _ in range(draw(st.integers(1, 3))):
            side = draw(st.sampled_from([1, -1]))
            price = draw(st.integers(1, 40))
            rows.append(
                (0, first, final, prev if futures else 0, side, price, draw(st.integers(0, 9)))
            )
    return rows


def l2_replay(rows: list[Row]) -> L2Book:
    book = L2Book("X")
    bids: list[tuple[int, int]] = []
    asks: list[tuple[int, int]] = []
    for k, (snap, first, final, prev, side, price, qty) in enumerate(rows):
        nxt = rows[k + 1] if k + 1 < len(rows) else None
        ends = nxt is None or nxt[:4] != (snap, first, final, prev)
        if snap:
            (bids if side == 1 else asks).append((price, qty))
            if ends:
                book.apply_snapshot(
                    BookSnapshot(
                        ts_event_ns=0,
                        symbol="X",
                        bids=tuple(bids),
                        asks=tuple(asks),
                        update_id=final,
                    )
                )
                bids, asks = [], []
            continue
        book.apply_delta(
            BookDelta(
                ts_event_ns=0,
                symbol="X",
                side=Side(side),
                price_ticks=price,
                qty_lots=qty,
                first_update_id=first,
                final_update_id=final,
                prev_final_update_id=prev,
                last_in_batch=ends,
            )
        )
    return book


@settings(max_examples=200, deadline=None)
@given(rows=streams())
def test_plan_plus_fast_replay_equals_l2book_on_any_stream(rows: list[Row]) -> None:
    ref = l2_replay(rows)
    a = np.array(rows, dtype=np.int64).reshape(-1, 7)
    plan = sync_plan(a[:, 0], a[:, 1], a[:, 2], a[:, 3])
    book, _ = replay_depth(
        a[plan.order, 4].astype(np.int8), a[plan.order, 5], a[plan.order, 6], reset=plan.reset
    )
    assert (plan.gaps, plan.stale) == (ref.gaps, ref.stale)
    assert book.levels(Side.BUY) == ref.levels(Side.BUY)
    assert book.levels(Side.SELL) == ref.levels(Side.SELL)
    assert not ref.is_crossed()
