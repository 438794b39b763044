"""Amend (replace) of a resting order: a price change or a size increase loses priority."""

from __future__ import annotations

from sapphire.exchange.account import Account
from sapphire.exchange.matching import MatchingEngine
from sapphire.exchange.state import SimOrder
from sapphire.exchange.validation import amend_lock, check_filters
from sapphire.model.instrument import Instrument
from sapphire.model.orders import AmendOrder, RejectReason, TimeInForce


def apply_amend(
    order: SimOrder,
    cmd: AmendOrder,
    inst: Instrument,
    engine: MatchingEngine,
    account: Account,
) -> tuple[RejectReason | None, str, bool]:
    """Apply ``cmd`` to an open resting order. Returns ``(reject reason, message, requeue)``;
    on a reject the order is unchanged. ``requeue`` asks the caller to match-or-rest it again
    (it was taken off its level)."""
    assert order.limit_ticks is not None
    new_price = order.limit_ticks if cmd.new_limit_ticks is None else cmd.new_limit_ticks
    new_qty = order.qty_lots if cmd.new_qty_lots is None else cmd.new_qty_lots
    bad = check_filters(inst, order.order_type, new_price, new_qty, new_price)
    if bad is not None:
        return bad[0], "amend rejected: " + bad[1], False
    if new_qty <= order.filled_lots:
        return RejectReason.INVALID_LOT, "amend rejected: new quantity <= filled quantity", False
    takes = engine.would_take(order.side, new_price)
    if order.tif is TimeInForce.POST_ONLY and takes:
        return RejectReason.POST_ONLY_WOULD_TAKE, "amend rejected: would take liquidity", False
    if engine.own_crossing(order.side, new_price):
        return RejectReason.SELF_TRADE, "amend rejected: would trade with our own order", False
    asset, need = amend_lock(order, inst, engine, account, new_price, new_qty - order.filled_lots)
    if need > 0 and account.available(asset) + order.locked < need:
        return RejectReason.INSUFFICIENT_BALANCE, f"amend rejected: needs {need} {asset}", False
    account.release(asset, order.locked)
    account.lock(asset, need)
    order.locked = need
    requeue = new_price != order.limit_ticks or new_qty > order.qty_lots
    if requeue:
        engine.remove(order)
        order.limit_ticks = new_price
    order.qty_lots = new_qty
    return None, "", requeue
