"""Our orders inside the simulator: a mutable working record and its immutable view."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from sapphire.model.events import Side
from sapphire.model.orders import OrderStatus, OrderType, RejectReason, TimeInForce


class OrderView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An order's state as the venue sees it (``PaperExchange.order_state``)."""

    client_order_id: str
    agent_id: str
    symbol: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    limit_ticks: int | None
    qty_lots: int
    filled_lots: int
    leaves_lots: int
    status: OrderStatus
    reason: RejectReason | None
    ts_update_ns: int
    fees_quote: Decimal
    # (sum of price_ticks * lots) / filled_lots; 0 before the first fill.
    avg_fill_ticks: Decimal


class SimOrder:
    """Working state of one of our orders. ``ahead`` is the recorded (market) quantity
    estimated ahead of us at our level, in lots; a float because probabilistic queue models
    move it by expected, not whole, amounts. Fills are always whole lots."""

    __slots__ = (
        "agent_id",
        "ahead",
        "client_order_id",
        "cum_trade",
        "fees_quote",
        "filled_lots",
        "limit_ticks",
        "locked",
        "notional_ticks_lots",
        "order_type",
        "qty_lots",
        "reason",
        "rest_seq",
        "side",
        "status",
        "symbol",
        "tif",
        "ts_update_ns",
    )

    def __init__(
        self,
        *,
        client_order_id: str,
        agent_id: str,
        symbol: str,
        side: Side,
        order_type: OrderType,
        tif: TimeInForce,
        limit_ticks: int | None,
        qty_lots: int,
        ts_ns: int,
    ) -> None:
        self.client_order_id = client_order_id
        self.agent_id = agent_id
        self.symbol = symbol
        self.side = side
        self.order_type = order_type
        self.tif = tif
        self.limit_ticks = limit_ticks
        self.qty_lots = qty_lots
        self.filled_lots = 0
        self.status = OrderStatus.PENDING
        self.reason: RejectReason | None = None
        self.ts_update_ns = ts_ns
        self.ahead = 0.0
        self.cum_trade = 0.0
        self.rest_seq = 0  # time priority among our orders at one level
        self.locked = Decimal(0)  # cash or base reserved for the unfilled part
        self.fees_quote = Decimal(0)
        self.notional_ticks_lots = 0

    @property
    def leaves_lots(self) -> int:
        return self.qty_lots - self.filled_lots

    @property
    def is_open(self) -> bool:
        return self.status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)

    def view(self) -> OrderView:
        avg = (
            Decimal(self.notional_ticks_lots) / Decimal(self.filled_lots)
            if self.filled_lots
            else Decimal(0)
        )
        return OrderView(
            client_order_id=self.client_order_id,
            agent_id=self.agent_id,
            symbol=self.symbol,
            side=self.side,
            order_type=self.order_type,
            tif=self.tif,
            limit_ticks=self.limit_ticks,
            qty_lots=self.qty_lots,
            filled_lots=self.filled_lots,
            leaves_lots=self.leaves_lots,
            status=self.status,
            reason=self.reason,
            ts_update_ns=self.ts_update_ns,
            fees_quote=self.fees_quote,
            avg_fill_ticks=avg,
        )
