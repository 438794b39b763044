"""Pre-match checks of a new order: filters, post-only, FOK, balance (self-trade
prevention is applied in matching: ``MatchingEngine.take``)."""

from __future__ import annotations

from decimal import Decimal

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
    if qty_lots < inst.min_qty_lots:
        return RejectReason.MIN_QTY, f"{qty_lots} lots < min {inst.min_qty_lots}"
    if inst.max_qty_lots and qty_lots > inst.max_qty_lots:
        return RejectReason.MAX_QTY, f"{qty_lots} lots > max {inst.max_qty_lots}"
    price = limit_ticks if limit_ticks is not None else ref_ticks
    if not inst.min_notional_ok(price, qty_lots):
        notional = inst.notional_quote(price, qty_lots)
        return RejectReason.MIN_NOTIONAL, f"notional {notional} < {inst.min_notional}"
    return None


def check_new_order(
    order: SimOrder,
    inst: Instrument,
    engine: MatchingEngine,
    account: Account,
    now_ns: int,
) -> Verdict:
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
    if bad is not None:
        return Verdict(reason=bad[0], message=bad[1])
    # a post-only order that would meet our own opposite order would match too (Binance's
    # LIMIT_MAKER is refused whatever it would match)
    if order.tif is TimeInForce.POST_ONLY and limit is not None and engine.would_match(side, limit):
        return Verdict(reason=RejectReason.POST_ONLY_WOULD_TAKE, message="would take liquidity")
    verdict = Verdict()
    if order.tif is TimeInForce.FOK and sum(q for _, q in supply) < order.qty_lots:
        verdict.reason = RejectReason.FOK_NOT_FILLABLE
        verdict.message = "not fully fillable now"
        verdict.expire = True
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
