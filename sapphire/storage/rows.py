"""Messages -> table rows, and rows -> typed frames with per-row rejection.

A row is a plain ``dict`` keyed by the table's column names. Converters take the storage
identity explicitly (``run_id``, ``producer_id``, ``seq``): a message's own sequence (an
intent's ``seq``) identifies it to the exchange, while ``seq`` here numbers what one producer
wrote, which is what exactly-once storage needs.

Money is rounded here, once, to its quote asset's scale: the fill, position and PnL builders
take the instrument's ``quote`` (the rule: :func:`sapphire.storage.money.round_money`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import polars as pl

from sapphire.model.events import Quote, Trade
from sapphire.model.orders import (
    OrderFilled,
    OrderIntent,
    OrderUpdate,
    Position,
    Signal,
    SubmitOrder,
)
from sapphire.storage.money import AVG_TICKS_SCALE, money_error, round_money, round_to_scale
from sapphire.storage.records import LlmDecisionRecord, PnlSnapshot, RiskDecisionLike
from sapphire.storage.schemas import TableSchema

Row = dict[str, Any]


def _ident(ts_ns: int, symbol: str, agent_id: str, run_id: str, producer_id: str, seq: int) -> Row:
    return {
        "ts_ns": ts_ns,
        "symbol": symbol,
        "agent_id": agent_id,
        "run_id": run_id,
        "producer_id": producer_id,
        "seq": seq,
    }


def trade_row(t: Trade, *, run_id: str, producer_id: str, seq: int, agent_id: str = "") -> Row:
    row = _ident(t.ts_event_ns, t.symbol, agent_id, run_id, producer_id, seq)
    row.update(
        kind="trade",
        ts_recv_ns=t.ts_recv_ns,
        price_ticks=t.price_ticks,
        qty_lots=t.qty_lots,
        side=int(t.taker_side),
        trade_id=t.trade_id,
    )
    return row


def quote_row(q: Quote, *, run_id: str, producer_id: str, seq: int, agent_id: str = "") -> Row:
    row = _ident(q.ts_event_ns, q.symbol, agent_id, run_id, producer_id, seq)
    row.update(
        kind="quote",
        ts_recv_ns=q.ts_recv_ns,
        bid_ticks=q.bid_ticks,
        bid_lots=q.bid_lots,
        ask_ticks=q.ask_ticks,
        ask_lots=q.ask_lots,
    )
    return row


def signal_row(
    s: Signal, *, run_id: str, producer_id: str | None = None, seq: int | None = None
) -> Row:
    row = _ident(
        s.ts_event_ns,
        s.symbol,
        s.agent_id,
        run_id,
        s.agent_id if producer_id is None else producer_id,
        s.seq if seq is None else seq,
    )
    row.update(strength=s.strength, reason=s.reason)
    return row


def intent_row(
    i: OrderIntent, *, run_id: str, producer_id: str | None = None, seq: int | None = None
) -> Row:
    row = _ident(
        i.ts_event_ns,
        i.symbol,
        i.agent_id,
        run_id,
        i.agent_id if producer_id is None else producer_id,
        i.seq if seq is None else seq,
    )
    row.update(
        client_order_id=i.client_order_id,
        side=int(i.side),
        qty_lots=i.qty_lots,
        limit_ticks=i.limit_ticks,
        order_type=str(i.order_type),
        tif=str(i.tif),
        reduce_only=i.reduce_only,
    )
    return row


def submit_row(o: SubmitOrder, *, run_id: str, producer_id: str, seq: int) -> Row:
    row = _ident(o.ts_event_ns, o.symbol, o.agent_id, run_id, producer_id, seq)
    row.update(
        event="submit",
        client_order_id=o.client_order_id,
        side=int(o.side),
        qty_lots=o.qty_lots,
        limit_ticks=o.limit_ticks,
        order_type=str(o.order_type),
        tif=str(o.tif),
        status="pending",
        filled_lots=0,
        leaves_lots=o.qty_lots,
        reason=None,
        message="",
    )
    return row


def update_row(u: OrderUpdate, *, run_id: str, producer_id: str, seq: int) -> Row:
    row = _ident(u.ts_event_ns, u.symbol, u.agent_id, run_id, producer_id, seq)
    row.update(
        event="update",
        client_order_id=u.client_order_id,
        status=str(u.status),
        filled_lots=u.filled_lots,
        leaves_lots=u.leaves_lots,
        reason=None if u.reason is None else str(u.reason),
        message=u.message,
    )
    return row


def fill_row(f: OrderFilled, *, run_id: str, producer_id: str, seq: int, quote: str) -> Row:
    row = _ident(f.ts_event_ns, f.symbol, f.agent_id, run_id, producer_id, seq)
    row.update(
        client_order_id=f.client_order_id,
        fill_id=f.fill_id,
        side=int(f.side),
        price_ticks=f.price_ticks,
        qty_lots=f.qty_lots,
        fee_quote=round_money(f.fee_quote, quote),
        is_maker=f.is_maker,
        leaves_lots=f.leaves_lots,
        internal=f.internal,
        fee_lots=f.fee_lots,
        liquidation=f.liquidation,
    )
    return row


def position_row(p: Position, *, run_id: str, producer_id: str, seq: int, quote: str) -> Row:
    row = _ident(p.ts_event_ns, p.symbol, p.agent_id, run_id, producer_id, seq)
    row.update(
        qty_lots=p.qty_lots,
        avg_entry_ticks=round_to_scale(p.avg_entry_ticks, AVG_TICKS_SCALE),
        realized_pnl_quote=round_money(p.realized_pnl_quote, quote),
        fees_quote=round_money(p.fees_quote, quote),
    )
    return row


def pnl_row(p: PnlSnapshot, *, run_id: str, producer_id: str, seq: int, quote: str) -> Row:
    row = _ident(p.ts_event_ns, p.symbol, p.agent_id, run_id, producer_id, seq)
    row.update(
        position_lots=p.position_lots,
        realized_pnl_quote=round_money(p.realized_pnl_quote, quote),
        unrealized_pnl_quote=round_money(p.unrealized_pnl_quote, quote),
        fees_quote=round_money(p.fees_quote, quote),
        equity_quote=round_money(p.equity_quote, quote),
        funding_quote=round_money(p.funding_quote, quote),
    )
    return row


def risk_row(d: RiskDecisionLike, *, run_id: str, producer_id: str, seq: int) -> Row:
    row = _ident(d.ts_event_ns, d.symbol, d.agent_id, run_id, producer_id, seq)
    row.update(
        client_order_id=d.client_order_id,
        accepted=d.accepted,
        requested_lots=d.requested_lots,
        reason=None if d.reason is None else str(d.reason),
        detail=d.detail,
    )
    return row


def llm_row(d: LlmDecisionRecord, *, run_id: str, producer_id: str, seq: int) -> Row:
    row = _ident(d.ts_event_ns, d.symbol, d.agent_id, run_id, producer_id, seq)
    row.update(
        model=d.model,
        action=d.action,
        size_fraction=float(d.size_fraction),
        confidence=float(d.confidence),
        rationale=d.rationale,
        valid=d.valid,
        error=d.error,
        latency_ns=d.latency_ns,
        prompt_hash=d.prompt_hash,
        fallback=d.fallback,
        before_cutoff=d.before_cutoff,
        prompt_tokens=d.prompt_tokens,
        completion_tokens=d.completion_tokens,
        queue_wait_ns=d.queue_wait_ns,
        batch_size=d.batch_size,
        cache_hit=d.cache_hit,
        cpu_s=float(d.cpu_s),
        gpu_s=float(d.gpu_s),
        cost=d.cost,
        cost_currency=d.cost_currency,
    )
    return row


# --------------------------------------------------------------------------- rows -> frame

_PY_TYPES: dict[type[pl.DataType], tuple[type, ...]] = {
    pl.Int64: (int,),
    pl.Int8: (int,),
    pl.Float64: (float, int),
    pl.String: (str,),
    pl.Boolean: (bool,),
    pl.Decimal: (Decimal,),  # exact only: a float would already have lost the cents
}
_INT_BOUNDS: dict[type[pl.DataType], tuple[int, int]] = {
    pl.Int64: (-(2**63), 2**63 - 1),
    pl.Int8: (-128, 127),
}


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    reason: str


@dataclass(slots=True)
class RowsToFrame:
    frame: pl.DataFrame
    rejected: list[Rejection] = field(default_factory=list)


def row_error(schema: TableSchema, row: object) -> str | None:
    """Why ``row`` cannot be stored in ``schema``'s table, or None if it can."""
    if not isinstance(row, Mapping):
        return f"row is {type(row).__name__}, not a mapping"
    extra = set(row) - set(schema.names)
    if extra:
        return f"unknown columns {sorted(extra)}"
    for col in schema.columns:
        value = row.get(col.name)
        if value is None:
            if not col.nullable:
                return f"column {col.name!r} is required"
            continue
        kind = type(col.dtype)
        allowed = _PY_TYPES[kind]
        # bool is an int subclass: a True in an int column is a bug, not a 1.
        if isinstance(value, bool) and kind is not pl.Boolean:
            return f"column {col.name!r}: expected {col.dtype}, got bool"
        if not isinstance(value, allowed):
            return f"column {col.name!r}: expected {col.dtype}, got {type(value).__name__}"
        if isinstance(value, Decimal):
            why = money_error(value)
            if why is not None:
                return f"column {col.name!r}: {why}"
        bounds = _INT_BOUNDS.get(kind)
        if bounds is not None and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
            return f"column {col.name!r}: {value} out of range for {col.dtype}"
    return None


def rows_to_frame(schema: TableSchema, rows: Sequence[object]) -> RowsToFrame:
    """Build the typed frame of the valid rows; each invalid one is rejected with its reason."""
    rejected: list[Rejection] = []
    good: list[Mapping[str, Any]] = []
    for i, row in enumerate(rows):
        err = row_error(schema, row)
        if err is None:
            assert isinstance(row, Mapping)
            good.append(row)
        else:
            rejected.append(Rejection(i, f"table {schema.name!r} row {i}: {err}"))
    columns = {c.name: [r.get(c.name) for r in good] for c in schema.columns}
    frame = pl.DataFrame(columns, schema=schema.polars_schema, strict=True)
    return RowsToFrame(frame, rejected)
