"""One live order's reported state: what has been told upstream, so nothing is told twice."""

from __future__ import annotations

import logging
from decimal import Decimal

import ccxt.async_support as ccxt_async

from sapphire.exchange import ccxt_convert as cv
from sapphire.exchange.gateway import ExecutionReport, cancel_rejected
from sapphire.model.events import Side
from sapphire.model.instrument import Instrument, Rounding
from sapphire.model.orders import (
    CancelOrder,
    OrderFilled,
    OrderStatus,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
    TimeInForce,
)

log = logging.getLogger(__name__)


def _raw_status(venue_order: cv.CcxtDict) -> str:
    """The venue's own status word under ccxt's unified one ("" where it sent none)."""
    info = venue_order.get("info")
    return str(info.get("status") or "") if isinstance(info, dict) else ""


def reject_reason(exc: BaseException) -> RejectReason:
    """Sapphire's reason for a definite refusal by the venue."""
    text = str(exc)
    if isinstance(exc, ccxt_async.InsufficientFunds):
        return RejectReason.INSUFFICIENT_BALANCE
    if isinstance(exc, ccxt_async.OrderImmediatelyFillable):
        return RejectReason.POST_ONLY_WOULD_TAKE
    if isinstance(exc, ccxt_async.BadSymbol):
        return RejectReason.UNKNOWN_SYMBOL
    # Binance's -1013 "Filter failure: <filter>". MARKET_LOT_SIZE before LOT_SIZE, which it
    # contains; PRICE_FILTER is the price range here (the gateway sends prices on the tick
    # grid: ticks are integers); PERCENT_PRICE also matches PERCENT_PRICE_BY_SIDE
    for marker, reason in (
        ("NOTIONAL", RejectReason.MIN_NOTIONAL),
        ("MARKET_LOT_SIZE", RejectReason.MARKET_LOT_SIZE),
        ("LOT_SIZE", RejectReason.INVALID_LOT),
        ("PRICE_FILTER", RejectReason.PRICE_FILTER),
        ("PERCENT_PRICE", RejectReason.PERCENT_PRICE),
        ("MAX_NUM_ORDERS", RejectReason.MAX_NUM_ORDERS),
        # USD-M / COIN-M futures say them otherwise: -4016 / -4017 for the band around the
        # mark, -2025 for the open-order cap (the paper venue's reasons for the same orders)
        ("Limit price can't be higher", RejectReason.PERCENT_PRICE),
        ("Limit price can't be lower", RejectReason.PERCENT_PRICE),
        ("Reach max open order limit", RejectReason.MAX_NUM_ORDERS),
    ):
        if marker in text:
            return reason
    return RejectReason.EXCHANGE_ERROR


def venue_fill_id(symbol: str, trade_id: object, side: Side) -> str:
    """A live fill's id: the venue's trade id with the symbol and side. A venue numbers
    trades per symbol (Binance), and a self-trade is one trade id on both of our orders,
    while the firm's journal drops any fill id it has seen, across every order."""
    return f"{symbol}-{trade_id}-{'buy' if side is Side.BUY else 'sell'}"


class FeeDust:
    """Coin fees (``OrderFilled.fee_lots``) carried per agent and symbol until they make a
    whole lot. Binance charges a 0.001 BTC buy 0.000001 BTC, a tenth of BTCUSDT's 0.00001
    lot: rounded per fill it was 0 every time, and a thousand such buys left the run 100
    lots above the account. Carried, the run's position stays within a lot of the coin the
    account holds (a restarted gateway starts a new carry)."""

    def __init__(self) -> None:
        self._carry: dict[tuple[str, str], Decimal] = {}

    def take(self, inst: Instrument, agent_id: str, coin: Decimal) -> int:
        """Whole lots of the fees so far (``coin`` added) not yet booked; the rest carried."""
        if not coin:
            return 0
        key = (agent_id, inst.symbol)
        carried = self._carry.get(key, Decimal(0)) + coin
        lots = int(carried / inst.lot)  # whole lots, towards zero: never more than charged
        self._carry[key] = carried - lots * inst.lot
        return lots


class TrackedOrder:
    """``status``/``reported_filled`` are what the last ``OrderUpdate`` said; ``fill_lots``
    sums the ``OrderFilled`` reports, one per venue trade id in ``trade_ids``.
    ``unresolved``: a request may be at the venue but its answer was never seen;
    ``in_flight``: a ``submit`` is still working on it (nobody else may declare it lost);
    ``venue_cid``: the run-scoped client id sent to the venue."""

    __slots__ = (
        "fill_lots",
        "in_flight",
        "order",
        "reported_filled",
        "status",
        "trade_ids",
        "unresolved",
        "venue_cid",
        "venue_id",
    )

    def __init__(
        self, order: SubmitOrder, *, venue_cid: str = "", unresolved: bool = False
    ) -> None:
        self.order = order
        self.venue_cid = venue_cid or order.client_order_id  # the id the venue knows
        self.status = OrderStatus.PENDING
        self.reported_filled = 0
        self.fill_lots = 0
        self.trade_ids: set[str] = set()
        self.venue_id: str | None = None
        self.unresolved = unresolved
        self.in_flight = False

    def add_fill(
        self,
        inst: Instrument,
        trade: cv.CcxtDict,
        out: list[ExecutionReport],
        fallback_ts_ns: int = 0,
        codes: tuple[str, str] = ("", ""),
        dust: FeeDust | None = None,
    ) -> None:
        """Report a venue trade once. ``fallback_ts_ns``: the order's time, for fills that
        come without their own (Binance's order response); ``codes``: ccxt's (base, quote);
        ``dust``: the gateway's carry of coin fees finer than a lot."""
        trade_id = trade.get("id")
        if trade_id is None or str(trade_id) in self.trade_ids:
            return
        self._enter(out)  # the paper venue reports an order's entry before its fills
        try:
            price = cv.ticks(inst, trade["price"])
            qty = cv.lots(inst, trade["amount"])
        except cv.ConversionError as exc:
            # Report what the venue executed, on the nearest grid point, rather than drop it.
            log.warning("fill %s off the instrument grid: %s", trade_id, exc)
            price = inst.price_to_ticks(cv.decimal_text(trade["price"]))
            qty = inst.qty_to_lots(cv.decimal_text(trade["amount"]), Rounding.NEAREST)
        if cv.fee_in_other(trade, inst, codes):
            log.warning("fill %s: fee in %s is not counted in fee_quote", trade_id, trade["fee"])
        self.trade_ids.add(str(trade_id))
        self.fill_lots += qty
        out.append(
            OrderFilled(
                ts_event_ns=cv.ts_ns(trade.get("timestamp")) or fallback_ts_ns,
                client_order_id=self.order.client_order_id,
                agent_id=self.order.agent_id,
                symbol=self.order.symbol,
                side=self.order.side,
                price_ticks=price,
                qty_lots=qty,
                fee_quote=cv.fee_quote(trade, inst, price, codes),
                is_maker=trade.get("takerOrMaker") == "maker",
                fill_id=venue_fill_id(self.order.symbol, trade_id, self.order.side),
                leaves_lots=max(0, self.order.qty_lots - self.fill_lots),
                fee_lots=(dust or FeeDust()).take(
                    inst, self.order.agent_id, cv.fee_coin(trade, inst, codes)
                ),
            )
        )

    def update(
        self,
        inst: Instrument,
        venue_order: cv.CcxtDict,
        filled: int,
        out: list[ExecutionReport],
    ) -> None:
        """Report the venue's state if it changed; a final state waits for all its fills."""
        if self.status.is_final:
            return
        status = cv.order_status(venue_order, filled)
        if status is None:
            return
        if status.is_final and self.fill_lots < filled:
            return  # fills not all seen yet (trade query failed): reconcile finishes it
        shown = min(filled, self.fill_lots)
        if shown < self.reported_filled:
            return  # an older snapshot (answers can cross): never report backwards
        ts = cv.ts_ns(venue_order.get("lastUpdateTimestamp") or venue_order.get("timestamp"))
        ts = ts or self.order.ts_event_ns
        # The reports an agent gets are the paper venue's, whatever the runner (agents act
        # on them: an ACCEPTED resets their refusal wait): an order's entry once (ACCEPTED),
        # its progress as fills only (no PARTIALLY_FILLED update), and an IOC, FOK or market
        # order that ends unfilled with the paper venue's reason. Live sent fills with no
        # entry before them, partial states paper never sends, and expiries with no reason.
        reason, message = None, ""
        # Binance ends an order that self-trade prevention met EXPIRED_IN_MATCH, which ccxt
        # unifies to "expired" like any IOC remainder: only the raw status tells the agent
        # (and the stored row) that its own resting order, not the market, ended it
        in_match = _raw_status(venue_order) == "EXPIRED_IN_MATCH"
        if status is OrderStatus.EXPIRED and in_match:
            self._enter(out, ts)
            reason, message = RejectReason.SELF_TRADE, "self-trade prevention (venue)"
        elif status is OrderStatus.EXPIRED and self.order.tif is TimeInForce.FOK and not shown:
            reason, message = RejectReason.FOK_NOT_FILLABLE, "not fully fillable now"
        elif status is not OrderStatus.REJECTED:
            self._enter(out, ts)
            if not status.is_final:
                return  # entered: the rest of its progress comes as fills
            if status is OrderStatus.EXPIRED:
                reason = None if shown else RejectReason.NO_LIQUIDITY
                message = "unfilled remainder expired"
        self.status = status
        self.reported_filled = shown
        out.append(
            OrderUpdate(
                ts_event_ns=ts,
                client_order_id=self.order.client_order_id,
                agent_id=self.order.agent_id,
                symbol=self.order.symbol,
                status=status,
                filled_lots=shown,
                leaves_lots=0,
                reason=reason,
                message=message,
            )
        )

    def _enter(self, out: list[ExecutionReport], ts_ns: int = 0) -> None:
        """The order's ACCEPTED, once, before anything else of it (as the paper venue)."""
        if self.status is not OrderStatus.PENDING:
            return
        self.status = OrderStatus.ACCEPTED
        out.append(
            OrderUpdate(
                ts_event_ns=ts_ns or self.order.ts_event_ns,
                client_order_id=self.order.client_order_id,
                agent_id=self.order.agent_id,
                symbol=self.order.symbol,
                status=OrderStatus.ACCEPTED,
                filled_lots=0,
                leaves_lots=self.order.qty_lots,
            )
        )

    def finish_rejected(
        self, out: list[ExecutionReport], reason: RejectReason, message: str
    ) -> None:
        if self.status.is_final:
            return
        self.status = OrderStatus.REJECTED
        self.unresolved = False
        out.append(
            OrderUpdate(
                ts_event_ns=self.order.ts_event_ns,
                client_order_id=self.order.client_order_id,
                agent_id=self.order.agent_id,
                symbol=self.order.symbol,
                status=OrderStatus.REJECTED,
                reason=reason,
                message=message,
            )
        )


def cancel_refused(cancel: CancelOrder, status: OrderStatus, agent: str, why: str) -> OrderUpdate:
    """A refused cancel, shaped like the paper exchange's: the order's current status."""
    return cancel_rejected(cancel.ts_event_ns, cancel, agent, status, why=why)


def cancel_unconfirmed(cancel: CancelOrder, tracked: TrackedOrder, message: str) -> OrderUpdate:
    """A cancel whose outcome the venue never confirmed: the order is still as last known."""
    return OrderUpdate(
        ts_event_ns=cancel.ts_event_ns,
        client_order_id=cancel.client_order_id,
        agent_id=tracked.order.agent_id,
        symbol=cancel.symbol,
        status=tracked.status,
        filled_lots=tracked.fill_lots,
        leaves_lots=tracked.order.qty_lots - tracked.fill_lots,
        reason=RejectReason.EXCHANGE_ERROR,
        message=message,
    )
