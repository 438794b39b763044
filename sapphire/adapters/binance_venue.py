"""A Binance-spot-shaped venue over :class:`PaperExchange` (the state behind the exchange double).

It speaks Binance's REST vocabulary (``orderId``, ``NEW``/``FILLED``, ``-2010`` errors) and
delegates matching, balances and fees to the paper engine, so a live gateway can be tested
against the same rules the backtests use. Time is the venue clock, moved by recorded market
events (:meth:`BinanceVenue.feed`); nothing here reads a clock or does I/O.

One deliberate difference from Binance: a client order id is never reusable. Binance only
refuses a ``newClientOrderId`` while the first order is open; refusing it for good (and
counting the attempts in ``duplicate_submits``) lets tests prove a gateway never re-sent an
order the venue already had.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sapphire.exchange.config import PaperExchangeConfig
from sapphire.exchange.paper import PaperExchange
from sapphire.model.events import AnyMarketEvent, Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    CancelOrder,
    OrderFilled,
    OrderStatus,
    OrderType,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
    TimeInForce,
)

Json = dict[str, Any]

_STATUS = {
    OrderStatus.PENDING: "NEW",
    OrderStatus.ACCEPTED: "NEW",
    OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED",
    OrderStatus.FILLED: "FILLED",
    OrderStatus.CANCELED: "CANCELED",
    OrderStatus.REJECTED: "REJECTED",
    OrderStatus.EXPIRED: "EXPIRED",
}
_TIF = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK}
_REJECT_MESSAGES = {
    RejectReason.INSUFFICIENT_BALANCE: "Account has insufficient balance for requested action.",
    RejectReason.POST_ONLY_WOULD_TAKE: "Order would immediately match and take.",
}
# the paper venue's filter reasons: the Binance filters each may be (the symbol's
# exchangeInfo says which it has: MIN_NOTIONAL on older symbols, NOTIONAL on newer ones)
_FILTER_REASONS: dict[RejectReason, tuple[str, ...]] = {
    RejectReason.MIN_NOTIONAL: ("NOTIONAL", "MIN_NOTIONAL"),
    RejectReason.MIN_QTY: ("LOT_SIZE",),
    RejectReason.MAX_QTY: ("LOT_SIZE",),
    RejectReason.INVALID_LOT: ("LOT_SIZE",),
    RejectReason.INVALID_TICK: ("PRICE_FILTER",),
    RejectReason.PRICE_FILTER: ("PRICE_FILTER",),
    # the symbol's exchangeInfo says which it has: PERCENT_PRICE_BY_SIDE on today's spot
    # symbols, PERCENT_PRICE on older ones
    RejectReason.PERCENT_PRICE: ("PERCENT_PRICE_BY_SIDE", "PERCENT_PRICE"),
    RejectReason.MARKET_LOT_SIZE: ("MARKET_LOT_SIZE",),
    RejectReason.MAX_NUM_ORDERS: ("MAX_NUM_ORDERS",),
}


class VenueError(Exception):
    """A Binance error answer: HTTP status, Binance ``code`` and ``msg``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg

    def body(self) -> Json:
        return {"code": self.code, "msg": self.msg}


class VenueOrder:
    """What the venue remembers of an accepted order beyond the paper engine's state."""

    __slots__ = ("client_order_id", "instrument", "order_id", "order_type", "raw_type", "time_ms")

    def __init__(
        self,
        order_id: int,
        client_order_id: str,
        instrument: Instrument,
        raw_type: str,
        order_type: OrderType,
        time_ms: int,
    ) -> None:
        self.order_id = order_id
        self.client_order_id = client_order_id
        self.instrument = instrument
        self.raw_type = raw_type
        self.order_type = order_type
        self.time_ms = time_ms


class BinanceVenue:
    """Binance spot order entry on a paper engine; every method returns Binance JSON."""

    def __init__(
        self,
        config: PaperExchangeConfig,
        exchange_info: Mapping[str, Any],
        *,
        base_commission: bool = False,
    ) -> None:
        """``base_commission``: a buy's commission is charged in the coin bought, as Binance
        does for an account that does not pay fees in BNB (the account receives the amount
        less it); else every commission is in the quote asset."""
        self.paper = PaperExchange(config)
        self.exchange_info = dict(exchange_info)
        self.base_commission = base_commission
        self.now_ns = 0
        self.orders: dict[str, VenueOrder] = {}
        self.trades: list[Json] = []
        self.reports: list[OrderUpdate | OrderFilled] = []
        self.duplicate_submits = 0
        self._by_id: dict[int, str] = {}
        self._rejected: dict[str, VenueError] = {}
        self._next_order_id = 1_000_000
        self._next_trade_id: dict[str, int] = {}

    # -- market -----------------------------------------------------------------------------
    def feed(self, events: Iterable[AnyMarketEvent]) -> None:
        """Move the venue's market (and clock) with recorded events."""
        for event in events:
            self.now_ns = max(self.now_ns, event.ts_event_ns)
            self.paper.on_market_event(event)
        self._drain()

    def set_level(self, symbol: str, side: Side, price_ticks: int, qty_lots: int) -> None:
        self.paper.set_level(symbol, side, price_ticks, qty_lots, self.now_ns)
        self._drain()

    # -- order entry ------------------------------------------------------------------------
    def new_order(self, params: Mapping[str, str]) -> Json:
        inst = self._instrument(params)
        cid = params.get("newClientOrderId") or f"venue-{self._next_order_id}"
        if cid in self.orders or cid in self._rejected:
            self.duplicate_submits += 1
            if cid in self._rejected:
                raise self._rejected[cid]
            raise VenueError(400, -2010, "Duplicate order sent.")
        raw_type = params.get("type", "").upper()
        order_type, tif = self._type_and_tif(raw_type, params.get("timeInForce", "GTC").upper())
        side = {"BUY": Side.BUY, "SELL": Side.SELL}.get(params.get("side", "").upper())
        if side is None:
            raise VenueError(400, -1102, "Mandatory parameter 'side' was not sent or invalid.")
        qty = _exact_units(params.get("quantity"), inst.lot, "LOT_SIZE")
        price = None
        if order_type is OrderType.LIMIT:
            price = _exact_units(params.get("price"), inst.tick, "PRICE_FILTER")
        cmd = SubmitOrder(
            ts_event_ns=self.now_ns,
            client_order_id=cid,
            agent_id="",
            symbol=inst.symbol,
            side=side,
            qty_lots=qty,
            limit_ticks=price,
            order_type=order_type,
            tif=tif,
        )
        self.paper.submit(cmd, self.now_ns)
        self.paper.advance(self.now_ns)
        fills_before = len(self.trades)
        self._drain()
        view = self.paper.order_state(cid)
        assert view is not None
        if view.status is OrderStatus.REJECTED:
            reason = view.reason or RejectReason.EXCHANGE_ERROR
            if reason in _FILTER_REASONS:
                # Binance refuses a filter failure with -1013 and names the symbol's own
                # filter (-2010 is for refusals by the matching engine: balance, post-only)
                name = self._filter_name(inst.symbol, _FILTER_REASONS[reason])
                error = VenueError(400, -1013, f"Filter failure: {name}")
            else:
                error = VenueError(400, -2010, _REJECT_MESSAGES.get(reason, str(reason)))
            self._rejected[cid] = error
            raise error
        order = VenueOrder(
            self._next_order_id, cid, inst, raw_type, order_type, self.now_ns // 1_000_000
        )
        self._next_order_id += 1
        self.orders[cid] = order
        self._by_id[order.order_id] = cid
        for trade in self.trades[fills_before:]:
            trade["orderId"] = order.order_id
        body = self._order_json(order)
        body["transactTime"] = order.time_ms
        body["fills"] = [
            {
                "price": t["price"],
                "qty": t["qty"],
                "commission": t["commission"],
                "commissionAsset": t["commissionAsset"],
                "tradeId": t["id"],
            }
            for t in self.trades[fills_before:]
        ]
        return body

    def cancel_order(self, params: Mapping[str, str]) -> Json:
        try:
            order = self._find(params)
        except VenueError as exc:
            # a cancel of an order the venue does not know: Binance's -2011 (a query's is
            # -2013 "Order does not exist.")
            if exc.code == -2013:
                raise VenueError(400, -2011, "Unknown order sent.") from None
            raise
        view = self.paper.order_state(order.client_order_id)
        if view is None or view.status.is_final:
            raise VenueError(400, -2011, "Unknown order sent.")
        self.paper.cancel(
            CancelOrder(
                ts_event_ns=self.now_ns,
                client_order_id=order.client_order_id,
                symbol=order.instrument.symbol,
            ),
            self.now_ns,
        )
        self.paper.advance(self.now_ns)
        self._drain()
        body = self._order_json(order)
        body["origClientOrderId"] = order.client_order_id
        body["transactTime"] = self.now_ns // 1_000_000
        return body

    # -- queries ----------------------------------------------------------------------------
    def query_order(self, params: Mapping[str, str]) -> Json:
        return self._order_json(self._find(params))

    def open_orders(self, params: Mapping[str, str]) -> list[Json]:
        symbol = params.get("symbol")
        out = []
        for order in self.orders.values():
            view = self.paper.order_state(order.client_order_id)
            if (
                view is not None
                and not view.status.is_final
                and (symbol is None or order.instrument.symbol == symbol)
            ):
                out.append(self._order_json(order))
        return out

    def all_orders(self, params: Mapping[str, str]) -> list[Json]:
        inst = self._instrument(params)
        rows = [
            self._order_json(o) for o in self.orders.values() if o.instrument.symbol == inst.symbol
        ]
        limit = int(params.get("limit", "500"))
        return rows[-max(1, min(limit, 1000)) :]

    def my_trades(self, params: Mapping[str, str]) -> list[Json]:
        inst = self._instrument(params)
        rows = [t for t in self.trades if t["symbol"] == inst.symbol]
        if "orderId" in params:
            rows = [t for t in rows if str(t["orderId"]) == params["orderId"]]
        if "fromId" in params:
            rows = [t for t in rows if t["id"] >= int(params["fromId"])]
        limit = int(params.get("limit", "500"))
        return rows[: max(1, min(limit, 1000))]

    def account(self) -> Json:
        acct = self.paper.account
        return {
            "makerCommission": 10,
            "takerCommission": 10,
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": False,
            "updateTime": self.now_ns // 1_000_000,
            "accountType": "SPOT",
            "balances": [
                {
                    "asset": asset,
                    "free": str(total - acct.locked(asset)),
                    "locked": str(acct.locked(asset)),
                }
                for asset, total in acct.balances().items()
            ],
            "permissions": ["SPOT"],
        }

    def final_status(self, client_order_id: str) -> OrderStatus | None:
        """The venue's own view of an order (REJECTED for one it refused)."""
        if client_order_id in self._rejected:
            return OrderStatus.REJECTED
        view = self.paper.order_state(client_order_id)
        return None if view is None else view.status

    # -- helpers ----------------------------------------------------------------------------
    def _drain(self) -> None:
        for report in self.paper.poll(self.now_ns):
            self.reports.append(report)
            if isinstance(report, OrderFilled):
                self._record_trade(report)

    def _record_trade(self, fill: OrderFilled) -> None:
        order = self.orders.get(fill.client_order_id)
        inst = self.paper.instruments[fill.symbol]
        # Binance numbers trades per symbol: two symbols' trades share ids
        trade_id = self._next_trade_id[fill.symbol] = (
            self._next_trade_id.get(fill.symbol, 5_000_000) + 1
        )
        price = inst.ticks_to_price(fill.price_ticks)
        qty = inst.lots_to_qty(fill.qty_lots)
        commission, asset = fill.fee_quote, inst.quote
        if self.base_commission and fill.side is Side.BUY and fill.fee_quote > 0:
            # the fee in the coin bought, at Binance's 8 decimals; the paper account booked
            # it in quote: moved to the coin, as the venue's balances would hold it
            commission = (fill.fee_quote / price).quantize(Decimal("1e-8"))
            asset = inst.base
            self.paper.account.adjust(inst.quote, fill.fee_quote)
            self.paper.account.adjust(inst.base, -commission)
        self.trades.append(
            {
                "symbol": fill.symbol,
                "id": trade_id,
                "orderId": -1 if order is None else order.order_id,
                "orderListId": -1,
                "price": _text(price),
                "qty": _text(qty),
                "quoteQty": _text(price * qty),
                "commission": _text(commission),
                "commissionAsset": asset,
                "time": fill.ts_event_ns // 1_000_000,
                "isBuyer": fill.side is Side.BUY,
                "isMaker": fill.is_maker,
                "isBestMatch": True,
            }
        )

    def _filter_name(self, symbol: str, names: tuple[str, ...]) -> str:
        """Of ``names``, the filter the symbol's exchangeInfo lists (the first without one)."""
        for entry in self.exchange_info.get("symbols", []):
            if entry.get("symbol") == symbol:
                listed = {f.get("filterType") for f in entry.get("filters", [])}
                return next((n for n in names if n in listed), names[0])
        return names[0]

    def _instrument(self, params: Mapping[str, str]) -> Instrument:
        symbol = params.get("symbol", "")
        inst = self.paper.instruments.get(symbol)
        if inst is None:
            raise VenueError(400, -1121, "Invalid symbol.")
        return inst

    def _find(self, params: Mapping[str, str]) -> VenueOrder:
        inst = self._instrument(params)
        cid = params.get("origClientOrderId")
        if cid is None and "orderId" in params:
            try:
                cid = self._by_id.get(int(params["orderId"]))
            except ValueError:
                cid = None
        order = None if cid is None else self.orders.get(cid)
        if order is None or order.instrument.symbol != inst.symbol:
            raise VenueError(400, -2013, "Order does not exist.")
        return order

    @staticmethod
    def _type_and_tif(raw_type: str, raw_tif: str) -> tuple[OrderType, TimeInForce]:
        if raw_type == "MARKET":
            return OrderType.MARKET, TimeInForce.IOC
        if raw_type == "LIMIT_MAKER":
            return OrderType.LIMIT, TimeInForce.POST_ONLY
        if raw_type == "LIMIT" and raw_tif in _TIF:
            return OrderType.LIMIT, _TIF[raw_tif]
        raise VenueError(400, -1116, "Invalid orderType.")

    def _order_json(self, order: VenueOrder) -> Json:
        view = self.paper.order_state(order.client_order_id)
        assert view is not None
        inst = order.instrument
        price = Decimal(0) if view.limit_ticks is None else inst.ticks_to_price(view.limit_ticks)
        quote = inst.position_value(view.avg_fill_ticks, view.filled_lots)
        tif = {"post_only": "GTC", "ioc": "IOC", "fok": "FOK"}.get(view.tif.value, "GTC")
        return {
            "symbol": inst.symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "price": _text(price),
            "origQty": _text(inst.lots_to_qty(view.qty_lots)),
            "executedQty": _text(inst.lots_to_qty(view.filled_lots)),
            "cummulativeQuoteQty": _text(quote),
            "status": _status(view.status, view.reason),
            "timeInForce": tif,
            "type": order.raw_type,
            "side": "BUY" if view.side is Side.BUY else "SELL",
            "stopPrice": "0",
            "icebergQty": "0",
            "time": order.time_ms,
            "updateTime": view.ts_update_ns // 1_000_000,
            "isWorking": not view.status.is_final,
            "workingTime": order.time_ms,
            "origQuoteOrderQty": "0",
            # the mode the paper engine applies in matching (``exchange.params.self_trade``)
            "selfTradePreventionMode": self.paper.config.self_trade.value.upper(),
        }


def _status(status: OrderStatus, reason: RejectReason | None) -> str:
    """Binance's status: an order self-trade prevention ended in matching is
    EXPIRED_IN_MATCH (ccxt reads it as "expired"), apart from a plain EXPIRED."""
    if status is OrderStatus.EXPIRED and reason is RejectReason.SELF_TRADE:
        return "EXPIRED_IN_MATCH"
    return _STATUS[status]


def _exact_units(text: str | None, unit: Decimal, filter_name: str) -> int:
    """Whole ``unit``s in a decimal string; Binance refuses values off the filter's grid."""
    try:
        value = Decimal(text or "")
    except InvalidOperation:
        raise VenueError(400, -1100, f"Illegal characters found in parameter: {text!r}") from None
    units = value / unit
    if not value.is_finite() or units != units.to_integral_value() or value <= 0:
        raise VenueError(400, -1013, f"Filter failure: {filter_name}")
    return int(units)


def _text(value: Decimal) -> str:
    """Binance prints eight decimals; keep the exact value without float noise."""
    return f"{value:.8f}"
