"""Internal crossing: one agent's order against another agent's resting order of the account.

An exchange sees one account, so two of our agents on opposite sides of a price are a
self-trade it refuses (its self-trade prevention). With ``coordinator.crossing: internal``
the coordinator trades them against each other itself, when the incoming order is accepted by
risk (its decision time ``d``, the latest state the coordinator can know before the order
leaves), and books the trade at ``d + entry_ns``, the time the order would have reached the
venue:

* matching is price-time: the incoming order takes the best-priced resting orders first,
  the earlier-submitted first at one price, and trades at the resting order's price, never
  through the market: only resting orders at or inside the touch the coordinator last saw
  (a buy no higher than the best ask; the mark where no touch is known) cross, so neither
  agent trades worse than the venue would have let it;
* a resting order gives at most what is left of it (``JournalEntry.available_lots``: its
  leaves less the crosses already under way), and its quantity at the venue is reduced by
  what was crossed (a cancel when nothing is left, else an amend), arriving at the venue at
  the same time the incoming order would have;
* what is left of the incoming order goes on to the venue (same client order id), unless
  the venue would refuse it (below its minimum quantity or notional: a 1-lot remainder was
  rejected there, and the order with it): then it is not sent, and the order ends with its
  crossed lots, saying why; the venue's reports of an order crossed in part are told in the
  firm's terms (its filled lots include the crossed ones; filled at the venue while lots of
  it could not be crossed, it ends canceled, saying so);
* both fills are reported as the venue's are (``OrderFilled``, ``internal=True``, no fee).

A cross is booked only once the venue has confirmed that it took the crossed lots off the
resting order (its answer to the cancel or amend, made at ``d + entry_ns``): the journal lags
the venue by ``response_ns``, so the resting order may have traded at the venue meanwhile.
Then only what the venue still held is crossed (nothing when the amend or cancel is
refused), and the incoming order's part that could not be crossed is not executed (its
final state says so). The fills are stamped at the venue's answer, ``d + entry_ns``, and
reach the agents ``response_ns`` later, exactly as a venue fill at that time would.

Orders that do not cross: the same agent's (its own self-trade stays the venue's business),
post-only and fill-or-kill incoming orders (a post-only order must not take, and a FOK must
fill whole at the venue), resting orders with a cancel under way, and resting orders whose
venue remainder the venue would refuse (below its minimum quantity or notional).

Everything here is decided from the orders' submitted fields and the venue's answers, in
the order the venue made them, never from when a runner happened to see them: the outcome
is the same for every window and every runner.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import msgspec

from sapphire.coordination.journal import JournalEntry
from sapphire.model.events import Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    AmendOrder,
    CancelOrder,
    OrderFilled,
    OrderStatus,
    OrderType,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
    TimeInForce,
)

_RESTING_TIFS = frozenset({TimeInForce.GTC, TimeInForce.POST_ONLY})
_NO_CROSS_TIFS = frozenset({TimeInForce.POST_ONLY, TimeInForce.FOK})


class Cross(msgspec.Struct, frozen=True, kw_only=True):
    resting: JournalEntry
    price_ticks: int
    qty_lots: int


class CrossedMoney(msgspec.Struct, kw_only=True):
    """The crosses' money in one settlement asset."""

    notional: Decimal = Decimal(0)
    # what the venue would have charged for the same trade between two of its clients
    taker_fees_avoided: Decimal = Decimal(0)
    maker_fees_avoided: Decimal = Decimal(0)


class CrossingStats(msgspec.Struct, kw_only=True):
    """The summary's account of internal crossing."""

    crosses: int = 0
    crossed_lots: int = 0
    # by settlement asset: an inverse leg's BTC and a linear leg's USDT were one sum
    money: dict[str, CrossedMoney] = msgspec.field(default_factory=dict)
    # the one-sum fields of checkpoints written before ``money``: a pickled struct restores
    # only with every field it had (read into ``money`` by ``CrossBook.__setstate__``)
    crossed_notional_quote: Decimal = Decimal(0)
    taker_fees_avoided_quote: Decimal = Decimal(0)
    maker_fees_avoided_quote: Decimal = Decimal(0)
    resting_canceled: int = 0
    resting_amended: int = 0
    # lots the venue had traded before the cross reached it: not crossed
    failed_lots: int = 0
    # lots an order was filled past its size (must stay 0: the venue confirms every cross)
    overfill_lots: int = 0


def can_cross(order: SubmitOrder) -> bool:
    return order.tif not in _NO_CROSS_TIFS


def _crosses(order: SubmitOrder, resting: JournalEntry, bound: int | None) -> bool:
    """``bound``: the worst price a cross may have for ``order`` (the touch, within a market
    order's price band): a cross through the market (a resting sell above the best ask, a
    market buy of a sell resting 5.6 % above a fallen mid) cost the firm what the venue
    would have given. None (no price known, which risk lets no order through with): a limit
    order's own limit bounds it, and a market order is the venue's book's to price."""
    own = None if order.order_type is OrderType.MARKET else order.limit_ticks
    if bound is None:
        bound = own
    elif own is not None:
        bound = min(bound, own) if order.side is Side.BUY else max(bound, own)
    limit = resting.limit_ticks
    if limit is None or bound is None:
        return False
    return limit <= bound if order.side is Side.BUY else limit >= bound


def _venue_ok(inst: Instrument | None, price_ticks: int, lots: int) -> bool:
    """Whether the venue would keep an order of ``lots`` at ``price_ticks`` (its filters)."""
    if inst is None:
        return True
    if lots < inst.min_qty_lots:
        return False
    return inst.min_notional_ok(price_ticks, lots)


def match(
    order: SubmitOrder,
    open_orders: Iterable[JournalEntry],
    inst: Instrument | None,
    market_bound: int | None = None,
) -> list[Cross]:
    """The crosses of ``order`` against the account's open orders, best price first;
    ``market_bound``: the worst price any cross may have (the touch; None: none crosses)."""
    if not can_cross(order):
        return []
    candidates: list[tuple[int, int, int, JournalEntry]] = []
    sign = 1 if order.side is Side.BUY else -1
    for i, entry in enumerate(open_orders):
        if (
            entry.symbol != order.symbol
            or entry.side is order.side
            or entry.agent_id == order.agent_id
            or entry.client_order_id == order.client_order_id
            or entry.order_type is not OrderType.LIMIT
            or entry.tif not in _RESTING_TIFS
            or entry.cancel_sent
            or entry.available_lots <= 0
            or not _crosses(order, entry, market_bound)
        ):
            continue
        assert entry.limit_ticks is not None
        candidates.append((sign * entry.limit_ticks, entry.submitted_ns, i, entry))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    out: list[Cross] = []
    left = order.qty_lots
    for _, _, _, entry in candidates:
        if left <= 0:
            break
        assert entry.limit_ticks is not None
        lots = min(left, entry.available_lots)
        rest = entry.available_lots - lots
        if rest and not _venue_ok(inst, entry.limit_ticks, entry.venue_lots - lots):
            continue  # the venue would refuse the amend: leave this one to the venue
        out.append(Cross(resting=entry, price_ticks=entry.limit_ticks, qty_lots=lots))
        left -= lots
    return out


class PendingCross(msgspec.Struct, kw_only=True):
    # the journal's entries, read for their submitted fields only (never their state, which
    # depends on when a runner delivered the reports)
    incoming: JournalEntry
    resting: JournalEntry
    price_ticks: int
    lots: int
    at_ns: int
    cancel: bool  # the resting order crossed whole (canceled at the venue), else amended
    new_qty_lots: int = 0


class _Incoming(msgspec.Struct, kw_only=True):
    qty_lots: int
    pending: int = 0
    crossed: int = 0
    failed: int = 0
    at_venue: bool = False  # part of it went on to the venue
    unsent: int = 0  # a remainder the venue would refuse: not sent


class CrossBook:
    """The crosses under way and what was crossed; the core routes orders through it."""

    def __init__(self, entry_ns: int) -> None:
        self.entry_ns = entry_ns
        self.stats = CrossingStats()
        self._pending: dict[str, list[PendingCross]] = {}  # by resting order
        self._incoming: dict[str, _Incoming] = {}
        # the venue's quantity of each order crossed while resting, as its answers confirm
        self._venue_lots: dict[str, int] = {}
        # resting orders crossed whole: the venue has them canceled, the firm filled
        self._filled_here: set[str] = set()
        # orders the journal forgot while a cross of theirs still waited for the venue
        self._forgotten: set[str] = set()
        # per order that took part in a cross: its quantity in the firm, the lots crossed
        # and (incoming) those that could not be: the venue's reports of it, which count
        # its venue lots only, are told in these terms (``firm_view``)
        self._firm_qty: dict[str, int] = {}
        self._crossed: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._n = 0

    def __setstate__(self, state: dict[str, object]) -> None:
        # a checkpoint written before these were kept restores without them
        self._firm_qty, self._crossed, self._failed = {}, {}, {}
        self.__dict__.update(state)
        st = self.stats
        if st.crossed_notional_quote or st.taker_fees_avoided_quote or st.maker_fees_avoided_quote:
            # money summed before it was kept per asset: its asset is not known any more
            old = st.money.setdefault("", CrossedMoney())
            old.notional += st.crossed_notional_quote
            old.taker_fees_avoided += st.taker_fees_avoided_quote
            old.maker_fees_avoided += st.maker_fees_avoided_quote
            st.crossed_notional_quote = st.taker_fees_avoided_quote = Decimal(0)
            st.maker_fees_avoided_quote = Decimal(0)

    def forget(self, client_order_id: str) -> None:
        """An order the journal no longer keeps (final for its memory): nothing of it is
        needed here any more, once its crosses are resolved. One still waiting for the
        venue's answer (a resting order that filled at the venue while a cross's amend was
        on its way, a memory shorter than that trip) is forgotten when the answer comes."""
        if client_order_id in self._pending:
            self._forgotten.add(client_order_id)
            return
        self._venue_lots.pop(client_order_id, None)
        self._filled_here.discard(client_order_id)
        for kept in (self._firm_qty, self._crossed, self._failed):
            kept.pop(client_order_id, None)

    def route(
        self,
        order: SubmitOrder,
        incoming: JournalEntry,
        open_orders: Iterable[JournalEntry],
        inst: Instrument | None,
        market_bound: int | None = None,
    ) -> list[SubmitOrder | CancelOrder | AmendOrder]:
        """The commands for the venue: the order (or what is left of it after crossing),
        preceded by the cancels and amends that take the crossed lots off resting orders."""
        crosses = match(order, open_orders, inst, market_bound)
        if not crosses:
            return [order]
        now = order.ts_event_ns
        out: list[SubmitOrder | CancelOrder | AmendOrder] = []
        state = _Incoming(qty_lots=order.qty_lots, pending=len(crosses))
        self._incoming[order.client_order_id] = state
        crossed = 0
        self._firm_qty.setdefault(order.client_order_id, order.qty_lots)
        for cross in crosses:
            resting, lots = cross.resting, cross.qty_lots
            cid = resting.client_order_id
            self._firm_qty.setdefault(cid, resting.qty_lots)
            crossed += lots
            whole = resting.available_lots == lots
            incoming.reserved_lots += lots
            resting.reserved_lots += lots
            self._venue_lots.setdefault(cid, resting.venue_lots)
            pending = PendingCross(
                incoming=incoming,
                resting=resting,
                price_ticks=cross.price_ticks,
                lots=lots,
                at_ns=now + self.entry_ns,
                cancel=whole,
            )
            if whole:
                resting.cancel_sent = True  # nothing of it is the agent's to cancel any more
                out.append(CancelOrder(ts_event_ns=now, client_order_id=cid, symbol=order.symbol))
            else:
                resting.venue_lots -= lots
                pending.new_qty_lots = resting.venue_lots
                out.append(
                    AmendOrder(
                        ts_event_ns=now,
                        client_order_id=cid,
                        symbol=order.symbol,
                        new_qty_lots=resting.venue_lots,
                    )
                )
            self._pending.setdefault(cid, []).append(pending)
        rest = order.qty_lots - crossed
        price = order.limit_ticks if order.limit_ticks is not None else crosses[-1].price_ticks
        if rest and not _venue_ok(inst, price, rest):
            state.unsent, rest = rest, 0
            incoming.reserved_lots += state.unsent  # nothing of it to cancel at the venue
        incoming.venue_lots = rest
        if rest:
            state.at_venue = True
            out.append(msgspec.structs.replace(order, qty_lots=rest))
        return out

    def resolve(
        self, report: OrderUpdate, inst: Instrument | None
    ) -> tuple[list[OrderFilled | OrderUpdate], OrderUpdate | None]:
        """The venue's answer to a cross's cancel or amend (other reports are no answer):
        the cross's fills and final states, and what of ``report`` is delivered (a CANCELED
        of an order crossed whole is not: the order was filled here)."""
        cid = report.client_order_id
        queue = self._pending.get(cid)
        if not queue:
            if cid in self._filled_here and report.reason is RejectReason.UNKNOWN_ORDER:
                # an agent's cancel of an order filled here: refused, the order is filled
                return [], msgspec.structs.replace(report, status=OrderStatus.FILLED)
            return [], self.firm_view(report)
        head = queue[0]
        refused = report.reason is not None and (
            report.reason is RejectReason.UNKNOWN_ORDER or report.message.startswith("amend")
        )
        if head.cancel:
            done = report.status is OrderStatus.CANCELED and report.reason is None
        else:
            done = report.reason is None and report.message == "amended"
        if not (done or refused):
            return [], self.firm_view(report)
        queue.pop(0)
        if not queue:
            del self._pending[report.client_order_id]
        incoming, resting = head.incoming, head.resting
        rid = resting.client_order_id
        held = self._venue_lots[rid]
        if not done:
            lots = 0
        elif head.cancel:
            lots = min(head.lots, held - report.filled_lots)  # what the venue still held
        else:
            lots = head.lots
            self._venue_lots[rid] = head.new_qty_lots
        state = self._incoming[incoming.client_order_id]
        state.pending -= 1
        failed = head.lots - lots
        state.failed += failed
        st = self.stats
        st.failed_lots += failed
        if failed:
            # the lots held for the cross go back to the resting order (held for ever, it had
            # none available, and the kill switch's cancel-all passed it by: it filled after
            # the kill); not to the incoming order, whose lots that did not cross never went
            # to the venue either (given back, a later order crossed them as if they rested
            # there)
            resting.reserved_lots = max(resting.reserved_lots - failed, 0)
            if not done and not head.cancel:
                resting.venue_lots += head.lots  # the amend was refused: the venue kept it
            iid = incoming.client_order_id
            self._failed[iid] = self._failed.get(iid, 0) + failed
        out: list[OrderFilled | OrderUpdate] = []
        if lots > 0:
            for crossed_cid in (incoming.client_order_id, rid):
                self._crossed[crossed_cid] = self._crossed.get(crossed_cid, 0) + lots
            state.crossed += lots
            st.crosses += 1
            st.crossed_lots += lots
            if head.cancel:
                st.resting_canceled += 1
            else:
                st.resting_amended += 1
            if inst is not None:
                m = st.money.setdefault(inst.settle_asset, CrossedMoney())
                m.notional += inst.notional_quote(head.price_ticks, lots)
                m.taker_fees_avoided += inst.fee_quote(head.price_ticks, lots, maker=False)
                m.maker_fees_avoided += inst.fee_quote(head.price_ticks, lots, maker=True)
            self._n += 1
            left = state.qty_lots - state.crossed - state.failed
            resting_left = 0 if head.cancel else report.leaves_lots
            for entry, leaves, maker in ((incoming, left, False), (resting, resting_left, True)):
                out.append(
                    OrderFilled(
                        ts_event_ns=head.at_ns,
                        client_order_id=entry.client_order_id,
                        agent_id=entry.agent_id,
                        symbol=entry.symbol,
                        side=entry.side,
                        price_ticks=head.price_ticks,
                        qty_lots=lots,
                        fee_quote=Decimal(0),
                        is_maker=maker,
                        fill_id=f"{entry.symbol}-x{self._n}-{'m' if maker else 't'}",
                        leaves_lots=leaves,
                        internal=True,
                    )
                )
        if done and head.cancel:
            # no venue report will give the resting order's fate: it is filled (the venue
            # had no more of it than the cross took)
            self._filled_here.add(rid)
            out.append(_final(resting, head.at_ns, resting.qty_lots, "crossed internally"))
        if state.pending == 0:
            del self._incoming[incoming.client_order_id]
            if not state.at_venue:
                why = "crossed internally"
                if state.failed:
                    why += f"; {state.failed} lots not: the resting order traded at the venue first"
                if state.unsent:
                    why += f"; {state.unsent} lots not sent: below the venue's minimum"
                out.append(_final(incoming, head.at_ns, state.crossed, why))
        if rid in self._forgotten and rid not in self._pending:
            self._forgotten.discard(rid)
            self.forget(rid)
        return out, None if done and head.cancel else self.firm_view(report)

    def firm_view(self, report: OrderUpdate) -> OrderUpdate:
        """A venue report of an order crossed in part, in the firm's terms: its filled lots
        count the crossed ones and its leaves the firm's quantity (the stored rows said
        "canceled, 0 filled" of an order 4 lots of which were crossed, "accepted, 6 left" of
        a 10-lot order); filled at the venue while lots of it could not be crossed, it is
        canceled with what was filled (it read FILLED with 4 of 16 lots)."""
        cid = report.client_order_id
        crossed, failed = self._crossed.get(cid, 0), self._failed.get(cid, 0)
        if not (crossed or failed) or cid not in self._firm_qty:
            return report
        qty = self._firm_qty[cid]
        filled = report.filled_lots + crossed
        status, message = report.status, report.message
        if status.is_final:
            leaves = 0
            if status is OrderStatus.FILLED and filled < qty:
                status = OrderStatus.CANCELED
                note = f"{qty - filled} lots not: the resting order traded at the venue first"
                message = f"{message}; {note}" if message else note
        else:
            leaves = max(qty - filled - failed, 0)
        return msgspec.structs.replace(
            report, status=status, filled_lots=filled, leaves_lots=leaves, message=message
        )


def _final(entry: JournalEntry, at_ns: int, filled_lots: int, message: str) -> OrderUpdate:
    """The final state of an order the firm filled itself (no venue report will say)."""
    whole = filled_lots >= entry.qty_lots
    return OrderUpdate(
        ts_event_ns=at_ns,
        client_order_id=entry.client_order_id,
        agent_id=entry.agent_id,
        symbol=entry.symbol,
        status=OrderStatus.FILLED if whole else OrderStatus.CANCELED,
        filled_lots=filled_lots,
        leaves_lots=0,
        message=message,
    )
