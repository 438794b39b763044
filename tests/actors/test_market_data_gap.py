"""A replay's session gap (``data.max_session_gap_s``) on Ray: the market-data actor serves
the events before it and raises when the run asks past them, as one process's replay does
event by event. Raised with the 8,192-event chunk it ended, a run on Ray stopped up to a
chunk earlier than `sapphire backtest`, and failed where a cap inside that chunk let the
in-process run end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.codec import decode_events
from actors.market_data import MarketDataActor
from sapphire.data.replay import SessionGapError
from sapphire.model.events import Side, Trade


def _replay(before_gap: int) -> Iterator[Trade]:
    for i in range(before_gap):
        yield Trade(
            ts_event_ns=i, symbol="X", price_ticks=1, qty_lots=1, taker_side=Side.BUY, trade_id=i
        )
    raise SessionGapError("2023-04-05", "2024-07-18", 471 * 86_400 * 10**9, 3_600 * 10**9)


def test_the_events_before_a_gap_are_served_and_the_gap_raised_past_them(tmp_path: Path) -> None:
    actor: Any = MarketDataActor.__ray_metadata__.modified_class(  # type: ignore[attr-defined]
        lambda: _replay(5), 100, str(tmp_path)
    )
    blob, n = actor.get_events(0, 8)
    assert n == 5 and [e.trade_id for e in decode_events(blob)] == [0, 1, 2, 3, 4]
    with pytest.raises(SessionGapError, match=r"471\.0 days"):
        actor.get_events(5, 8)
    # asked again for what it served (a rewound coordinator): the same events
    assert actor.get_events(2, 3)[1] == 3


def test_the_gap_crosses_processes_whole() -> None:
    """Raised in the market-data actor, it reaches the driver: built again from its
    fields (from its message alone it could not be: "Failed to deserialize exception")."""
    import pickle

    gap = SessionGapError("2023-04-05", "2024-07-18", 471 * 86_400 * 10**9, 3_600 * 10**9)
    again = pickle.loads(pickle.dumps(gap))
    assert type(again) is SessionGapError and str(again) == str(gap)
    assert (again.before, again.after, again.gap_ns) == (gap.before, gap.after, gap.gap_ns)
