"""The book's size grid is the venue's size precision, not the order lot step (issue #16 item 4).

Binance spot BTCUSDT orders step by 0.00001 BTC, but its depth stream reports far levels such as
4690.343896 BTC at 12,000 USDT: levels aggregate orders placed under older, finer steps. The
book takes every recorded size exactly (8 decimals); orders are still checked on the lot step.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest

from sapphire.book.fast import replay_depth
from sapphire.book.l2 import L2Book
from sapphire.book.sync import sync_plan
from sapphire.data.convert import EventBuilder
from sapphire.data.instruments import known_instrument, with_ticks
from sapphire.data.registry import load_frame
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import RejectStats, RowReject
from sapphire.exchange.validation import check_filters
from sapphire.model.events import BookDelta, Side
from sapphire.model.instrument import Instrument, InstrumentError, Rounding
from sapphire.model.orders import OrderType, RejectReason

DEPTH = "book/hftbacktest_binance-spot_BTCUSDT_depth.csv.gz"
BBO = "book/hftbacktest_binance-spot_BTCUSDT_bbo.csv.gz"
SPOT = known_instrument("binance-spot", "BTCUSDT")
assert SPOT is not None
LOT_ONLY = msgspec.structs.replace(SPOT, size_increment="")


def _off_step() -> pl.Expr:
    scaled = pl.col("qty") / float(SPOT.lot_size)
    return (scaled - scaled.round()).abs() > 1e-3


@pytest.fixture(scope="module")
def depth(shared_data: Path) -> pl.DataFrame:
    return load_frame(shared_data / DEPTH)


def test_instrument_grids() -> None:
    assert (SPOT.lot, SPOT.lot_step, SPOT.lots_per_step) == (
        Decimal("0.00000001"),
        Decimal("0.00001"),
        1000,
    )
    assert (LOT_ONLY.lot, LOT_ONLY.lots_per_step) == (Decimal("0.00001"), 1)
    assert SPOT.qty_to_lots("4690.343896") == 469_034_389_600
    assert SPOT.order_qty_to_lots("0.123456789") == 12_345_000
    assert SPOT.order_qty_to_lots("0.123456789", Rounding.UP) == 12_346_000
    # money is unchanged by the finer unit: 1 BTC at 60,000 USDT either way
    assert SPOT.notional_quote(6_000_000, 100_000_000) == Decimal("60000")
    assert LOT_ONLY.notional_quote(6_000_000, 100_000) == Decimal("60000")
    assert (SPOT.min_qty_lots, SPOT.max_qty_lots) == (1_000, 900_000_000_000)
    with pytest.raises(InstrumentError, match="not a whole multiple of size_increment"):
        Instrument(symbol="X", tick_size="0.01", lot_size="0.00001", size_increment="0.00003")
    with pytest.raises(InstrumentError, match="size_increment must be > 0"):
        Instrument(symbol="X", tick_size="0.01", lot_size="0.00001", size_increment="0")


def test_orders_are_still_checked_on_the_lot_step() -> None:
    fine = SPOT.qty_to_lots("0.001234")  # on the book grid, not a multiple of 0.00001
    bad = check_filters(SPOT, OrderType.LIMIT, 6_000_000, fine, 0)
    assert bad is not None and bad[0] is RejectReason.INVALID_LOT
    assert "not a multiple of the lot step 0.00001" in bad[1]
    assert check_filters(SPOT, OrderType.LIMIT, 6_000_000, SPOT.qty_to_lots("0.00123"), 0) is None
    # min_qty and min_notional are in the same units
    low = check_filters(SPOT, OrderType.LIMIT, 6_000_000, SPOT.lots_per_step, 0)
    assert low is not None and low[0] is RejectReason.MIN_NOTIONAL


def _build(instrument: Instrument, chunk: pl.DataFrame) -> tuple[list[BookDelta], RejectStats]:
    stats = RejectStats()
    builder = EventBuilder(FrameKind.DEPTH, instrument, stats)
    events = [e for _, e in builder.feed(chunk)] + [e for _, e in builder.finish()]
    return [e for e in events if isinstance(e, BookDelta)], stats


def test_loader_applies_the_rows_it_used_to_drop(depth: pl.DataFrame) -> None:
    """The recorded diff messages holding sizes off the lot step, each checked on its own."""
    fine = depth.filter(_off_step() & ~pl.col("is_snapshot"))
    assert fine.height == 22  # 15 in session 2023-04-05, 7 in 2024-08-08
    messages = depth.filter(pl.col("final_update_id").is_in(fine["final_update_id"].implode()))
    # each message is its own window here: the slice skips the messages between them
    chunk = messages.with_columns(session=pl.format("{}-{}", "session", "final_update_id"))
    exact = {
        (int(u), round(p * 100)): SPOT.qty_to_lots(repr(q))
        for u, p, q in fine.select("final_update_id", "price", "qty").iter_rows()
    }

    applied, stats = _build(SPOT, chunk)
    assert stats.counts == {} and stats.rows_out == messages.height
    got = {(d.final_update_id, d.price_ticks): d.qty_lots for d in applied}
    assert {k: got[k] for k in exact} == exact

    # On the lot grid the same rows are off it, all 22: 14 of them were once rounded to the
    # nearest lot (the loader's tolerance grew with the size: 4690.343896 became 4690.3439)
    on_lot, lot_stats = _build(LOT_ONLY, chunk)
    assert lot_stats.counts == {RowReject.OFF_GRID: 22}
    rounded = {(d.final_update_id, d.price_ticks): d.qty_lots for d in on_lot}
    assert not [k for k in exact if k in rounded]


def test_rebuilt_book_holds_the_fine_levels_and_matches_bookticker(
    shared_data: Path, depth: pl.DataFrame
) -> None:
    """Session 2024-08-08: replay on the size grid; every fine level lands exactly, and at
    each diff whose final update id a bookTicker row carries, best prices *and sizes* agree."""
    d = with_ticks(depth.filter(pl.col("session") == "2024-08-08"), SPOT)
    bbo = with_ticks(load_frame(shared_data / BBO).filter(pl.col("session") == "2024-08-08"), SPOT)
    plan = sync_plan(
        d["is_snapshot"].to_numpy(),
        d["first_update_id"].to_numpy(),
        d["final_update_id"].to_numpy(),
        d["prev_final_update_id"].to_numpy(),
    )
    assert plan.gaps == 0
    side, price, qty = (d[c].to_numpy()[plan.order] for c in ("side", "price_ticks", "qty_lots"))
    # The fine levels sit 12,000-140,000 USDT from the market, beyond the fast book's window:
    # the reference book (no window) checks them, in the plan's order.
    ref = L2Book("BTCUSDT")
    checked = 0
    rows = zip(plan.reset.tolist(), side.tolist(), price.tolist(), qty.tolist(), strict=True)
    for reset, sd, px, q in rows:
        if reset:
            ref.clear()
        ref.set_level(Side(sd), px, q)
        if q % SPOT.lots_per_step:
            assert ref.qty_at(Side(sd), px) == q
            checked += 1
    assert checked == 7
    # ... and some are still resting there at the end of the session, exactly
    assert sum(1 for _, q in ref.levels(Side.SELL) if q % SPOT.lots_per_step) >= 1
    book, rec = replay_depth(side, price, qty, reset=plan.reset)
    assert book.levels(Side.BUY, 100) == ref.levels(Side.BUY, 100)
    assert book.levels(Side.SELL, 100) == ref.levels(Side.SELL, 100)

    ends = np.flatnonzero(plan.msg_end)
    final_u = d["final_update_id"].to_numpy()[plan.order][ends]
    _, at_end, at_bbo = np.intersect1d(final_u, bbo["update_id"].to_numpy(), return_indices=True)
    assert len(at_end) > 1_000
    columns = ("bid_px", "bid_qty", "ask_px", "ask_qty")
    ours = np.stack([getattr(rec, c)[ends][at_end] for c in columns])
    theirs = np.stack(
        [bbo[c].to_numpy()[at_bbo] for c in ("bid_ticks", "bid_lots", "ask_ticks", "ask_lots")]
    )
    assert np.array_equal(ours, theirs)
    best_bid, best_ask = book.best_bid(), book.best_ask()
    assert best_bid is not None and best_ask is not None
    assert (best_bid[0], best_ask[0]) == (6_160_201, 6_160_202)  # the data README's check
