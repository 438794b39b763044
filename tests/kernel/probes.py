"""Agents and venues that record what the kernel did to them, importable by Ray workers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from sapphire.agents.base import AgentOutput
from sapphire.config.system import ExchangeConfig
from sapphire.exchange.config import PaperExchangeConfig
from sapphire.exchange.paper import PaperExchange
from sapphire.model import Instrument
from sapphire.model.events import AnyMarketEvent, Quote, Side
from sapphire.model.orders import AgentReport, OrderIntent, OrderType, Signal, TimeInForce


class ProbeAgent:
    """Logs (kind, ts_event_ns of the input, now) for everything it is shown, and places one
    order of ``qty_lots`` at the first quote's bid (a MARKET order when ``market``)."""

    def __init__(self, agent_id: str, instrument: Instrument, params: dict[str, Any]) -> None:
        self.agent_id = agent_id
        self.symbol = instrument.symbol
        self.qty_lots = int(params.get("qty_lots", 1))
        self.market = bool(params.get("market", False))
        self.far_limit = int(params.get("far_limit_ticks", 0))
        self.log: list[tuple[str, int, int]] = []
        self.sent = False

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        self.log.append((type(event).__name__, event.ts_event_ns, now_ns))
        if self.sent or not isinstance(event, Quote):
            return []
        self.sent = True
        limit = None if self.market else event.bid_ticks
        if self.market and self.far_limit:
            limit = self.far_limit  # a far-away price on a MARKET order (risk must not use it)
        return [
            OrderIntent(
                ts_event_ns=now_ns,
                agent_id=self.agent_id,
                seq=1,
                symbol=self.symbol,
                side=Side.BUY,
                qty_lots=self.qty_lots,
                limit_ticks=limit,
                order_type=OrderType.MARKET if self.market else OrderType.LIMIT,
                tif=TimeInForce.IOC if self.market else TimeInForce.GTC,
            )
        ]

    def on_report(self, report: AgentReport, now_ns: int) -> Sequence[AgentOutput]:
        status = getattr(report, "status", None)
        reason = getattr(report, "reason", None)
        self.log.append((f"{type(report).__name__}:{status}:{reason}", report.ts_event_ns, now_ns))
        return []

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode((self.log, self.sent))

    def restore(self, data: bytes) -> None:
        log, self.sent = msgspec.msgpack.decode(data)
        self.log = [tuple(x) for x in log]


class BookCheckingExchange(PaperExchange):
    """A paper venue that, after every recorded best bid/ask, compares its own book with it."""

    def __init__(self, config: PaperExchangeConfig) -> None:
        super().__init__(config)
        self.quotes = 0
        self.comparable = 0  # quotes whose update id is the book's own last update id
        self.comparable_matched = 0
        self.matched = 0
        self.unsynced = 0
        self.crossed = 0

    def on_market_event(self, event: AnyMarketEvent) -> None:
        super().on_market_event(event)
        if type(event) is not Quote:
            return
        book: Any = self.book(event.symbol)
        self.quotes += 1
        if not book.is_synced:
            self.unsynced += 1
            return
        if book.is_crossed():
            self.crossed += 1
        bid, ask = book.best_bid(), book.best_ask()
        same = bool(bid and ask and (bid[0], ask[0]) == (event.bid_ticks, event.ask_ticks))
        self.matched += same
        if event.update_id and event.update_id == book.last_update_id:
            self.comparable += 1
            self.comparable_matched += same


def book_checking_exchange(
    config: ExchangeConfig, instruments: dict[str, Instrument]
) -> BookCheckingExchange:
    raw = {"instruments": list(instruments.values()), **config.params}
    return BookCheckingExchange(msgspec.convert(raw, PaperExchangeConfig, from_attributes=True))


class BadOutputsAgent(ProbeAgent):
    """Returns, on every 50th event, what a buggy strategy or a confused model might: a size
    beyond int64, a 300-character symbol, a NaN signal, a fractional size, an order in
    another agent's name, and one sane order, returned twice (six refused, one let through)."""

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        self.log.append((type(event).__name__, event.ts_event_ns, now_ns))
        if len(self.log) % 50 or not isinstance(event, Quote):
            return []
        n = 8 * len(self.log)
        base = {"ts_event_ns": now_ns, "agent_id": self.agent_id, "side": Side.BUY}
        sane = OrderIntent(
            **base, seq=n + 5, symbol=self.symbol, qty_lots=1, limit_ticks=event.bid_ticks - 100
        )
        other = {**base, "agent_id": "someone-else"}
        return [
            OrderIntent(**base, seq=n, symbol=self.symbol, qty_lots=2**63, limit_ticks=1),
            OrderIntent(**base, seq=n + 1, symbol="X" * 300, qty_lots=1, limit_ticks=1),
            Signal(
                ts_event_ns=now_ns,
                agent_id=self.agent_id,
                symbol=self.symbol,
                strength=float("nan"),
                seq=n + 2,
            ),
            OrderIntent(**base, seq=n + 3, symbol=self.symbol, qty_lots=1.5, limit_ticks=1),  # type: ignore[arg-type]
            OrderIntent(**other, seq=n + 4, symbol=self.symbol, qty_lots=1, limit_ticks=1),
            sane,
            sane,
        ]


class ShapelessOutputsAgent(ProbeAgent):
    """Returns, on every 50th quote, in turn: one intent alone (``return intent``, the
    commonest slip), a generator of one sane intent, a generator that raises after its
    first, an int, a dict. Each sane intent has its own seq; ``returned``: each shape's
    index, as returned."""

    def __init__(self, agent_id: str, instrument: Instrument, params: dict[str, Any]) -> None:
        super().__init__(agent_id, instrument, params)
        self.returned: list[int] = []

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        self.log.append((type(event).__name__, event.ts_event_ns, now_ns))
        if len(self.log) % 50 or not isinstance(event, Quote):
            return []
        turn = len(self.log) // 50
        sane = OrderIntent(
            ts_event_ns=now_ns,
            agent_id=self.agent_id,
            side=Side.BUY,
            seq=turn,
            symbol=self.symbol,
            qty_lots=1,
            limit_ticks=event.bid_ticks - 100,
        )

        def one() -> Iterator[AgentOutput]:
            yield sane

        def broken() -> Iterator[AgentOutput]:
            yield sane
            raise RuntimeError("a strategy bug mid-generator")

        shapes: list[object] = [sane, one(), broken(), 7, {"side": "buy"}]
        self.returned.append(turn % 5)
        return shapes[turn % 5]  # type: ignore[return-value]


def traded(kernel: Any) -> tuple[Any, ...]:
    """What an in-process run traded (fills, orders and their states, the summary's counts):
    equal for runs that must trade the same."""
    venue: Any = kernel.venue.gateway
    summary = kernel.summary()
    return (
        list(venue.fills),
        [(o.client_order_id, o.status) for o in venue.orders()],
        summary["fills"],
        summary["orders_by_status"],
        summary["risk_rejections"],
    )


BUILDS: list[str] = []  # one agent id per construction of a CountedAgent, in this process


class CountedAgent(ProbeAgent):
    """A probe that records each time it is built (a user's agent may be costly to build)."""

    def __init__(self, agent_id: str, instrument: Instrument, params: dict[str, Any]) -> None:
        BUILDS.append(agent_id)
        super().__init__(agent_id, instrument, params)
