"""Turns what the coordinator stage does into storage rows, numbered per table for exactly-once.

Rows stay in ``unacked`` until the sink reports them committed (its watermark per table for
this producer), so a sink that dies with rows in its buffer gets them again. Money is rounded
to the scale of its symbol's quote asset as each row is built (the instruments say which).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from sapphire.model.events import AnyMarketEvent, Quote, Trade
from sapphire.model.instrument import Instrument
from sapphire.model.orders import (
    OrderFilled,
    OrderIntent,
    OrderUpdate,
    Position,
    Signal,
    SubmitOrder,
)
from sapphire.storage import rows as R
from sapphire.storage.records import PnlSnapshot, RiskDecisionLike
from sapphire.storage.schemas import table_schema

Row = dict[str, Any]


class StepRows:
    def __init__(
        self,
        run_id: str,
        producer_id: str,
        store_ticks: bool = True,
        *,
        instruments: Mapping[str, Instrument],
    ) -> None:
        self.run_id = run_id
        self.producer_id = producer_id
        self.store_ticks = store_ticks
        # symbol -> quote asset, which fixes the scale its money is stored at; required, so
        # a runner cannot forget it and store an ETH-quoted book at another asset's scale
        # (money is in the settlement asset: the coin of an inverse contract)
        self._quotes = {symbol: inst.settle_asset for symbol, inst in instruments.items()}
        self._seq: dict[str, int] = {}
        self._new: dict[str, list[Row]] = {}
        self._new_frames: dict[str, list[pl.DataFrame]] = {}
        self._new_ticks: list[AnyMarketEvent] = []
        self._unacked: dict[str, list[pl.DataFrame]] = {}
        self._committed: dict[str, int] = {}

    def _next(self, table: str) -> int:
        seq = self._seq.get(table, -1) + 1
        self._seq[table] = seq
        return seq

    def _add(self, table: str, make: Any) -> None:
        row = make(run_id=self.run_id, producer_id=self.producer_id, seq=self._next(table))
        self._new.setdefault(table, []).append(row)

    # One method per kind of row, called by the coordinator stage in its timeline order, so
    # the rows and their seqs are the same whatever the window size.
    def add_output(self, out: Any) -> None:
        if isinstance(out, Signal):
            self._add("signals", lambda s=out, **k: R.signal_row(s, **k))
        elif isinstance(out, OrderIntent):
            self._add("intents", lambda i=out, **k: R.intent_row(i, **k))

    def add_decision(self, decision: RiskDecisionLike) -> None:
        self._add("risk_decisions", lambda dec=decision, **k: R.risk_row(dec, **k))

    def add_submit(self, command: SubmitOrder) -> None:
        self._add("orders", lambda c=command, **k: R.submit_row(c, **k))

    def add_report(self, report: OrderUpdate | OrderFilled) -> None:
        if isinstance(report, OrderFilled):
            quote = self._quote(report.symbol)
            self._add("fills", lambda f=report, **k: R.fill_row(f, quote=quote, **k))
        else:
            self._add("orders", lambda u=report, **k: R.update_row(u, **k))

    def add_position(self, position: Position) -> None:
        quote = self._quote(position.symbol)
        self._add("positions", lambda p=position, **k: R.position_row(p, quote=quote, **k))

    def add_pnl(self, snapshot: PnlSnapshot) -> None:
        quote = self._quote(snapshot.symbol)
        self._add("pnl", lambda p=snapshot, **k: R.pnl_row(p, quote=quote, **k))

    def _quote(self, symbol: str) -> str:
        # "" (no instrument, or one that names no quote asset) rounds at the default scale
        return self._quotes.get(symbol, "")

    def add_ticks(self, events: Sequence[AnyMarketEvent]) -> None:
        if self.store_ticks:
            self._add_ticks(events)

    def add_llm(self, records: Sequence[Any]) -> None:
        for record in records:
            self._add("llm_decisions", lambda r=record, **k: R.llm_row(r, **k))

    def _add_ticks(self, events: Sequence[AnyMarketEvent]) -> None:
        """Ticks are the bulk of the rows: kept as events, numbered now, and built into one
        column-wise frame when taken (never one dict per row, nor one frame per step)."""
        ticks = [e for e in events if type(e) is Trade or type(e) is Quote]
        if ticks:
            self._seq["ticks"] = self._seq.get("ticks", -1) + len(ticks)
            self._new_ticks.extend(ticks)

    def _ticks_frame(self, ticks: Sequence[AnyMarketEvent]) -> pl.DataFrame:
        first = self._seq["ticks"] - len(ticks) + 1
        columns: dict[str, list[Any]] = {
            "ts_ns": [e.ts_event_ns for e in ticks],
            "symbol": [e.symbol for e in ticks],
            "agent_id": [""] * len(ticks),
            "run_id": [self.run_id] * len(ticks),
            "producer_id": [self.producer_id] * len(ticks),
            "seq": list(range(first, first + len(ticks))),
            "kind": ["trade" if type(e) is Trade else "quote" for e in ticks],
            "ts_recv_ns": [e.ts_recv_ns for e in ticks],
        }
        # attributes read directly, a column at a time (getattr by name was a tenth of the
        # storage time of a replay)
        columns["price_ticks"] = [e.price_ticks if type(e) is Trade else None for e in ticks]
        columns["qty_lots"] = [e.qty_lots if type(e) is Trade else None for e in ticks]
        columns["trade_id"] = [e.trade_id if type(e) is Trade else None for e in ticks]
        columns["side"] = [int(e.taker_side) if type(e) is Trade else None for e in ticks]
        columns["bid_ticks"] = [e.bid_ticks if type(e) is Quote else None for e in ticks]
        columns["bid_lots"] = [e.bid_lots if type(e) is Quote else None for e in ticks]
        columns["ask_ticks"] = [e.ask_ticks if type(e) is Quote else None for e in ticks]
        columns["ask_lots"] = [e.ask_lots if type(e) is Quote else None for e in ticks]
        schema = table_schema("ticks")
        return pl.DataFrame(columns, schema=schema.polars_schema, strict=False).select(schema.names)

    def pending(self) -> int:
        """Rows produced and not yet taken."""
        return len(self._new_ticks) + sum(len(r) for r in self._new.values())

    def take_new(self) -> dict[str, pl.DataFrame]:
        """New rows as one typed frame per table; they stay unacknowledged until committed."""
        new_rows, self._new = self._new, {}
        new_frames, self._new_frames = self._new_frames, {}
        if self._new_ticks:
            new_frames.setdefault("ticks", []).append(self._ticks_frame(self._new_ticks))
            self._new_ticks = []
        out: dict[str, pl.DataFrame] = {}
        for table in sorted({*new_rows, *new_frames}):
            parts = list(new_frames.get(table, []))
            if table in new_rows:
                converted = R.rows_to_frame(table_schema(table), new_rows[table])
                if converted.rejected:  # our own rows: a bug, never silently dropped
                    raise ValueError(f"invalid {table} rows: {converted.rejected[:3]}")
                parts.append(converted.frame)
            out[table] = pl.concat(parts) if len(parts) > 1 else parts[0]
            self._unacked.setdefault(table, []).append(out[table])
        return out

    def unacked(self) -> dict[str, pl.DataFrame]:
        return {t: pl.concat(parts) for t, parts in self._unacked.items() if parts}

    def unacked_count(self) -> int:
        return sum(f.height for parts in self._unacked.values() for f in parts)

    def acknowledge(self, committed: Mapping[str, int]) -> None:
        for table, mark in committed.items():
            self._committed[table] = max(mark, self._committed.get(table, -1))
            parts = self._unacked.get(table)
            if parts:
                kept = [f.filter(pl.col("seq") > mark) for f in parts]
                self._unacked[table] = [f for f in kept if f.height]

    def counts(self) -> dict[str, int]:
        """Rows produced per table (seq is dense from 0)."""
        return {t: s + 1 for t, s in sorted(self._seq.items())}

    def committed_counts(self) -> dict[str, int]:
        """Rows the store has durably committed per table (what a summary may call stored)."""
        return {t: self._committed.get(t, -1) + 1 for t in sorted(self._seq)}

    def snapshot(self) -> bytes:
        return pickle.dumps((self._seq, self._unacked, self._committed))

    def restore(self, data: bytes) -> None:
        self._seq, self._unacked, self._committed = pickle.loads(data)
        self._new = {}
        self._new_frames = {}
        self._new_ticks = []
