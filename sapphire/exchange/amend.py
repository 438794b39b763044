"""Amend (replace) of a resting order: what keeps its queue place, what loses it, and the
amends Binance answers by canceling the order."""

from __future__ import annotations

import enum

from sapphire.exchange.account import Account
from sapphire.exchange.matching import MatchingEngine
from sapphire.exchange.state import SimOrder
from sapphire.exchange.validation import amend_lock, check_filters
from sapphire.model.instrument import Instrument
from sapphire.model.orders import AmendOrder, RejectReason, TimeInForce


class AmendResult(enum.Enum):
    KEPT = "kept"  # amended in place: its queue place kept
    REQUEUE = "requeue"  # taken off its level: match-or-rest it again
    CANCEL = "cancel"  # the venue cancels the order (Binance's Modify Order rules)


def apply_amend(
    order: SimOrder,
    cmd: AmendOrder,
    inst: Instrument,
    engine: MatchingEngine,
    account: Account,
) -> tuple[RejectReason | None, str, AmendResult]:
    """Apply ``cmd`` to an open resting order. Returns ``(reason, message, result)``; a
    reason with KEPT is a refused amend (the order unchanged); with CANCEL the caller ends
    the order CANCELED with that reason."""
    assert order.limit_ticks is not None
    new_price = order.limit_ticks if cmd.new_limit_ticks is None else cmd.new_limit_ticks
    new_qty = order.qty_lots if cmd.new_qty_lots is None else cmd.new_qty_lots
    bad = check_filters(inst, order.order_type, new_price, new_qty, new_price)
    if bad is not None:
        return bad[0], "amend rejected: " + bad[1], AmendResult.KEPT
    # Binance's Modify Order: "the order will be cancelled by the amendment when partially
    # filled and the new quantity <= executedQty; when the order is GTX and the new price
    # will cause it to be executed immediately". Refused and kept, the order went on resting
    # here where the venue would have ended it.
    if new_qty <= order.filled_lots:
        message = "amend canceled the order: new quantity <= filled quantity"
        return RejectReason.INVALID_LOT, message, AmendResult.CANCEL
    takes = engine.would_match(order.side, new_price)
    if order.tif is TimeInForce.POST_ONLY and takes:
        message = "amend canceled the order: post-only would take liquidity"
        return RejectReason.POST_ONLY_WOULD_TAKE, message, AmendResult.CANCEL
    asset, need = amend_lock(order, inst, engine, account, new_price, new_qty - order.filled_lots)
    if need > 0 and account.available(asset) + order.locked < need:
        message = f"amend rejected: needs {need} {asset}"
        return RejectReason.INSUFFICIENT_BALANCE, message, AmendResult.KEPT
    account.release(asset, order.locked)
    account.lock(asset, need)
    order.locked = need
    # Spot keeps the queue place of an order whose quantity only went down (Binance spot's
    # "keep priority" amend); Binance's USD-M and COIN-M futures reorder every modified order
    # in the match queue ("modified orders will be reordered in the match queue").
    requeue = inst.derivative or new_price != order.limit_ticks or new_qty > order.qty_lots
    if requeue:
        engine.remove(order)
        order.limit_ticks = new_price
    order.qty_lots = new_qty
    return None, "", AmendResult.REQUEUE if requeue else AmendResult.KEPT
