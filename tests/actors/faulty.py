"""Misbehaving parts, importable by Ray workers: agents that raise or hang, a venue that
errors. Used by the bad-input tests."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sapphire.agents.base import AgentOutput
from sapphire.config.system import ExchangeConfig
from sapphire.exchange.config import PaperExchangeConfig
from sapphire.exchange.paper import PaperExchange
from sapphire.model import Instrument
from sapphire.model.events import AnyMarketEvent
from sapphire.model.orders import OrderFilled, OrderUpdate, SubmitOrder


class RaisingAgent:
    """Raises on every third event: a buggy strategy."""

    def __init__(self, agent_id: str, instrument: Instrument, params: dict[str, Any]) -> None:
        self.agent_id = agent_id
        self.seen = 0

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        self.seen += 1
        if self.seen % 3 == 0:
            raise ZeroDivisionError("strategy bug")
        return []

    def on_report(self, report: OrderUpdate | OrderFilled, now_ns: int) -> Sequence[AgentOutput]:
        return []

    def snapshot(self) -> bytes:
        return str(self.seen).encode()

    def restore(self, data: bytes) -> None:
        self.seen = int(data)


class HangingAgent(RaisingAgent):
    """Never returns from its 50th event: a deadlocked strategy."""

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        self.seen += 1
        if self.seen == 50:
            time.sleep(3600)
        return []


class FlakyExchange(PaperExchange):
    """A venue whose order entry fails on every third order."""

    submits = 0

    def submit(self, order: SubmitOrder, now_ns: int) -> None:
        self.submits += 1
        if self.submits % 3 == 0:
            raise ConnectionError("venue rejected the connection")
        super().submit(order, now_ns)


def flaky_exchange(config: ExchangeConfig, instruments: dict[str, Instrument]) -> FlakyExchange:
    raw = {"instruments": list(instruments.values()), **config.params}
    import msgspec

    return FlakyExchange(msgspec.convert(raw, PaperExchangeConfig, from_attributes=True))
