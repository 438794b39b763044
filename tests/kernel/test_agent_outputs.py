"""The agents' boundary refuses outputs whose fields are not what risk and the venue test."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from sapphire.kernel.agents import invalid_output
from sapphire.model.events import Side
from sapphire.model.orders import OrderIntent, OrderType, TimeInForce

GOOD = OrderIntent(
    ts_event_ns=1, agent_id="a", seq=1, symbol="BTCUSDT", side=Side.BUY, qty_lots=5,
    limit_ticks=600_000,
)  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        # side 0: the projected position never moved, so the position and notional limits
        # never bound; a plain 1 crashed the venue (it tests `is Side.BUY`)
        ("side", 0, "side 0 is not a Side"),
        ("side", 1, "side 1 is not a Side"),
        # a string "limit" skipped the price band (risk tests `is OrderType.LIMIT`)
        ("order_type", "limit", "order_type 'limit' is not a OrderType"),
        ("tif", "gtc", "tif 'gtc' is not a TimeInForce"),
        ("reduce_only", 1, "reduce_only 1 is not a bool"),
    ],
)
def test_fields_of_the_wrong_type_are_refused(field: str, value: Any, why: str) -> None:
    assert invalid_output(GOOD, frozenset({"BTCUSDT"})) is None
    bad = msgspec.structs.replace(GOOD, **{field: value})
    assert invalid_output(bad, frozenset({"BTCUSDT"})) == why


def test_every_enum_member_passes() -> None:
    for side in Side:
        for kind in OrderType:
            for tif in TimeInForce:
                intent = msgspec.structs.replace(GOOD, side=side, order_type=kind, tif=tif)
                assert invalid_output(intent, frozenset()) is None
