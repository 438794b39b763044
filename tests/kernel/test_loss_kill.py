"""The firm's daily loss limit binds between intents too: checked at each PnL grid point of
event time, a breach trips the kill switch and cancels what rests, although no agent sends
another order (it used to be checked only when an order intent arrived)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sapphire.agents.base import AgentOutput
from sapphire.kernel.runner import InProcessKernel
from sapphire.model import Instrument
from sapphire.model.events import AnyMarketEvent, Quote, Side
from sapphire.model.orders import AgentReport, OrderIntent, OrderType, TimeInForce
from tests.kernel.conftest import kernel_config


class BuyAndRest:
    """On the 500th quote (the venue's book is built by then): a market buy (a position,
    and its taker fee: a loss at once) and a bid under the market that rests; then
    nothing more, ever."""

    def __init__(self, agent_id: str, instrument: Instrument, params: dict[str, Any]) -> None:
        self.agent_id, self.symbol, self.sent, self.quotes = agent_id, instrument.symbol, False, 0

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        if self.sent or not isinstance(event, Quote):
            return []
        self.quotes += 1
        if self.quotes < 500:
            return []
        self.sent = True

        def intent(seq: int, limit: int | None) -> OrderIntent:
            return OrderIntent(
                ts_event_ns=now_ns,
                agent_id=self.agent_id,
                seq=seq,
                symbol=self.symbol,
                side=Side.BUY,
                qty_lots=5 if limit is None else 2,  # 2 lots: above the min notional
                limit_ticks=limit,
                order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
                tif=TimeInForce.IOC if limit is None else TimeInForce.GTC,
            )

        return [intent(1, None), intent(2, event.bid_ticks - 100)]

    def on_report(self, report: AgentReport, now_ns: int) -> Sequence[AgentOutput]:
        return []

    def snapshot(self) -> bytes:
        return b"1" if self.sent else b""

    def restore(self, data: bytes) -> None:
        self.sent = bool(data)


@pytest.mark.parametrize("window_ns", [0, 2_000_000])
def test_a_firm_loss_trips_the_switch_with_no_order_after_it(
    tmp_path: Path, window_ns: int
) -> None:
    config = kernel_config(
        tmp_path,
        data={"source": "sample", "max_events": 20_000, "window_ns": window_ns},
        agents=[
            {"id": "holder", "kind": "tests.kernel.test_loss_kill:BuyAndRest", "symbol": "BTCUSDT"}
        ],
        risk={
            "price_band_bps": 500,
            "max_firm_daily_loss_quote": "0.001",
            "kill_on_daily_loss": True,
        },
    )
    kernel = InProcessKernel(config, "loss")
    kernel.run()
    summary = kernel.summary()
    assert summary["kill_switch"] is True
    orders = {o.client_order_id: o for o in kernel.venue.gateway.orders()}
    resting = [o for cid, o in orders.items() if cid.endswith("-2")]
    assert len(resting) == 1 and resting[0].status.value == "canceled"
