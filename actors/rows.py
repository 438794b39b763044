"""Turns one coordinator step into storage rows, numbered per table for exactly-once.

Rows stay in ``unacked`` until the sink reports them committed (its watermark per table for
this producer), so a sink that dies with rows in its buffer gets them again.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sapphire.coordination.core import CoordinatorCore, StepResult
from sapphire.model.events import AnyMarketEvent, Quote, Trade
from sapphire.model.orders import OrderFilled, OrderIntent, OrderUpdate, Signal, SubmitOrder
from sapphire.storage import rows as R
from sapphire.storage.records import PnlSnapshot
from sapphire.storage.records import RiskDecision as StoredRiskDecision

Row = dict[str, Any]


class StepRows:
    def __init__(self, run_id: str, producer_id: str, store_ticks: bool = True) -> None:
        self.run_id = run_id
        self.producer_id = producer_id
        self.store_ticks = store_ticks
        self._seq: dict[str, int] = {}
        self._new: dict[str, list[Row]] = {}
        self._unacked: dict[str, list[Row]] = {}
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
            for event in events:
                if isinstance(event, Trade):
                    self._add("ticks", lambda e=event, **k: R.trade_row(e, **k))
                elif isinstance(event, Quote):
                    self._add("ticks", lambda e=event, **k: R.quote_row(e, **k))
        for agent_id in sorted(outputs):
            for out in outputs[agent_id]:
                if isinstance(out, Signal):
                    self._add("signals", lambda s=out, **k: R.signal_row(s, **k))
                elif isinstance(out, OrderIntent):
                    self._add("intents", lambda i=out, **k: R.intent_row(i, **k))
        for d in result.decisions:
            stored = StoredRiskDecision(
                ts_event_ns=d.ts_event_ns,
                agent_id=d.agent_id,
                symbol=d.symbol,
                client_order_id=d.client_order_id,
                approved=d.accepted,
                requested_lots=d.requested_lots,
                approved_lots=d.requested_lots if d.accepted else 0,
                reason=d.reason,
                message=d.detail,
            )
            self._add("risk_decisions", lambda s=stored, **k: R.risk_row(s, **k))
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
            unreal = core.portfolio.unrealized_quote(agent_id, symbol, mark) if mark else Decimal(0)
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

    def take_new(self) -> dict[str, list[Row]]:
        new, self._new = self._new, {}
        for table, rows in new.items():
            self._unacked.setdefault(table, []).extend(rows)
        return new

    def unacked(self) -> dict[str, list[Row]]:
        return {t: list(rows) for t, rows in self._unacked.items() if rows}

    def unacked_count(self) -> int:
        return sum(len(rows) for rows in self._unacked.values())

    def acknowledge(self, committed: Mapping[str, int]) -> None:
        for table, mark in committed.items():
            self._committed[table] = max(mark, self._committed.get(table, -1))
            rows = self._unacked.get(table)
            if rows:
                self._unacked[table] = [r for r in rows if r["seq"] > mark]

    def counts(self) -> dict[str, int]:
        """Rows produced per table (seq is dense from 0)."""
        return {t: s + 1 for t, s in sorted(self._seq.items())}

    def snapshot(self) -> bytes:
        return pickle.dumps((self._seq, self._unacked, self._committed))

    def restore(self, data: bytes) -> None:
        self._seq, self._unacked, self._committed = pickle.loads(data)
        self._new = {}
