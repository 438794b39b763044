from __future__ import annotations

from decimal import Decimal

import pytest

from sapphire.book.l2 import L2Book
from sapphire.book.metrics import (
    depth_lots,
    depth_within_ticks,
    notional_depth_quote,
    sweep,
    sweep_vwap_ticks,
)
from sapphire.model.events import BookSnapshot, Side
from sapphire.model.instrument import Instrument

BTC = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001")


def book() -> L2Book:
    b = L2Book("BTCUSDT")
    b.apply_snapshot(
        BookSnapshot(
            ts_event_ns=0,
            symbol="BTCUSDT",
            bids=((616_597, 1_000), (616_590, 2_000), (616_500, 5_000)),
            asks=((616_598, 500), (616_600, 1_500)),
            update_id=1,
        )
    )
    return b


def test_depth_counts_levels_and_tick_distance() -> None:
    b = book()
    assert depth_lots(b, Side.BUY, 2) == 3_000
    assert depth_lots(b, Side.SELL, 10) == 2_000
    assert depth_within_ticks(b, Side.BUY, 7) == 3_000
    assert depth_within_ticks(b, Side.BUY, 6) == 1_000
    assert depth_within_ticks(L2Book("X"), Side.BUY, 6) == 0


def test_notional_depth_is_exact_decimal() -> None:
    # 61659.8 * 0.5 + 61660.0 * 1.5
    assert notional_depth_quote(book(), BTC, Side.SELL, 2) == Decimal("123319.9000000")


def test_sweep_walks_the_opposite_side() -> None:
    b = book()
    assert sweep(b, Side.BUY, 1_000) == (1_000, 500 * 616_598 + 500 * 616_600)
    assert sweep_vwap_ticks(b, Side.BUY, 1_000) == pytest.approx(616_599.0)
    assert sweep(b, Side.SELL, 9_000) == (8_000, 616_597_000 + 1_233_180_000 + 3_082_500_000)
    assert sweep_vwap_ticks(b, Side.SELL, 9_000) is None
    with pytest.raises(ValueError):
        sweep(b, Side.BUY, -1)
