"""The report's drawdown is measured from the run's start (PnL 0), not from its first row."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from sapphire.research.run_report import RunData, equity_frame, firm_equity
from sapphire.storage.schemas import table_schema


def _run(equity: list[str]) -> RunData:
    schema = table_schema("pnl").polars_schema
    rows: dict[str, list[object]] = {name: [None] * len(equity) for name in schema}
    rows |= {
        "agent_id": ["mm"] * len(equity),
        "symbol": ["BTCUSDT"] * len(equity),
        "ts_ns": [i * 1_000_000_000 for i in range(len(equity))],
        "position_lots": [0] * len(equity),
        "equity_quote": [Decimal(e) for e in equity],
    }
    return RunData("r", {"pnl": pl.DataFrame(rows, schema=schema)})


def test_a_run_that_starts_with_a_loss_counts_it_as_drawdown() -> None:
    # the first stored row already carries the first fee: its peak was that row, so the
    # report gave -17.80 for a run that lost 18.85 and never stood above 0
    run = _run(["-1.05", "-0.50", "-18.85"])
    firm = firm_equity(run).filter(pl.col("agent_id") == "firm")
    assert firm["drawdown"].min() == Decimal("-18.85")
    assert equity_frame(run)["drawdown"].min() == -18.85
    # above 0, the peak is the best PnL reached
    up = _run(["2.00", "5.00", "1.00"])
    assert firm_equity(up).filter(pl.col("agent_id") == "firm")["drawdown"].min() == Decimal("-4")
