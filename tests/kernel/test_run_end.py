"""What a run's end leaves in flight: the venue's fills of its last response latency are made
but not yet delivered, and the summary says how many (the firm's positions do not hold them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from sapphire.config.system import load_config
from sapphire.exchange.gateway import ExecutionReport
from sapphire.kernel.runner import InProcessKernel
from sapphire.kernel.timing import Window
from sapphire.kernel.venue import VenueStage
from sapphire.model.events import AnyMarketEvent
from sapphire.model.orders import AmendOrder, CancelOrder, OrderFilled, SubmitOrder

REPO = Path(__file__).resolve().parents[2]


def test_every_venue_fill_is_booked_or_counted_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[OrderFilled] = []
    step = VenueStage.step

    def counting(
        self: VenueStage,
        window: Window,
        events: Sequence[AnyMarketEvent],
        commands: Sequence[SubmitOrder | CancelOrder | AmendOrder],
    ) -> list[ExecutionReport]:
        reports = step(self, window, events, commands)
        made.extend(r for r in reports if type(r) is OrderFilled)
        return reports

    monkeypatch.setattr(VenueStage, "step", counting)
    kernel = InProcessKernel(load_config(REPO / "configs" / "demo.yaml"), "run-end")
    kernel.run()
    summary = kernel.summary()
    in_flight = summary["in_flight"].get("fills", 0)
    # the demo's venue fills one order within 20 ms of the end: the case is not vacuous
    assert in_flight >= 1
    # the firm's fills are the venue's plus two per internal cross (no venue: a fill each side)
    booked_at_venue = summary["fills"] - 2 * int(summary["crossing"]["crosses"])
    assert len({f.fill_id for f in made}) == booked_at_venue + in_flight
