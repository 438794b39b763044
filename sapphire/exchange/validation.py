"""Pre-match checks of a new order: filters, post-only, FOK, balance (self-trade
prevention is applied in matching: ``MatchingEngine.take``).

The venue is the one place exchange filters are enforced (pre-trade risk checks its own
limits, not these): LOT_SIZE (``min_qty``/``max_qty``/lot step), PRICE_FILTER (tick grid,
``min_price``/``max_price``), MARKET_LOT_SIZE, MIN_NOTIONAL, PERCENT_PRICE(_BY_SIDE) and
MAX_NUM_ORDERS, each as Binance documents it.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from fractions import Fraction

import msgspec

from sapphire.exchange.account import Account
from sapphire.exchange.matching import MatchingEngine
from sapphire.exchange.state import SimOrder
from sapphire.model.events import Side
from sapphire.model.instrument import Instrument, InstrumentKind
from sapphire.model.orders import (
    AmendOrder,
    CancelOrder,
    OrderType,
    RejectReason,
    SubmitOrder,
    TimeInForce,
)

Action = SubmitOrder | CancelOrder | AmendOrder


class Verdict(msgspec.Struct, kw_only=True):
    reason: RejectReason | None = None
    message: str = ""
    expire: bool = False  # EXPIRED (FOK not fillable) rather than REJECTED
    lock: Decimal = Decimal(0)


def lock_asset(inst: Instrument, side: Side) -> str:
    if inst.kind is InstrumentKind.SPOT and side is Side.SELL:
        return inst.base
    # derivatives lock margin in their settlement asset (the coin for inverse contracts)
    return inst.settle_asset


def check_filters(
    inst: Instrument, order_type: OrderType, limit_ticks: int | None, qty_lots: int, ref_ticks: int
) -> tuple[RejectReason, str] | None:
    """Exchange filters; ``ref_ticks`` prices a market order's notional."""
    if qty_lots <= 0:
        return RejectReason.INVALID_LOT, f"quantity must be a positive number of lots: {qty_lots}"
    if not inst.on_lot_step(qty_lots):
        # the book may hold sizes on a finer grid (size_increment); orders may not
        return (
            RejectReason.INVALID_LOT,
            f"quantity {inst.lots_to_qty(qty_lots)} is not a multiple of the lot step "
            f"{inst.lot_size}",
        )
    if order_type is OrderType.LIMIT and (limit_ticks is None or limit_ticks <= 0):
        return (
            RejectReason.INVALID_TICK,
            f"limit price must be a positive tick count: {limit_ticks}",
        )
    if order_type is OrderType.LIMIT and limit_ticks is not None:
        # Binance checks the price parameter, which only limit orders carry (a market
        # order's protection price here is the paper venue's own)
        bad = _price_filter(inst, limit_ticks)
        if bad is not None:
            return bad
    if qty_lots < inst.min_qty_lots:
        return RejectReason.MIN_QTY, f"{qty_lots} lots < min {inst.min_qty_lots}"
    if inst.max_qty_lots and qty_lots > inst.max_qty_lots:
        return RejectReason.MAX_QTY, f"{qty_lots} lots > max {inst.max_qty_lots}"
    if order_type is OrderType.MARKET:
        bad = _market_lot_size(inst, qty_lots)
        if bad is not None:
            return bad
    price = limit_ticks if limit_ticks is not None else ref_ticks
    if not inst.min_notional_ok(price, qty_lots):
        notional = inst.notional_quote(price, qty_lots)
        return RejectReason.MIN_NOTIONAL, f"notional {notional} < {inst.min_notional}"
    return None


def _price_filter(inst: Instrument, limit_ticks: int) -> tuple[RejectReason, str] | None:
    if not inst.sig_figs_ok(limit_ticks):
        return (
            RejectReason.INVALID_TICK,
            f"price {inst.ticks_to_price(limit_ticks)} has more than {inst.price_sig_figs} "
            "significant figures (a whole price is always allowed)",
        )
    if inst.min_price == inst.max_price == "0":
        return None  # no bounds (the default): no decimals parsed per order
    if limit_ticks < inst.min_price_ticks:
        price = inst.ticks_to_price(limit_ticks)
        return RejectReason.PRICE_FILTER, f"PRICE_FILTER: price {price} < minPrice {inst.min_price}"
    high = inst.max_price_ticks
    if high and limit_ticks > high:
        price = inst.ticks_to_price(limit_ticks)
        return RejectReason.PRICE_FILTER, f"PRICE_FILTER: price {price} > maxPrice {inst.max_price}"
    return None


def _market_lot_size(inst: Instrument, qty_lots: int) -> tuple[RejectReason, str] | None:
    if inst.market_min_qty == inst.market_max_qty == "0":
        return None
    if qty_lots < inst.market_min_qty_lots:
        qty = inst.lots_to_qty(qty_lots)
        return (
            RejectReason.MARKET_LOT_SIZE,
            f"MARKET_LOT_SIZE: market quantity {qty} < minQty {inst.market_min_qty}",
        )
    high = inst.market_max_qty_lots
    if high and qty_lots > high:
        qty = inst.lots_to_qty(qty_lots)
        return (
            RejectReason.MARKET_LOT_SIZE,
            f"MARKET_LOT_SIZE: market quantity {qty} > maxQty {inst.market_max_qty}",
        )
    return None


def check_percent_price(
    inst: Instrument, side: Side, limit_ticks: int, reference_ticks: Fraction | None
) -> tuple[RejectReason, str] | None:
    """PERCENT_PRICE(_BY_SIDE): a limit price within its side's band around the reference
    (:class:`TradeAverage` or the mark, per ``inst.price_band_reference``). No reference
    yet (no trade, no book): nothing to measure against, so nothing is refused."""
    if reference_ticks is None or not inst.has_price_band:
        return None
    buy = side is Side.BUY
    low, high = inst.price_band_ticks(buy, reference_ticks)
    ref = _price_text(inst, reference_ticks)
    word = "buy" if buy else "sell"
    key = "bid" if buy else "ask"
    if high is not None and limit_ticks > high:
        up = inst.bid_multiplier_up if buy else inst.ask_multiplier_up
        return RejectReason.PERCENT_PRICE, (
            f"PERCENT_PRICE: {word} price {inst.ticks_to_price(limit_ticks)} > "
            f"{inst.ticks_to_price(high)} ({key}MultiplierUp {up} x reference {ref})"
        )
    if limit_ticks < low:
        down = inst.bid_multiplier_down if buy else inst.ask_multiplier_down
        return RejectReason.PERCENT_PRICE, (
            f"PERCENT_PRICE: {word} price {inst.ticks_to_price(limit_ticks)} < "
            f"{inst.ticks_to_price(low)} ({key}MultiplierDown {down} x reference {ref})"
        )
    return None


def _price_text(inst: Instrument, ticks: Fraction) -> Decimal:
    """A fractional tick price as a price, to a hundredth of a tick (messages only)."""
    exact = Decimal(ticks.numerator) / Decimal(ticks.denominator) * inst.tick
    return exact.quantize(inst.tick / 100)


_NS_PER_MINUTE = 60 * 1_000_000_000


class TradeAverage:
    """Binance's average price (``GET /api/v3/avgPrice``), the reference of spot
    PERCENT_PRICE and PERCENT_PRICE_BY_SIDE: the volume-weighted average price of the
    recorded trades of the last ``mins`` minutes; ``mins`` 0 is the last trade's price.

    Why recorded trades: they are the market's own prints, so the band is the one the
    venue drew at that moment (our fills are not prints of the recording and, as on a deep
    market, move no average). A window with no trade (a quiet market) keeps the last
    trade's price: the average a venue shows stays where the last print left it.
    """

    __slots__ = ("_last", "_qty", "_trades", "_value", "_window_ns")

    def __init__(self, mins: int) -> None:
        self._window_ns = mins * _NS_PER_MINUTE
        self._trades: deque[tuple[int, int, int]] = deque()  # (ts, price x qty, qty)
        self._value = 0
        self._qty = 0
        self._last: int | None = None

    def add(self, ts_ns: int, price_ticks: int, qty_lots: int) -> None:
        self._last = price_ticks
        if self._window_ns and qty_lots > 0:
            trades = self._trades
            if trades and trades[-1][0] == ts_ns:
                # prints of one instant leave the window together: one entry holds their
                # sums (the average is the same; a checkpoint of a busy window was one tuple
                # a print, tens of thousands)
                _, value, qty = trades.pop()
                trades.append((ts_ns, value + price_ticks * qty_lots, qty + qty_lots))
            else:
                trades.append((ts_ns, price_ticks * qty_lots, qty_lots))
            self._value += price_ticks * qty_lots
            self._qty += qty_lots
            self._drop(ts_ns)

    def price(self, now_ns: int) -> Fraction | None:
        """The average in ticks (exact), None before the first trade."""
        if self._window_ns:
            self._drop(now_ns)
            if self._qty:
                return Fraction(self._value, self._qty)
        return None if self._last is None else Fraction(self._last)

    def state(self) -> tuple[int | None, list[tuple[int, int, int]]]:
        """What :meth:`restore` takes back: the last trade and the window's trades."""
        return self._last, list(self._trades)

    def restore(self, last: int | None, trades: list[tuple[int, int, int]]) -> None:
        self._last = last
        self._trades = deque((ts, value, qty) for ts, value, qty in trades)
        self._value = sum(t[1] for t in trades)
        self._qty = sum(t[2] for t in trades)

    def _drop(self, now_ns: int) -> None:
        trades, start = self._trades, now_ns - self._window_ns
        while trades and trades[0][0] <= start:
            _, value, qty = trades.popleft()
            self._value -= value
            self._qty -= qty


def check_new_order(
    order: SimOrder,
    inst: Instrument,
    engine: MatchingEngine,
    account: Account,
    now_ns: int,
    *,
    reference_ticks: Fraction | None = None,
) -> Verdict:
    """``reference_ticks``: the percent-price reference now (None: none yet)."""
    side, limit = order.side, order.limit_ticks
    is_market = order.order_type is OrderType.MARKET
    if is_market and order.tif is TimeInForce.POST_ONLY:
        return Verdict(reason=RejectReason.POST_ONLY_WOULD_TAKE, message="market order is a taker")
    # Walking the book is only needed where the answer depends on depth (market, FOK).
    needs_depth = is_market or order.tif is TimeInForce.FOK
    supply = engine.fillable(side, limit, now_ns, order.qty_lots) if needs_depth else []
    ref = supply[0][0] if supply else 0
    if is_market and not supply:
        return Verdict(
            reason=RejectReason.NO_LIQUIDITY, message="no opposite liquidity", expire=True
        )
    bad = check_filters(inst, order.order_type, limit, order.qty_lots, ref)
    if bad is None and limit is not None and order.order_type is OrderType.LIMIT:
        bad = check_percent_price(inst, side, limit, reference_ticks)
    if bad is None and inst.max_num_orders:
        # Binance evaluates its filters on the incoming order before matching, whatever
        # its type: at the limit, even an order that would not rest is refused
        count = engine.resting_count()
        if count >= inst.max_num_orders:
            bad = (
                RejectReason.MAX_NUM_ORDERS,
                f"MAX_NUM_ORDERS: {count} orders open on {inst.symbol}, maxNumOrders "
                f"{inst.max_num_orders}",
            )
    if bad is not None:
        return Verdict(reason=bad[0], message=bad[1])
    # a post-only order that would meet our own opposite order would match too (Binance's
    # LIMIT_MAKER is refused whatever it would match)
    if order.tif is TimeInForce.POST_ONLY and limit is not None and engine.would_match(side, limit):
        return Verdict(reason=RejectReason.POST_ONLY_WOULD_TAKE, message="would take liquidity")
    verdict = Verdict()
    # Counted over the whole book, a FOK that reached our own order filled part and then
    # expired: a fill-or-kill is all or nothing, and Binance decides whether it fills whole
    # before it matches
    if order.tif is TimeInForce.FOK and engine.reach(side, limit, supply) < order.qty_lots:
        verdict.expire = True
        if sum(q for _, q in supply) >= order.qty_lots:
            # the market holds enough: our own order is what stands in the way
            mode = engine.self_trade
            assert mode is not None
            verdict.reason = RejectReason.SELF_TRADE
            verdict.message = (
                f"self-trade: {mode.value}: fill-or-kill not fully fillable before our own order"
            )
        else:
            verdict.reason = RejectReason.FOK_NOT_FILLABLE
            verdict.message = "not fully fillable now"
        return verdict
    price = _lock_price(inst, side, limit, supply, order.qty_lots, engine)
    reducing = _reducing(inst, side, order.qty_lots, engine, account)
    asset, need = account.order_lock(inst, side, price, order.qty_lots, reducing)
    # an order that only closes needs nothing (however far under water the account is:
    # closing is how it gets out)
    if need > 0 and account.available(asset) < need:
        verdict.reason = RejectReason.INSUFFICIENT_BALANCE
        verdict.message = f"needs {need} {asset}, available {account.available(asset)}"
        return verdict
    # Self-trade prevention is not decided here: it applies in matching, where the walk
    # actually meets one of our resting orders (MatchingEngine.take), as Binance applies it
    # (an order within reach of our own ask may be filled by the market before it)
    verdict.lock = need
    return verdict


def _reducing(
    inst: Instrument,
    side: Side,
    qty_lots: int,
    engine: MatchingEngine,
    account: Account,
    amended: SimOrder | None = None,
) -> int:
    """Lots of a derivative order that reduce the position: they need no new margin. The
    position is what is left once this side's other resting orders (``amended`` excluded:
    it is the order being replaced) have closed their part."""
    if not inst.derivative:
        return 0
    held = account.position_state(inst.symbol).qty_lots
    if not held or (held > 0) == (side is Side.BUY):
        return 0
    pending = sum(
        o.leaves_lots for os in engine.resting(side).values() for o in os if o is not amended
    )
    return max(0, min(qty_lots, abs(held) - pending))


def amend_lock(
    order: SimOrder,
    inst: Instrument,
    engine: MatchingEngine,
    account: Account,
    new_price: int,
    leaves_lots: int,
) -> tuple[str, Decimal]:
    """What a resting order amended to ``new_price`` with ``leaves_lots`` left must reserve:
    valued as a new order's lock is (:func:`_lock_price`: an amend that crosses fills at the
    touch, and a linear sell or inverse buy is worth most there), less the part that reduces
    the position. At its new limit alone, an inverse buy amended through the ask reserved a
    fraction of the margin its fill then took."""
    price = _lock_price(inst, order.side, new_price, [], leaves_lots, engine)
    reducing = _reducing(inst, order.side, leaves_lots, engine, account, amended=order)
    return account.order_lock(inst, order.side, price, leaves_lots, reducing)


def _lock_price(
    inst: Instrument,
    side: Side,
    limit: int | None,
    supply: list[tuple[int, int]],
    qty_lots: int,
    engine: MatchingEngine,
) -> int:
    """The price an order's lock is valued at: of the prices it may fill at, the one with
    the largest value. A spot buy's cash and a linear buy's notional grow with the price:
    its limit, or the worst level a market order's walk reaches. A linear perpetual's
    *sell* fills at or above its limit, from the best bid down: valued at its limit it
    reserved a margin thousands of times too small (a sell limited at one tick). An
    inverse contract is worth more coin at a lower price: a buy from the best ask up."""
    from_touch = inst.derivative and ((side is Side.SELL) != inst.inverse)
    if not from_touch:
        return limit if limit is not None else _walk_worst(supply, qty_lots)
    # linear sell, inverse buy: the touch when it trades now, else its limit
    if limit is None:
        return supply[0][0]
    best = engine.book.best_bid() if side is Side.SELL else engine.book.best_ask()
    if best is None:
        return limit
    return max(limit, best[0]) if side is Side.SELL else min(limit, best[0])


def _walk_worst(supply: list[tuple[int, int]], qty_lots: int) -> int:
    worst = supply[0][0]
    left = qty_lots
    for price, avail in supply:
        worst = price
        left -= avail
        if left <= 0:
            break
    return worst
