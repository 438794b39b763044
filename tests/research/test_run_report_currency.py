"""The run report reads ``capital_quote`` in the firm's currency the run recorded
(``currency``), not in the one the rule would choose from the instruments now: a BTC PnL
beside a USDC perpetual is a USDC firm by the rule (its return the BTC PnL at the BTC price
over the capital), a BTC firm where the run named BTC (the BTC PnL over the capital as it
is). Expected figures are worked out here from the rows the test stores."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from sapphire.model.instrument import Instrument
from sapphire.research.run_report import RunData, write_run_report
from tests.research.test_run_report_assets import (
    INVERSE,
    NS_HOUR,
    START,
    _pct,
    _pnl,
    _run,
    _sharpe,
    _stats,
    _walk,
)

USDC_PERP = Instrument(
    symbol="ETH", kind="perpetual", base="ETH", quote="USDC", tick_size="0.1", lot_size="0.0001"
)
PRICE_TICKS = 122_000  # BTCUSD's last trade: 61,000 USD


def _btc_run() -> tuple[RunData, list[int], list[Decimal]]:
    ts = [START + i * NS_HOUR for i in range(49)]
    equity = _walk(49, 7, "0.00000100")
    run = _run(
        pnl=[_pnl("mm", "BTCUSD", t, e) for t, e in zip(ts, equity, strict=True)],
        ticks=[{"ts_ns": ts[-1], "symbol": "BTCUSD", "kind": "trade", "price_ticks": PRICE_TICKS}],
    )
    return run, ts, equity


def _stats_of(run: RunData, tmp_path: Path, currency: str) -> dict[str, tuple[str, str]]:
    report = write_run_report(
        lambda table, _run_id: run.tables[table].lazy(),
        run.run_id,
        tmp_path / (currency or "rule"),
        {INVERSE.symbol: INVERSE, USDC_PERP.symbol: USDC_PERP},
        1.0,
        currency=currency,
    )
    return _stats(report.html.read_text(encoding="utf-8"))


@pytest.mark.parametrize("currency", ["", "USDC", "BTC"])
def test_the_capital_is_read_in_the_recorded_currency(tmp_path: Path, currency: str) -> None:
    run, ts, equity = _btc_run()
    stats = _stats_of(run, tmp_path, currency)
    pnl = equity[-1]
    assert stats["firm PnL"][0] == f"{pnl:.8f} BTC"
    if currency == "BTC":
        # no conversion: the BTC PnL over 1 BTC of capital
        assert not any(label.startswith("firm PnL (") for label in stats)
        rate = Decimal(1)
    else:  # "" is the rule's USDC: the BTC PnL at the last BTC price
        rate = Decimal(PRICE_TICKS) * INVERSE.tick
        assert "firm PnL (USDC)" in stats and "61000" in stats["firm PnL (USDC)"][1]
    assert _pct(stats["firm return"][0]) == pytest.approx(float(pnl * rate) * 100, rel=5e-3)
    expected = _sharpe([1.0 + float(rate) * float(e) for e in equity], ts)
    assert float(stats["Sharpe (firm)"][0]) == pytest.approx(expected, abs=0.006)
