from __future__ import annotations

import pytest

from sapphire.agents.features import reference_price
from sapphire.model import Quote
from sapphire.model.events import BookSnapshot


@pytest.mark.parametrize(
    ("bid", "ask", "price"),
    [
        (6_000_000, 6_000_100, 6_000_050.0),
        (6_000_100, 6_000_000, None),  # crossed
        (0, 6_000_000, None),  # no bid
        (6_000_000, 6_000_000, 6_000_000.0),  # locked: the price is known
    ],
)
def test_a_snapshot_is_priced_by_the_rule_for_quotes(
    bid: int, ask: int, price: float | None
) -> None:
    snapshot = BookSnapshot(ts_event_ns=1, symbol="X", bids=((bid, 5),), asks=((ask, 5),))
    quote = Quote(ts_event_ns=1, symbol="X", bid_ticks=bid, bid_lots=5, ask_ticks=ask, ask_lots=5)
    assert reference_price(snapshot) == reference_price(quote) == price
