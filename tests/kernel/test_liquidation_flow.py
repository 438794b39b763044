"""A liquidation through the whole kernel: the venue closes a leveraged long when the mark
reaches its maintenance margin, and the close reaches the agent, the firm's books and the
rows stored as a fill of its own (``OrderFilled.liquidation``), though no agent sent its order."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from sapphire.kernel.runner import InProcessKernel
from tests.kernel.conftest import LATENCY, kernel_config

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
FILES = [
    str(SHARED / "book" / "hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz"),
    str(SHARED / "trades" / "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz"),
    str(SHARED / "book" / "hftbacktest_binance-usdm_BTCUSDT_bbo.csv.gz"),
]
SAMPLE_INSTRUMENT = "sample:instrument.json"


def run(tmp_path: Path, balance: str) -> InProcessKernel:
    # 20 lots (0.02 BTC) bought at the first bid, 61,800.2, at 100x: an initial margin of
    # ~12.4 USDT, a maintenance of 0.99 % (~12.2): with 13 USDT the long is liquidated once
    # the mark falls ~38 USDT (the session falls to 61,590); with 100 USDT it never is
    config = kernel_config(
        tmp_path,
        data={
            "source": "files",
            "files": FILES,
            "instrument_files": [SAMPLE_INSTRUMENT],
            "sessions": ["2024-08-08"],
            "start_ns": 1_723_161_257_000_000_000,
            "max_events": None,
        },
        agents=[
            {
                "id": "probe",
                "kind": "tests.kernel.probes:ProbeAgent",
                "symbol": "BTCUSDT",
                "params": {"qty_lots": 20},
            }
        ],
        exchange={
            "params": {
                "balances": {"USDT": balance},
                "latency": LATENCY,
                "leverage": 100,
                "liquidation": {"maint_margin_rate": "0.0099"},
            }
        },
    )
    kernel = InProcessKernel(config, "liq")
    kernel.run()
    return kernel


def test_the_venue_s_close_reaches_the_agent_the_firm_and_the_store(tmp_path: Path) -> None:
    kernel = run(tmp_path, "13")
    summary = kernel.summary()
    assert summary["venue_books"]["liquidations"] == 1
    venue: Any = kernel.venue.gateway
    closes = [f for f in venue.fills if f.liquidation]
    assert [(f.agent_id, f.side, f.qty_lots) for f in closes] == [("probe", -1, 20)]
    assert closes[0].client_order_id.startswith("autoclose-BTCUSDT-")
    # the agent was told (one lookahead later), and its position and the firm's are flat
    agent: Any = kernel.agents.agents["probe"]
    assert sum(1 for kind, *_ in agent.log if kind.startswith("OrderFilled")) >= 2
    assert kernel.coordinator.core.portfolio.position_lots("probe", "BTCUSDT") == 0
    # the venue's balance is what the firm's PnL says it lost, never below zero
    assert Decimal(venue.account.balance("USDT")) >= 0
    # the rows the run hands its store (``run_stored``): the close has its own
    fills = kernel.coordinator.rows.take_new()["fills"]
    stored = fills.filter(pl.col("liquidation"))
    assert stored.height == 1 and stored["client_order_id"][0] == closes[0].client_order_id
    assert fills.filter(~pl.col("liquidation")).height == len(venue.fills) - 1


def test_the_same_long_with_margin_to_spare_is_never_liquidated(tmp_path: Path) -> None:
    kernel = run(tmp_path, "100")
    assert kernel.summary()["venue_books"]["liquidations"] == 0
    venue: Any = kernel.venue.gateway
    assert venue.fills and not any(f.liquidation for f in venue.fills)
