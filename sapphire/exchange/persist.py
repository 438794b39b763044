"""``PaperExchange`` snapshot/restore: everything needed to continue exactly where it stopped.

An execution actor restarted by Ray reloads its exchange from the last snapshot; with
deterministic client order ids, orders re-sent after the snapshot are then recognised as
duplicates instead of being placed twice. Encoded as msgpack; cash as decimal strings.
"""

from __future__ import annotations

import heapq
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec

from sapphire.book.l2 import L2Book
from sapphire.exchange.config import PaperExchangeConfig
from sapphire.exchange.impact import ImpactTracker
from sapphire.exchange.latency import RecordedLatency
from sapphire.exchange.state import SimOrder
from sapphire.model.events import Side
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

if TYPE_CHECKING:
    from sapphire.exchange.paper import PaperExchange

VERSION = 1


class _Order(msgspec.Struct, array_like=True):
    client_order_id: str
    agent_id: str
    symbol: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    limit_ticks: int | None
    qty_lots: int
    filled_lots: int
    status: OrderStatus
    reason: RejectReason | None
    ts_update_ns: int
    ahead: float
    cum_trade: float
    rest_seq: int
    locked: str
    fees_quote: str
    notional_ticks_lots: int


class _Position(msgspec.Struct, array_like=True):
    symbol: str
    qty_lots: int
    avg_entry_ticks: str
    realized_quote: str
    fees_quote: str
    funding_quote: str


class _State(msgspec.Struct):
    version: int
    config: PaperExchangeConfig
    orders: list[_Order]
    submits: list[tuple[int, int, SubmitOrder]]
    cancels: list[tuple[int, int, CancelOrder]]
    amends: list[tuple[int, int, AmendOrder]]
    updates: list[tuple[int, int, OrderUpdate]]
    fill_reports: list[tuple[int, int, OrderFilled]]
    fills: list[OrderFilled]
    balances: dict[str, str]
    locked: dict[str, str]
    positions: list[_Position]
    books: dict[str, bytes]
    impact: dict[str, list[tuple[int, int, int, int]]]
    rest_seq: dict[str, int]
    last_trade: dict[str, int]
    latency_lag: int
    seq: int
    fill_seq: int
    clock_ns: int
    ignored_events: int
    # each percent-price band's trade window (``TradeAverage``): its last trade and the
    # (ts, price x qty, qty) of the trades in it. Without it a restored venue drew the band
    # around the last trade until the window filled again: other refusals than a run that
    # never stopped. A snapshot from before it restores with none
    averages: dict[str, tuple[int | None, list[tuple[int, int, int]]]] = {}


def snapshot(ex: PaperExchange) -> bytes:
    books: dict[str, bytes] = {}
    impact: dict[str, list[tuple[int, int, int, int]]] = {}
    rest_seq: dict[str, int] = {}
    for symbol, engine in ex._engines.items():
        if not isinstance(engine.book, L2Book):
            raise TypeError("snapshot() supports the default L2Book only")
        books[symbol] = engine.book.snapshot()
        rest_seq[symbol] = engine._rest_seq
        if engine._impact is not None:
            impact[symbol] = [
                (int(side), price, lots, since)
                for (side, price), (lots, since) in engine._impact._consumed.items()
            ]
    acct = ex.account
    state = _State(
        version=VERSION,
        config=ex.config,
        orders=[
            _Order(
                o.client_order_id,
                o.agent_id,
                o.symbol,
                o.side,
                o.order_type,
                o.tif,
                o.limit_ticks,
                o.qty_lots,
                o.filled_lots,
                o.status,
                o.reason,
                o.ts_update_ns,
                o.ahead,
                o.cum_trade,
                o.rest_seq,
                str(o.locked),
                str(o.fees_quote),
                o.notional_ticks_lots,
            )
            for o in ex._orders.values()
        ],
        submits=[(t, s, a) for t, s, a in ex._pending if isinstance(a, SubmitOrder)],
        cancels=[(t, s, a) for t, s, a in ex._pending if isinstance(a, CancelOrder)],
        amends=[(t, s, a) for t, s, a in ex._pending if isinstance(a, AmendOrder)],
        updates=[(t, s, r) for t, s, r in ex._reports if isinstance(r, OrderUpdate)],
        fill_reports=[(t, s, r) for t, s, r in ex._reports if isinstance(r, OrderFilled)],
        fills=list(ex._fills),
        balances={a: str(v) for a, v in acct._balances.items()},
        locked={a: str(v) for a, v in acct._locked.items()},
        positions=[
            _Position(
                sym,
                p.qty_lots,
                str(p.avg_entry_ticks),
                str(p.realized_quote),
                str(p.fees_quote),
                str(p.funding_quote),
            )
            for sym, p in acct._positions.items()
        ],
        books=books,
        impact=impact,
        rest_seq=rest_seq,
        last_trade=dict(ex._last_trade),
        latency_lag=ex._latency._lag if isinstance(ex._latency, RecordedLatency) else -1,
        seq=ex._seq,
        fill_seq=ex._fill_seq,
        clock_ns=ex._clock_ns,
        ignored_events=ex.ignored_events,
        averages={sym: avg.state() for sym, avg in ex._averages.items()},
    )
    return msgspec.msgpack.encode(state)


def restore(cls: type[PaperExchange], data: bytes) -> PaperExchange:
    try:
        state = msgspec.msgpack.decode(data, type=_State)
    except msgspec.DecodeError as exc:
        raise ValueError(f"cannot restore PaperExchange: {exc}") from exc
    if state.version != VERSION:
        raise ValueError(f"PaperExchange snapshot version {state.version} != {VERSION}")
    ex = cls(state.config)
    for symbol, payload in state.books.items():
        book = ex._engines[symbol].book
        assert isinstance(book, L2Book)
        book.restore(payload)
    for rec in state.orders:
        o = SimOrder(
            client_order_id=rec.client_order_id, agent_id=rec.agent_id, symbol=rec.symbol,
            side=rec.side, order_type=rec.order_type, tif=rec.tif, limit_ticks=rec.limit_ticks,
            qty_lots=rec.qty_lots, ts_ns=rec.ts_update_ns,
        )  # fmt: skip
        o.filled_lots, o.status, o.reason = rec.filled_lots, rec.status, rec.reason
        o.ahead, o.cum_trade, o.rest_seq = rec.ahead, rec.cum_trade, rec.rest_seq
        o.locked, o.fees_quote = Decimal(rec.locked), Decimal(rec.fees_quote)
        o.notional_ticks_lots = rec.notional_ticks_lots
        ex._orders[o.client_order_id] = o
    ex._finished.extend(
        sorted(
            (o.ts_update_ns, o.client_order_id) for o in ex._orders.values() if o.status.is_final
        )
    )
    resting = sorted(
        (o for o in ex._orders.values() if o.is_open and o.limit_ticks is not None),
        key=lambda o: o.rest_seq,
    )
    for o in resting:
        assert o.limit_ticks is not None
        ex._engines[o.symbol].resting(o.side).setdefault(o.limit_ticks, []).append(o)
    for symbol, value in state.rest_seq.items():
        ex._engines[symbol]._rest_seq = value
    for symbol, entries in state.impact.items():
        tracker = ex._engines[symbol]._impact
        if isinstance(tracker, ImpactTracker):
            for side, price, lots, since in entries:
                tracker._consumed[(Side(side), price)] = (lots, since)
    ex._pending = [*state.submits, *state.cancels, *state.amends]
    heapq.heapify(ex._pending)
    ex._reports = [*state.updates, *state.fill_reports]
    heapq.heapify(ex._reports)
    # the in-order bounds (PaperExchange._push, _report_at) bind only while something is in
    # flight: the latest time still queued is the whole of them
    ex._last_arrive = max((t for t, _, _ in ex._pending), default=0)
    ex._last_deliver = max((t for t, _, _ in ex._reports), default=0)
    ex._fills = list(state.fills)
    acct = ex.account
    acct._balances = {a: Decimal(v) for a, v in state.balances.items()}
    acct._locked = {a: Decimal(v) for a, v in state.locked.items()}
    for rec_p in state.positions:
        pos = acct._positions[rec_p.symbol]
        pos.qty_lots, pos.avg_entry_ticks = rec_p.qty_lots, Decimal(rec_p.avg_entry_ticks)
        pos.realized_quote, pos.fees_quote = (
            Decimal(rec_p.realized_quote),
            Decimal(rec_p.fees_quote),
        )
        pos.funding_quote = Decimal(rec_p.funding_quote)
    ex._last_trade = dict(state.last_trade)
    if isinstance(ex._latency, RecordedLatency):
        ex._latency._lag = state.latency_lag
    ex._seq, ex._fill_seq, ex._clock_ns = state.seq, state.fill_seq, state.clock_ns
    ex.ignored_events = state.ignored_events
    for symbol, (last, trades) in state.averages.items():
        average = ex._averages.get(symbol)
        if average is not None:
            average.restore(last, trades)
    return ex
