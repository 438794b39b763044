"""Turns one coordinator step into storage rows, numbered per table for exactly-once.

Rows stay in ``unacked`` until the sink reports them committed (its watermark per table for
this producer), so a sink that dies with rows in its buffer gets them again.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from sapphire.coordination.core import CoordinatorCore, StepResult
from sapphire.model.events import AnyMarketEvent, Quote, Trade
from sapphire.model.orders import OrderFilled, OrderIntent, OrderUpdate, Signal, SubmitOrder
from sapphire.storage import rows as R
from sapphire.storage.records import PnlSnapshot
from sapphire.storage.schemas import table_schema

Row = dict[str, Any]


class StepRows:
    def __init__(self, run_id: str, producer_id: str, store_ticks: bool = True) -> None:
        self.run_id = run_id
        self.producer_id = producer_id
        self.store_ticks = store_ticks
        self._seq: dict[str, int] = {}
        self._new: dict[str, list[Row]] = {}
        self._new_frames: dict[str, list[pl.DataFrame]] = {}
        self._unacked: dict[str, list[pl.DataFrame]] = {}
        self._committed: dict[str, int] = {}

    def _next(self, table: str) -> int:
        seq = self._seq.get(table, -1) + 1
        self._seq[table] = seq
        return seq

    def _add(self, table: str, make: Any) -> None:
        row = make(run_id=self.run_id, producer_id=self.producer_id, seq=self._next(table))
        self._new.setdefault(table, []).append(row)

    def add_step(
        self,
        events: Sequence[AnyMarketEvent],
        reports: Sequence[OrderUpdate | OrderFilled],
        outputs: Mapping[str, Sequence[Any]],
        result: StepResult,
        core: CoordinatorCore,
        now_ns: int,
    ) -> None:
        if self.store_ticks:
            self._add_ticks(events)
        for agent_id in sorted(outputs):
            for out in outputs[agent_id]:
                if isinstance(out, Signal):
                    self._add("signals", lambda s=out, **k: R.signal_row(s, **k))
                elif isinstance(out, OrderIntent):
                    self._add("intents", lambda i=out, **k: R.intent_row(i, **k))
        for d in result.decisions:
            self._add("risk_decisions", lambda dec=d, **k: R.risk_row(dec, **k))
        for cmd in result.commands:
            if isinstance(cmd, SubmitOrder):
                self._add("orders", lambda c=cmd, **k: R.submit_row(c, **k))
        for report in reports:
            if isinstance(report, OrderFilled):
                self._add("fills", lambda f=report, **k: R.fill_row(f, **k))
            else:
                self._add("orders", lambda u=report, **k: R.update_row(u, **k))
        for position in result.positions:
            self._add("positions", lambda p=position, **k: R.position_row(p, **k))
        for (agent_id, symbol), state in sorted(core.portfolio.positions.items()):
            mark = core.risk.marks.get(symbol)
            unreal = core.portfolio.unrealized_quote(agent_id, symbol, mark)
            snap = PnlSnapshot(
                ts_event_ns=now_ns,
                agent_id=agent_id,
                symbol=symbol,
                position_lots=state.qty_lots,
                realized_pnl_quote=state.realized_pnl_quote,
                unrealized_pnl_quote=unreal,
                fees_quote=state.fees_quote,
                equity_quote=state.realized_pnl_quote - state.fees_quote + unreal,
            )
            self._add("pnl", lambda p=snap, **k: R.pnl_row(p, **k))

    def add_llm(self, records: Sequence[Any]) -> None:
        for record in records:
            self._add("llm_decisions", lambda r=record, **k: R.llm_row(r, **k))

    def _add_ticks(self, events: Sequence[AnyMarketEvent]) -> None:
        """Ticks are the bulk of the rows: built column-wise, never as one dict per row."""
        ticks = [e for e in events if isinstance(e, Trade | Quote)]
        if not ticks:
            return
        first = self._seq.get("ticks", -1) + 1
        self._seq["ticks"] = first + len(ticks) - 1
        trades = [isinstance(e, Trade) for e in ticks]
        columns: dict[str, list[Any]] = {
            "ts_ns": [e.ts_event_ns for e in ticks],
            "symbol": [e.symbol for e in ticks],
            "agent_id": [""] * len(ticks),
            "run_id": [self.run_id] * len(ticks),
            "producer_id": [self.producer_id] * len(ticks),
            "seq": list(range(first, first + len(ticks))),
            "kind": ["trade" if t else "quote" for t in trades],
            "ts_recv_ns": [e.ts_recv_ns for e in ticks],
        }
        pairs = list(zip(ticks, trades, strict=True))
        for name in ("price_ticks", "qty_lots", "trade_id"):
            columns[name] = [getattr(e, name) if t else None for e, t in pairs]
        columns["side"] = [int(e.taker_side) if t else None for e, t in pairs]
        for name in ("bid_ticks", "bid_lots", "ask_ticks", "ask_lots"):
            columns[name] = [None if t else getattr(e, name) for e, t in pairs]
        schema = table_schema("ticks")
        frame = pl.DataFrame(columns, schema=schema.polars_schema, strict=False).select(
            schema.names
        )
        self._new_frames.setdefault("ticks", []).append(frame)

    def take_new(self) -> dict[str, pl.DataFrame]:
        """New rows as one typed frame per table; they stay unacknowledged until committed."""
        new_rows, self._new = self._new, {}
        new_frames, self._new_frames = self._new_frames, {}
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

    def snapshot(self) -> bytes:
        return pickle.dumps((self._seq, self._unacked, self._committed))

    def restore(self, data: bytes) -> None:
        self._seq, self._unacked, self._committed = pickle.loads(data)
        self._new = {}
        self._new_frames = {}
