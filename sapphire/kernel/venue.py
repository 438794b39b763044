"""The venue's stage of a kernel step: commands decided before the window, then the window's
market events, then every action due inside the window; every report the venue made is
handed back (with its venue time; it reaches the system ``response_ns`` later).

Commands carry their decision time (``ts_event_ns``) and the gateway adds the entry latency,
so an order reaches the matching engine at the same market time whatever the window.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from sapphire.exchange.gateway import ExecutionGateway, ExecutionReport, apply_command
from sapphire.kernel.timing import Window
from sapphire.model.events import AnyMarketEvent
from sapphire.model.orders import AmendOrder, CancelOrder, SubmitOrder

Command = SubmitOrder | CancelOrder | AmendOrder

# poll() hands back reports whose delivery time has passed; the kernel delivers them itself
_ALL = 1 << 62


class VenueStats(msgspec.Struct, kw_only=True):
    orders_sent: int = 0
    errors: int = 0


class VenueStage:
    def __init__(self, gateway: ExecutionGateway) -> None:
        self.gateway = gateway
        self.stats = VenueStats()

    def book_health(self) -> dict[str, int]:
        """The venue's book counts (a simulated venue; none for a live one)."""
        health = getattr(self.gateway, "book_health", None)
        return dict(health()) if health is not None else {}

    def step(
        self, window: Window, events: Sequence[AnyMarketEvent], commands: Sequence[Command]
    ) -> list[ExecutionReport]:
        gateway = self.gateway
        reports: list[ExecutionReport] = []
        for command in commands:
            if type(command) is SubmitOrder:
                self.stats.orders_sent += 1
            reject = apply_command(gateway, command, command.ts_event_ns)
            if reject is not None:
                self.stats.errors += 1
                reports.append(reject)
        on_market_event = gateway.on_market_event
        for event in events:
            on_market_event(event)
        advance = getattr(gateway, "advance", None)
        if advance is not None:
            # actions that arrive after the window's last event still run inside it
            advance(window.end_ns - 1)
        reports.extend(gateway.poll(_ALL))
        return reports
