"""The run report's money: drawdown from the run's start (PnL 0), and never two settlement
assets added together."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from sapphire.research.run_report import RunData, equity_frame, firm_equity, header, summary
from sapphire.storage.schemas import table_schema


def _pnl(equity: list[str], symbol: str = "BTCUSDT", position: int = 0) -> pl.DataFrame:
    schema = table_schema("pnl").polars_schema
    rows: dict[str, list[object]] = {name: [None] * len(equity) for name in schema}
    rows |= {
        "agent_id": ["mm"] * len(equity),
        "symbol": [symbol] * len(equity),
        "ts_ns": [i * 1_000_000_000 for i in range(len(equity))],
        "position_lots": [position] * len(equity),
        "equity_quote": [Decimal(e) for e in equity],
    }
    return pl.DataFrame(rows, schema=schema)


def _run(equity: list[str]) -> RunData:
    return RunData("r", {"pnl": _pnl(equity)})


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


def test_two_settlement_assets_are_never_added() -> None:
    # a basis trade: a USDT-margined leg and a coin-margined (BTC) one; the report printed
    # "firm PnL -0.44597769 BTC/USDT", the two added, and one leg's position as the agent's
    empty = {t: pl.DataFrame(schema=table_schema(t).polars_schema) for t in ("fills", "ticks")}
    risk = pl.DataFrame(schema=table_schema("risk_decisions").polars_schema)
    pnl = pl.concat(
        [
            _pnl(["-0.1", "-0.44597962"], "BTCUSDT", 21),
            _pnl(["0", "0.00000193"], "BTCUSD_PERP", -500),
        ]
    )
    run = RunData("r", {"pnl": pnl, "risk_decisions": risk, **empty})
    assets = {"BTCUSDT": "USDT", "BTCUSD_PERP": "BTC"}
    eq = firm_equity(run, assets)
    last = {
        k: eq.filter(pl.col("agent_id") == k)["equity"][-1] for k in ("firm (USDT)", "firm (BTC)")
    }
    assert last == {"firm (USDT)": Decimal("-0.44597962"), "firm (BTC)": Decimal("0.00000193")}
    assert "firm" not in set(eq["agent_id"].to_list())
    table = summary(run, "BTC/USDT", assets)
    rows = {r["agent_id"]: r for r in table.to_dicts()}
    assert rows["mm (USDT)"]["final_position_lots"] == 21
    assert rows["mm (BTC)"]["final_position_lots"] == -500
    # each row in its own asset, at that asset's scale (text: a Decimal column has one)
    assert rows["mm (BTC)"]["asset"] == "BTC" and rows["mm (USDT)"]["asset"] == "USDT"
    assert Decimal(rows["mm (BTC)"]["final_equity"]) == Decimal("0.00000193")
    stats = {s.label: s for s in header(run, table, "BTC/USDT", 100_000.0, assets)}
    assert stats["firm PnL (USDT)"].value.startswith("-0.44597962")
    assert stats["firm PnL (BTC)"].value.startswith("0.00000193")
    assert "firm return" not in stats  # no sum to divide by the capital
    assert "several settlement assets" in stats["Sharpe (firm)"].note
    # one asset (or no instruments): the firm as before
    assert set(firm_equity(run)["agent_id"].to_list()) == {"mm", "firm"}


def test_each_assets_row_counts_its_own_risk_checks_and_no_mid_is_no_spread() -> None:
    # a basis agent's two rows each showed all 6 of its checks (12 in the table); and with
    # no quotes stored, its maker fill's spread captured read 0.0 instead of n/a
    schema = table_schema("risk_decisions").polars_schema
    risk = pl.DataFrame(
        [
            {name: None for name in schema}
            | {"agent_id": "mm", "symbol": symbol, "accepted": True, "ts_ns": i}
            for i, symbol in enumerate(["BTCUSD_PERP"] * 5 + ["BTCUSDT"])
        ],
        schema=schema,
    )
    fills_schema = table_schema("fills").polars_schema
    fill = {name: None for name in fills_schema} | {
        "agent_id": "mm",
        "symbol": "BTCUSD_PERP",
        "ts_ns": 1,
        "is_maker": True,
        "side": 1,
        "price_ticks": 100,
        "qty_lots": 1,
    }
    fills = pl.DataFrame([fill], schema=fills_schema)
    ticks = pl.DataFrame(schema=table_schema("ticks").polars_schema)
    pnl = pl.concat([_pnl(["0", "-0.1"], "BTCUSDT", 1), _pnl(["0", "0.0001"], "BTCUSD_PERP", -5)])
    run = RunData("r", {"pnl": pnl, "risk_decisions": risk, "fills": fills, "ticks": ticks})
    table = summary(run, "BTC/USDT", {"BTCUSDT": "USDT", "BTCUSD_PERP": "BTC"})
    rows = {r["agent_id"]: r for r in table.to_dicts()}
    assert rows["mm (USDT)"]["risk_checked"] == 1 and rows["mm (BTC)"]["risk_checked"] == 5
    assert rows["mm (BTC)"]["maker_fills"] == 1
    assert rows["mm (BTC)"]["spread_captured_bps"] is None


def test_the_equity_plot_has_a_line_per_agent_and_asset_and_a_position_per_symbol() -> None:
    # the PNG's line zig-zagged between an agent's BTC PnL and its USDT PnL at every grid
    # point (one series of both), and its position between -500 and 21 lots
    from sapphire.research.run_report import position_frame

    pnl = pl.concat(
        [
            _pnl(["-0.1", "-0.44597962"], "BTCUSDT", 21),
            _pnl(["0", "0.00000193"], "BTCUSD_PERP", -500),
        ]
    )
    run = RunData("r", {"pnl": pnl})
    eq = equity_frame(run, {"BTCUSDT": "USDT", "BTCUSD_PERP": "BTC"})
    lines = {
        k: eq.filter(pl.col("agent_id") == k)["equity"].to_list() for k in ("mm (USDT)", "mm (BTC)")
    }
    assert lines == {"mm (USDT)": [-0.1, -0.44597962], "mm (BTC)": [0.0, 0.00000193]}
    assert set(eq["agent_id"].to_list()) == {"mm (USDT)", "mm (BTC)"}  # no firm line here
    positions = position_frame(run)
    assert set(positions["agent_id"].to_list()) == {"mm BTCUSDT", "mm BTCUSD_PERP"}
    # one symbol: the agent's own name
    assert set(position_frame(_run(["1", "2"]))["agent_id"].to_list()) == {"mm"}
