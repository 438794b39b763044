"""Acceptance (issue 16, item 5): ``configs/demo_cross_venue.yaml`` through ``sapphire
backtest``: one replay of two venues (Bybit's inverse BTCUSD and USDT-margined ETHUSDT, the
same 30 s), a basis agent quoting BTCUSD and hedging in ETHUSDT. Both legs trade; each leg's
money is in its own settlement asset (BTC, USDT), checked against a hand computation from the
stored fills without Instrument."""

from __future__ import annotations

import contextlib
import io
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import msgspec
import pytest
import yaml
from rich.console import Console

from sapphire.cli import main
from sapphire.cli.kernel_run import run_in_process
from sapphire.config.system import load_config
from sapphire.kernel.assembly import data_path
from sapphire.storage.query import read_table

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/demo_cross_venue.yaml"
INV, LIN = "BYBIT-INV:BTCUSD", "BYBIT-USDT:ETHUSDT"
BPS = {True: Fraction(-25, 10), False: Fraction(75, 10)}  # Bybit maker, taker (both legs)

pytestmark = pytest.mark.skipif(
    not data_path("shared:book/cryptofeed_bybit_inverse_ws_2021-04-17.log.gz").exists(),
    reason="shared recorded data not present",
)


def test_cross_venue_demo_trades_both_legs_with_money_per_settlement_asset(
    tmp_path: Path,
) -> None:
    raw = msgspec.to_builtins(load_config(CONFIG))
    raw["storage"]["root"] = str(tmp_path / "runs")
    for venue in raw["data"]["venues"]:
        venue["instrument_files"] = [str(ROOT / f) for f in venue["instrument_files"]]
    path = tmp_path / "cross.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = io.StringIO()
    rc = run_in_process(path, "cross", False, Console(file=out, width=250))
    text = out.getvalue()
    assert rc == 0, text

    fills = read_table(tmp_path / "runs" / "store", "fills", "cross").collect().sort("seq")
    by_symbol = {s: fills.filter(fills["symbol"] == s) for s in (INV, LIN)}
    assert all(f.height >= 1 for f in by_symbol.values()), fills
    assert set(fills["agent_id"]) == {"basis"}
    quote, hedge = by_symbol[INV].row(0, named=True), by_symbol[LIN].row(0, named=True)
    # the quote leg rests at the touch (a maker fill); the hedge takes (a market order)
    assert quote["is_maker"] and not hedge["is_maker"]
    assert quote["side"] == -hedge["side"]  # opposite USD exposure
    # hedge sizing: the same USD notional, to half an ETH lot (0.005 ETH)
    btc_usd = Fraction(quote["price_ticks"]) / 2  # tick 0.5 USD
    eth_usd = Fraction(hedge["price_ticks"]) / 20  # tick 0.05 USDT
    quote_usd = Fraction(quote["qty_lots"])  # 1-USD contracts
    hedge_usd = Fraction(hedge["qty_lots"], 100) * eth_usd  # 0.01 ETH lots
    assert abs(quote_usd - hedge_usd) <= eth_usd / 200
    # fees, each in its leg's settlement asset: BTC = contracts / price x bps; USDT = qty x price
    fee_btc = quote_usd / btc_usd * BPS[True] / 10_000
    fee_usdt = hedge_usd * BPS[False] / 10_000
    assert abs(Fraction(quote["fee_quote"]) - fee_btc) <= Fraction(1, 2 * 10**8)
    assert abs(Fraction(hedge["fee_quote"]) - fee_usdt) <= Fraction(1, 10**8)  # stored rounded
    assert Decimal(quote["fee_quote"]) < 0 < Decimal(hedge["fee_quote"])  # rebate vs fee

    # the summary: one row per leg, each in its own unit, and one firm total per unit
    rows = {
        line.split()[0]: line for line in text.splitlines() if line.strip().startswith("basis/")
    }
    assert f"basis/{INV}" in rows and f"basis/{LIN}" in rows, text
    assert " BTC" in rows[f"basis/{INV}"] and "USDT" not in rows[f"basis/{INV}"]
    assert " USDT" in rows[f"basis/{LIN}"] and " BTC" not in rows[f"basis/{LIN}"]
    totals = [line for line in text.splitlines() if "firm total" in line]
    assert len(totals) == 2 and {t.split()[-1] for t in totals} == {"BTC", "USDT"}
    # the PnL rows of each leg, booked in its unit: tiny in BTC, cents in USDT
    pnl = read_table(tmp_path / "runs" / "store", "pnl", "cross").collect()
    last = {r["symbol"]: r for r in pnl.sort("ts_ns").iter_rows(named=True)}
    for symbol, leg in by_symbol.items():
        assert last[symbol]["position_lots"] == sum(
            r["side"] * r["qty_lots"] for r in leg.iter_rows(named=True)
        )
    assert abs(Decimal(last[INV]["fees_quote"])) < Decimal("0.0001")  # BTC
    assert Decimal(last[LIN]["fees_quote"]) == Decimal(hedge["fee_quote"])  # USDT

    # `sapphire report` with only the --root the end screen names (no config): the run's
    # recorded instruments keep BTC and USDT apart (they were added into one "quote" figure)
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        argv = ["report", "cross", "--root", str(tmp_path / "runs" / "store")]
        assert main([*argv, "--out", str(tmp_path / "report")]) == 0
    lines = report.getvalue()
    assert "basis (BTC)" in lines and "basis (USDT)" in lines, lines
