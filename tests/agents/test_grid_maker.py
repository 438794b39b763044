"""The grid market maker (hftbacktest's tutorial strategy) on real quotes."""

from __future__ import annotations

import pytest

from sapphire.agents.base import AgentConfigError
from sapphire.agents.grid_maker import GridMakerAgent
from sapphire.model import CancelIntent, OrderIntent, Side, TimeInForce
from sapphire.model.events import Quote
from tests.agents.streams import BTCUSDT, spot_quotes_trades


def test_quotes_both_sides_on_the_grid_and_replaces_moved_quotes() -> None:
    agent = GridMakerAgent("mm", BTCUSDT, {"half_spread_ticks": 20, "order_lots": 10})
    outputs = []
    last_quote: Quote | None = None
    for event in spot_quotes_trades():
        if isinstance(event, Quote):
            last_quote = event
        produced = list(agent.on_event(event, event.ts_event_ns))
        for out in produced:
            if isinstance(out, OrderIntent):
                assert last_quote is not None
                two_mid = last_quote.bid_ticks + last_quote.ask_ticks
                want = (two_mid - 40) // 2 if out.side is Side.BUY else -(-(two_mid + 40) // 2)
                assert out.limit_ticks == want
                assert out.tif is TimeInForce.POST_ONLY and out.qty_lots == 10
        outputs.extend(produced)
        # never more than one live quote per side (cancelled ones are on their way out)
        live = [o for o in agent.core.open_orders.values() if not o.cancel_sent]
        assert sum(o.side is Side.BUY for o in live) <= 1
        assert sum(o.side is Side.SELL for o in live) <= 1
    orders = [o for o in outputs if isinstance(o, OrderIntent)]
    cancels = [o for o in outputs if isinstance(o, CancelIntent)]
    assert {o.side for o in orders} == {Side.BUY, Side.SELL}
    assert cancels, "quotes whose price moved are cancelled"
    # at most two new quotes per 100 ms grid step
    span_s = (orders[-1].ts_event_ns - orders[0].ts_event_ns) / 1e9
    assert len(orders) <= 2 * (span_s / 0.1 + 2)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"step_s": 1e-10}, "step_s"),  # int(step_s * 1e9) == 0: a modulo by zero at event 1
        ({"order_lots": 100, "max_position_lots": 1}, "one order would pass"),
        ({"step_s": float("inf")}, "step_s must be finite"),
    ],
)
def test_nonsense_grid_parameters_are_refused(params: dict[str, float], match: str) -> None:
    with pytest.raises(AgentConfigError, match=match):
        GridMakerAgent("g", BTCUSDT, params)
