"""Rebuild the recorded Binance books and check them against the README's verified BBOs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sapphire.book.fast import FastBook, ReplayResult, replay_depth
from sapphire.book.l2 import DeltaResult, L2Book
from sapphire.book.sync import SyncPlan, sync_plan
from sapphire.model.events import BookSnapshot, Side
from tests.book.depth_io import (
    SPOT,
    SPOT_LOT,
    SPOT_TICK,
    USDM,
    USDM_LOT,
    USDM_TICK,
    events,
    load_depth,
)

# (file, session) -> best bid / ask in ticks after the last applied diff (data README, book/).
VERIFIED = {
    ("usdm", "2024-08-08"): (616_597, 616_598),
    ("usdm", "2024-07-18"): (638_674, 638_675),
    ("usdm", "2023-04-04"): (281_401, 281_402),
    ("spot", "2024-08-08"): (6_160_201, 6_160_202),
}


@pytest.fixture(scope="module")
def depth(shared_data: Path) -> dict[str, pl.DataFrame]:
    return {
        "usdm": load_depth(shared_data / USDM, USDM_TICK, USDM_LOT),
        "spot": load_depth(shared_data / SPOT, SPOT_TICK, SPOT_LOT),
    }


def session(depth: dict[str, pl.DataFrame], venue: str, name: str) -> pl.DataFrame:
    return depth[venue].filter(pl.col("session") == name)


def fast_rebuild(df: pl.DataFrame) -> tuple[SyncPlan, FastBook, ReplayResult]:
    plan = sync_plan(
        df["is_snapshot"].to_numpy(),
        df["first_update_id"].to_numpy(),
        df["final_update_id"].to_numpy(),
        df["prev_final_update_id"].to_numpy(),
    )
    side, price, qty = (df[c].to_numpy()[plan.order] for c in ("side", "price", "qty"))
    book, rec = replay_depth(side, price, qty, reset=plan.reset)
    return plan, book, rec


@pytest.mark.parametrize(("venue", "name"), sorted(VERIFIED))
def test_fast_rebuild_matches_verified_bbo(
    depth: dict[str, pl.DataFrame], venue: str, name: str
) -> None:
    df = session(depth, venue, name)
    plan, book, rec = fast_rebuild(df)
    assert plan.gaps == 0 and len(plan.order) > 0.99 * df.height
    bid, ask = book.best_bid(), book.best_ask()
    assert bid is not None and ask is not None
    assert (bid[0], ask[0]) == VERIFIED[venue, name]
    assert (rec.bid_px[-1], rec.ask_px[-1]) == VERIFIED[venue, name]
    ends = np.flatnonzero(plan.msg_end)
    assert np.all(rec.bid_px[ends] < rec.ask_px[ends])  # never crossed at a message end


def test_spot_session_without_a_snapshot_never_syncs(depth: dict[str, pl.DataFrame]) -> None:
    plan, book, _ = fast_rebuild(session(depth, "spot", "2023-04-05"))
    assert len(plan.order) == 0 and plan.gaps == 0 and len(book) == 0


def l2_rebuild(df: pl.DataFrame) -> tuple[L2Book, dict[int, tuple[int, int]]]:
    """Feed rows in file order; the BBO after every applied message, keyed by its last row."""
    book = L2Book("BTCUSDT")
    seen: dict[int, tuple[int, int]] = {}
    for row, event in events(df):
        if isinstance(event, BookSnapshot):
            book.apply_snapshot(event)
        elif book.apply_delta(event) is DeltaResult.APPLIED and event.last_in_batch:
            bid, ask = book.best_bid(), book.best_ask()
            assert bid is not None and ask is not None and bid[0] < ask[0]
            seen[row] = (bid[0], ask[0])
    return book, seen


# The 2024-07-18 session opens with diffs that arrive before their snapshot: the slice covers
# that buffering path and some 8,000 messages after it.
@pytest.mark.parametrize(
    ("venue", "name", "rows"), [("usdm", "2024-07-18", 60_000), ("spot", "2024-08-08", 40_000)]
)
def test_fast_equals_l2book_after_every_message(
    depth: dict[str, pl.DataFrame], venue: str, name: str, rows: int
) -> None:
    df = session(depth, venue, name).head(rows)
    ref, seen = l2_rebuild(df)
    plan, book, rec = fast_rebuild(df)
    pos = {int(r): i for i, r in enumerate(plan.order)}
    assert len(seen) > 1_000
    for row, bbo in seen.items():
        assert (rec.bid_px[pos[row]], rec.ask_px[pos[row]]) == bbo, row
    assert book.levels(Side.BUY, 200) == ref.levels(Side.BUY, 200)
    assert book.levels(Side.SELL, 200) == ref.levels(Side.SELL, 200)


@pytest.mark.parametrize(("venue", "name"), sorted(VERIFIED))
def test_l2book_rebuild_matches_verified_bbo(
    depth: dict[str, pl.DataFrame], venue: str, name: str
) -> None:
    book, seen = l2_rebuild(session(depth, venue, name))
    assert book.is_synced and book.gaps == 0 and len(seen) > 1_000
    assert seen[max(seen)] == VERIFIED[venue, name]
