"""Order journal keyed by client order id: the coordinator's memory of its orders.

Reports are applied idempotently (a fill id seen twice is ignored; a final state never
reverts), which is what lets a restarted coordinator replay reports without double counting.
An order final for longer than ``memory_ns`` is forgotten (:meth:`OrderJournal.forget`), with
its fill ids: a report about it after that is one about an unknown order, ignored as before;
the counts by status stay whole.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import msgspec

from sapphire.model.events import Side
from sapphire.model.orders import (
    OrderFilled,
    OrderStatus,
    OrderType,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
    TimeInForce,
)


class JournalEntry(msgspec.Struct, kw_only=True):
    client_order_id: str
    agent_id: str
    symbol: str
    side: Side
    qty_lots: int
    limit_ticks: int | None
    filled_lots: int = 0
    status: OrderStatus = OrderStatus.PENDING
    submitted_ns: int = 0
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.GTC
    # a cancel is on its way: the order is the agent's no more (never crossed internally)
    cancel_sent: bool = False
    # lots of this order crossed inside the firm and not yet applied as fills
    reserved_lots: int = 0
    # the quantity the venue has of it (internal crossing sends less, or amends it down)
    venue_lots: int = 0

    @property
    def available_lots(self) -> int:
        """What is left to trade once the internal crosses under way have been applied."""
        return max(self.leaves_lots - self.reserved_lots, 0)

    @property
    def leaves_lots(self) -> int:
        return 0 if self.status.is_final else self.qty_lots - self.filled_lots


class OrderJournal:
    def __init__(self, memory_ns: int = 0) -> None:
        """``memory_ns``: how long an order is kept after it is final (0: for ever)."""
        self.entries: dict[str, JournalEntry] = {}
        self._seen_fills: set[str] = set()
        self._memory_ns = memory_ns
        # when each order became final, in that order; each order's fill ids
        self._ended: deque[tuple[int, str]] = deque()
        self._fill_ids: dict[str, list[str]] = {}
        # every order ever recorded, by its current status (forgotten ones included)
        self._by_status: dict[str, int] = {}
        # orders with any fill, by (agent, symbol) (forgotten ones included)
        self.filled_orders: dict[tuple[str, str], int] = {}
        # the orders not yet final, in submission order (crossing and cancel-all scan only these)
        self._open: dict[str, None] = {}
        # (agent, symbol, side) -> leaves of open orders, kept incrementally for risk checks
        self._open_lots: dict[tuple[str, str, Side], int] = {}

    def record_submit(self, order: SubmitOrder) -> bool:
        """False if the client order id is already known (a replayed submit)."""
        if order.client_order_id in self.entries:
            return False
        self.entries[order.client_order_id] = JournalEntry(
            client_order_id=order.client_order_id,
            agent_id=order.agent_id,
            symbol=order.symbol,
            side=order.side,
            qty_lots=order.qty_lots,
            limit_ticks=order.limit_ticks,
            submitted_ns=order.ts_event_ns,
            order_type=order.order_type,
            tif=order.tif,
            venue_lots=order.qty_lots,
        )
        self._open[order.client_order_id] = None
        key = (order.agent_id, order.symbol, order.side)
        self._open_lots[key] = self._open_lots.get(key, 0) + order.qty_lots
        pending = OrderStatus.PENDING.value
        self._by_status[pending] = self._by_status.get(pending, 0) + 1
        return True

    def is_new(self, report: OrderUpdate | OrderFilled) -> bool:
        """Whether ``apply`` would change anything: a live venue reconciled after a
        reconnect reports fills again, and agents must not count them twice."""
        entry = self.entries.get(report.client_order_id)
        if entry is None:
            # the venue's own close of a position it liquidated: an order no agent sent
            return (
                isinstance(report, OrderFilled)
                and report.liquidation
                and (report.fill_id not in self._seen_fills)
            )
        if isinstance(report, OrderFilled):
            return report.fill_id not in self._seen_fills
        return not entry.status.is_final

    def apply(self, report: OrderUpdate | OrderFilled, now_ns: int | None = None) -> bool:
        """Apply a report; False when it was a duplicate or for an unknown order. ``now_ns``:
        when it is applied on the run's clock, which :meth:`forget` counts the memory from
        (default: the report's own time; a venue may send none, or its own clock's)."""
        entry = self.entries.get(report.client_order_id)
        if entry is None:
            # a liquidation's fill (no order of ours): its fill id only, so it counts once
            if not self.is_new(report):
                return False
            assert isinstance(report, OrderFilled)
            self._seen_fills.add(report.fill_id)
            return True
        before = entry.leaves_lots
        status_before = entry.status
        if isinstance(report, OrderFilled):
            if report.fill_id in self._seen_fills:
                return False
            self._seen_fills.add(report.fill_id)
            if self._memory_ns:
                self._fill_ids.setdefault(entry.client_order_id, []).append(report.fill_id)
            if report.internal:
                entry.reserved_lots = max(entry.reserved_lots - report.qty_lots, 0)
            if not entry.filled_lots and report.qty_lots:
                book = (entry.agent_id, entry.symbol)
                self.filled_orders[book] = self.filled_orders.get(book, 0) + 1
            entry.filled_lots += report.qty_lots
            if entry.filled_lots >= entry.qty_lots:
                entry.status = OrderStatus.FILLED
            elif not entry.status.is_final:
                entry.status = OrderStatus.PARTIALLY_FILLED
        else:
            if entry.status.is_final:
                return False
            if report.reason is RejectReason.DUPLICATE_CLIENT_ORDER_ID:
                # the venue refused a second submit of this id and kept the first: no state
                # of the order (taken for its rejection, a live order left every open list)
                return False
            if report.status is not OrderStatus.ACCEPTED or entry.status is OrderStatus.PENDING:
                entry.status = report.status
        key = (entry.agent_id, entry.symbol, entry.side)
        self._open_lots[key] = self._open_lots.get(key, 0) - (before - entry.leaves_lots)
        if entry.status is not status_before:
            counts = self._by_status
            counts[status_before.value] -= 1
            counts[entry.status.value] = counts.get(entry.status.value, 0) + 1
        if entry.status.is_final and entry.client_order_id in self._open:
            del self._open[entry.client_order_id]
            if self._memory_ns:
                ended = report.ts_event_ns if now_ns is None else now_ns
                self._ended.append((ended, entry.client_order_id))
        return True

    def forget(self, now_ns: int) -> list[tuple[str, list[str]]]:
        """Drop the orders final for ``memory_ns`` or longer at ``now_ns``, with their fill
        ids; returns them (client order id, fill ids) for the caller's own indexes."""
        memory, ended = self._memory_ns, self._ended
        out: list[tuple[str, list[str]]] = []
        while memory and ended and ended[0][0] + memory <= now_ns:
            _, cid = ended.popleft()
            entry = self.entries.get(cid)
            if entry is None or not entry.status.is_final:
                continue
            del self.entries[cid]
            fills = self._fill_ids.pop(cid, [])
            self._seen_fills.difference_update(fills)
            out.append((cid, fills))
        return out

    def open_lots(self, agent_id: str, symbol: str, side: Side) -> int:
        return self._open_lots.get((agent_id, symbol, side), 0)

    @property
    def open_lots_by_key(self) -> Mapping[tuple[str, str, Side], int]:
        """``open_lots`` for every (agent, symbol, side) with any (read only)."""
        return self._open_lots

    def open_orders(self, agent_id: str | None = None) -> list[JournalEntry]:
        entries = self.entries
        return [
            entries[cid]
            for cid in self._open
            if agent_id is None or entries[cid].agent_id == agent_id
        ]

    def counts_by_status(self) -> dict[str, int]:
        """Every order recorded, by its status (kept as they change, so forgotten orders
        still count, and a summary costs no pass over the orders)."""
        return {status: n for status, n in self._by_status.items() if n}
