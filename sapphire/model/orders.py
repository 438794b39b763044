"""Trading messages: what agents want, what is sent, and what comes back.

Commands are named in the imperative (``SubmitOrder``, ``CancelOrder``), events in the past
tense (``OrderAccepted``, ``OrderFilled``). Every message is immutable and carries integer-ns
time and, where produced, a ``(producer_id, seq)`` identity used for exactly-once handling.
Every message is tagged with its class name, so a mixed batch decodes in one pass (msgspec
tagged unions) without per-message dispatch.
"""

from __future__ import annotations

import enum
from decimal import Decimal

import msgspec

from sapphire.model.events import Side


class OrderType(enum.StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(enum.StrEnum):
    GTC = "gtc"  # rests until filled or cancelled
    IOC = "ioc"  # fills what it can now, the rest is cancelled
    FOK = "fok"  # fills completely now or not at all
    POST_ONLY = "post_only"  # rejected if it would take liquidity (Binance GTX / LIMIT_MAKER)


class OrderStatus(enum.StrEnum):
    PENDING = "pending"  # sent, not yet acknowledged
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"  # IOC/FOK remainder

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


class RejectReason(enum.StrEnum):
    INVALID_TICK = "invalid_tick"
    INVALID_LOT = "invalid_lot"
    MIN_QTY = "min_qty"
    MAX_QTY = "max_qty"
    MIN_NOTIONAL = "min_notional"
    PRICE_FILTER = "price_filter"  # a limit price outside [min_price, max_price]
    PERCENT_PRICE = "percent_price"  # a limit price outside the band around the reference
    MARKET_LOT_SIZE = "market_lot_size"  # a market order's quantity outside its own range
    MAX_NUM_ORDERS = "max_num_orders"  # the symbol already has the most open orders allowed
    INSUFFICIENT_BALANCE = "insufficient_balance"
    POST_ONLY_WOULD_TAKE = "post_only_would_take"
    FOK_NOT_FILLABLE = "fok_not_fillable"
    NO_LIQUIDITY = "no_liquidity"
    SELF_TRADE = "self_trade"
    DUPLICATE_CLIENT_ORDER_ID = "duplicate_client_order_id"
    UNKNOWN_ORDER = "unknown_order"
    UNKNOWN_SYMBOL = "unknown_symbol"
    # canceled by the venue: it liquidated the account's positions in the order's asset
    LIQUIDATION = "liquidation"
    # pre-trade risk (coordinator)
    RISK_KILL_SWITCH = "risk_kill_switch"
    RISK_MAX_POSITION = "risk_max_position"
    RISK_ORDER_SIZE = "risk_order_size"
    RISK_MAX_NOTIONAL = "risk_max_notional"
    RISK_ORDER_RATE = "risk_order_rate"
    RISK_PRICE_BAND = "risk_price_band"
    RISK_DAILY_LOSS = "risk_daily_loss"
    RISK_NO_MARKET = "risk_no_market"
    RISK_CONSENSUS = "risk_consensus"
    RISK_AGENT_QUARANTINED = "risk_agent_quarantined"  # a hung or failing agent, stopped
    RISK_REDUCE_ONLY = "risk_reduce_only"  # a reduce-only order that would grow or flip
    EXCHANGE_ERROR = "exchange_error"


def client_order_id(agent_id: str, seq: int) -> str:
    """Deterministic id: an order re-sent after a restart is recognised, not placed twice."""
    return f"{agent_id}-{seq}"


class Signal(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    """An agent's view: ``strength`` in [-1, 1] (sell .. buy), for aggregation and storage."""

    ts_event_ns: int
    agent_id: str
    symbol: str
    strength: float
    seq: int = 0
    reason: str = ""


class OrderIntent(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    """What an agent would like to trade; the coordinator's risk checks decide what is sent.

    ``limit_ticks`` is None for market orders. ``(agent_id, seq)`` identifies the intent and
    derives the client order id.
    """

    ts_event_ns: int
    agent_id: str
    seq: int
    symbol: str
    side: Side
    qty_lots: int
    limit_ticks: int | None = None
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False

    @property
    def client_order_id(self) -> str:
        return client_order_id(self.agent_id, self.seq)


class CancelIntent(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    ts_event_ns: int
    agent_id: str
    seq: int
    symbol: str
    target_client_order_id: str


class SubmitOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    """A command to an execution gateway."""

    ts_event_ns: int
    client_order_id: str
    agent_id: str
    symbol: str
    side: Side
    qty_lots: int
    limit_ticks: int | None = None
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.GTC

    @classmethod
    def from_intent(cls, intent: OrderIntent, qty_lots: int | None = None) -> SubmitOrder:
        return cls(
            ts_event_ns=intent.ts_event_ns,
            client_order_id=intent.client_order_id,
            agent_id=intent.agent_id,
            symbol=intent.symbol,
            side=intent.side,
            qty_lots=intent.qty_lots if qty_lots is None else qty_lots,
            limit_ticks=intent.limit_ticks,
            order_type=intent.order_type,
            tif=intent.tif,
        )


class CancelOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    ts_event_ns: int
    client_order_id: str
    symbol: str


class AmendOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    """Replace price and/or quantity. A price change or a size increase loses queue priority."""

    ts_event_ns: int
    client_order_id: str
    symbol: str
    new_limit_ticks: int | None = None
    new_qty_lots: int | None = None


class OrderUpdate(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    """An order's new state as reported by the gateway (ack, reject, cancel, expiry)."""

    ts_event_ns: int
    client_order_id: str
    agent_id: str
    symbol: str
    status: OrderStatus
    filled_lots: int = 0
    leaves_lots: int = 0
    reason: RejectReason | None = None
    message: str = ""


class OrderFilled(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    """One execution. ``fee_quote`` is positive for a cost, negative for a rebate."""

    ts_event_ns: int
    client_order_id: str
    agent_id: str
    symbol: str
    side: Side
    price_ticks: int
    qty_lots: int
    fee_quote: Decimal
    is_maker: bool
    fill_id: str
    leaves_lots: int = 0
    # crossed by the coordinator against another agent's order of the same account: it never
    # reached the venue and pays no venue fee (sapphire.coordination.crossing)
    internal: bool = False
    # lots of the traded asset the venue kept as its fee (Binance spot charges a buy's
    # commission in the coin bought): the position moves by the fill less these, and
    # ``fee_quote`` values them at the fill price. Booked as the whole qty, every such buy
    # left the run holding more than the account (a later sell of it was refused)
    fee_lots: int = 0
    # the venue's own close of the position at its maintenance margin (a forced liquidation,
    # Binance's "autoclose-" orders): an order no agent sent, taker, at the mark, its fee the
    # clearance fee
    liquidation: bool = False


class OrderDenied(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    """Pre-trade risk refused an intent: it never left the system (nautilus's OrderDenied).

    Distinct from an ``OrderUpdate`` with status REJECTED, which is the venue's answer to an
    order that was sent. ``reason`` is one of the ``RISK_*`` reasons (or UNKNOWN_SYMBOL,
    INVALID_TICK for intents that cannot be priced)."""

    ts_event_ns: int
    client_order_id: str
    agent_id: str
    symbol: str
    reason: RejectReason
    detail: str = ""


AgentReport = OrderUpdate | OrderFilled | OrderDenied


class VenueAlert(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    """What a live venue adapter found that the coordinator must act on, beside the order
    reports: ``halt`` trips the kill switch (e.g. orders at the venue that no journal knows),
    ``fatal`` ends the run as failed (e.g. the API key is refused). ``counts`` carries what a
    reconciliation did (adopted orders, missed fills booked, unknown orders cancelled)."""

    ts_event_ns: int
    kind: str
    message: str
    halt: bool = False
    fatal: bool = False
    counts: dict[str, int] = msgspec.field(default_factory=dict)


class Position(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag=True):
    """Signed position (lots, + long) with its average entry and realized PnL."""

    ts_event_ns: int
    agent_id: str
    symbol: str
    qty_lots: int
    avg_entry_ticks: Decimal
    realized_pnl_quote: Decimal
    fees_quote: Decimal
