"""The console's report of a stored run (``/runs/RUN_ID``) reads the firm's currency and the
instruments the run recorded beside its store, as ``sapphire report`` does: a run whose
config named its currency (``currency: BTC`` beside a USDC perpetual, whose rule would be
USDC) was reported in the rule's currency, with its prices in ticks. Expected figures are
worked out here from the rows the test stores."""

from __future__ import annotations

import re
import urllib.request
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest

from actors.console import ConsoleServer
from sapphire.cli.query_cmd import write_instruments
from sapphire.config.system import ConsoleConfig
from sapphire.storage.parquet_backend import ParquetBackend
from sapphire.storage.sink import CommitState
from tests.research.test_run_report_assets import INVERSE, NS_HOUR, START, _pnl, _run, _stats
from tests.research.test_run_report_currency import PRICE_TICKS, USDC_PERP

TOKEN = "console-report-token"


def _store(tmp_path: Path, currency: str | None) -> tuple[Path, Decimal]:
    """A run whose PnL is in USDC (the ETH perpetual) with a BTCUSD trade to convert it at,
    stored as ``sapphire run`` stores it; ``currency`` None: no record beside the store."""
    ts = [START + i * NS_HOUR for i in range(5)]
    equity = [Decimal(v) for v in ("0", "12.5", "-3.25", "40", "61")]
    run = _run(
        pnl=[_pnl("mm", "ETH", t, e) for t, e in zip(ts, equity, strict=True)],
        ticks=[{"ts_ns": ts[-1], "symbol": "BTCUSD", "kind": "trade", "price_ticks": PRICE_TICKS}],
    )
    store = tmp_path / "runs" / "store"
    frames = {t: f for t, f in run.tables.items() if f.height}
    ParquetBackend(store, sink_id="r").commit(1, frames, CommitState(1, {}))
    if currency is not None:
        instruments = {INVERSE.symbol: INVERSE, USDC_PERP.symbol: USDC_PERP}
        write_instruments(tmp_path / "runs" / run.run_id, instruments, currency)
    return store, equity[-1]


def _console_page(tmp_path: Path, store: Path) -> str:
    server = ConsoleServer(
        None,
        ConsoleConfig(port=0),
        token=TOKEN,
        store_root=store,
        reports_dir=tmp_path / "runs" / "reports",
    )
    server.start()  # the console as a run serves it: uvicorn on a loopback port
    try:
        url = f"http://127.0.0.1:{server.port}/runs/r?token={TOKEN}"
        with urllib.request.urlopen(url, timeout=60) as response:
            assert response.status == 200
            return str(response.read().decode("utf-8"))
    finally:
        server.stop()


def test_the_console_reports_in_the_currency_the_run_recorded(tmp_path: Path) -> None:
    store, pnl = _store(tmp_path, "BTC")
    page = _console_page(tmp_path, store)
    stats = _stats(page)
    assert stats["firm PnL"][0] == f"{pnl:.8f} USDC"
    # BTCUSD's last trade: 61,000 USD a BTC, so the USDC PnL is pnl / 61000 BTC
    rate = 1 / (Decimal(PRICE_TICKS) * INVERSE.tick)
    btc = (pnl * rate).quantize(Decimal("1e-8"), rounding=ROUND_HALF_EVEN)
    assert btc == Decimal("0.001")  # 61 USDC at 61,000: a figure the rate cannot blur
    assert stats["firm PnL (BTC)"][0] == f"{btc} BTC"
    assert re.search(r"USDC at [\d.e-]+ BTC", stats["firm PnL (BTC)"][1])
    assert "prices in ticks" not in page  # the recorded instruments reached it too


@pytest.mark.parametrize("currency", ["", None])
def test_without_a_named_currency_the_console_keeps_the_rule(
    tmp_path: Path, currency: str | None
) -> None:
    """A record with no currency (the rule's: USDC, the PnL's own), or none at all (a run
    recorded before instruments were: prices in ticks): nothing is converted."""
    store, pnl = _store(tmp_path, currency)
    page = _console_page(tmp_path, store)
    stats = _stats(page)
    unit = "quote" if currency is None else "USDC"  # no record: no instrument names it
    assert stats["firm PnL"][0] == f"{pnl:.8f} {unit}"
    assert not any(label.startswith("firm PnL (") for label in stats)
    assert ("prices in ticks" in page) is (currency is None)
