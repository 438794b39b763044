"""Quotes and trades with no depth, through the kernel (what ``sapphire backtest`` and
``sapphire run`` run): the venue trades against the quote (``book_from_quotes: auto``), the
same at every window, and the summary says why the orders that did not fill expired. On a
Tardis quotes + trades recording every market order expired no_liquidity (3,551 of them)
and the screen said only "orders expired 3551"."""

from __future__ import annotations

import json
from bisect import bisect_left
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from sapphire.cli.summary import print_summary
from sapphire.config.system import load_config, parse_config
from sapphire.kernel.runner import InProcessKernel
from sapphire.model.events import Quote, Side
from tests.kernel.conftest import LATENCY
from tests.kernel.test_depth_messages import replay
from tests.kernel.test_window_invariance import assert_same, outcome

# Binance USDT-M BTCUSDT as it was listed in 2020 (a 0.01 tick: the bundled sample's 0.1
# tick of 2024 puts the 2020 quotes off the grid)
INSTRUMENT_2020 = {
    "symbol": "BTCUSDT",
    "venue": "BINANCE_USDM",
    "kind": "perpetual",
    "base": "BTC",
    "quote": "USDT",
    "tick_size": "0.01",
    "lot_size": "0.001",
    "min_qty": "0.001",
    "min_notional": "5",
    "maker_fee_bps": "2",
    "taker_fee_bps": "5",
    "settle": "USDT",
}
SAMPLE_BBO = [
    "sample:hftbacktest_binance-usdm_BTCUSDT_bbo.csv.gz",
    "sample:hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz",
]
TAKERS: list[dict[str, Any]] = [
    {
        "id": "mr",
        "kind": "mean_reversion",
        "symbol": "BTCUSDT",
        "params": {"order_lots": 1, "allow_short": True},
    },
    {
        "id": "g",
        "kind": "grid_maker",
        "symbol": "BTCUSDT",
        "params": {"half_spread_ticks": 50, "order_lots": 1, "max_position_lots": 5},
    },
]


def _tardis_config(tmp_path: Path, mode: str) -> Path:
    """/tmp/qa/tardis.yaml as the tester ran it, under ``tmp_path``."""
    inst = tmp_path / "BTCUSDT.json"
    inst.write_text(json.dumps(INSTRUMENT_2020))
    raw = {
        "data": {
            "source": "files",
            "files": [
                "shared:book/nautilus_tardis_binance-futures_quotes_BTCUSDT_2020-02-22.csv.gz",
                "shared:trades/nautilus_tardis_binance-futures_trades_BTCUSDT_2020-02-22.csv.gz",
            ],
            "instrument_files": [str(inst)],
            "max_events": 8_000,
        },
        "agents": TAKERS,
        "exchange": {
            "kind": "paper",
            "params": {
                "balances": {"USDT": "100000"},
                "latency": LATENCY,
                "book_from_quotes": mode,
            },
        },
        "storage": {"backend": "parquet", "root": str(tmp_path / "runs")},
    }
    path = tmp_path / f"tardis-{mode}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _screen(kernel: InProcessKernel) -> str:
    console = Console(width=200, record=True)
    print_summary("r", kernel.summary(), 1, 1.0, "store", console=console)
    return console.export_text()


def test_a_tardis_quotes_and_trades_run_fills_its_market_orders(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data))
    kernels = {}
    for mode in ("auto", "off"):
        kernel = InProcessKernel(load_config(_tardis_config(tmp_path, mode)), f"tardis-{mode}")
        kernel.run()
        kernels[mode] = kernel
    on, off = kernels["auto"], kernels["off"]
    venue: Any = on.venue.gateway
    takers = [f for f in venue.fills if not f.is_maker]
    assert len(takers) > 20  # the mean-reversion agent's market orders fill now
    # each at the quote in force when it reached the venue (the last before it: an action
    # runs before a market event of its own time), within the quoted size
    quotes = [e for e in replay(on.config) if type(e) is Quote]
    times = [q.ts_event_ns for q in quotes]
    for fill in takers:
        quote = quotes[bisect_left(times, fill.ts_event_ns) - 1]
        if fill.side is Side.BUY:
            assert (fill.price_ticks, fill.qty_lots <= quote.ask_lots) == (quote.ask_ticks, True)
        else:
            assert (fill.price_ticks, fill.qty_lots <= quote.bid_lots) == (quote.bid_ticks, True)
    gone = off.venue.gateway.book_health()  # type: ignore[attr-defined]
    assert gone["expired: no_liquidity"] > 500  # as the tester saw it (3,551 in the day)
    assert not any(not f.is_maker for f in off.venue.gateway.fills)  # type: ignore[attr-defined]
    assert venue.book_health().get("expired: no_liquidity", 0) < gone["expired: no_liquidity"] / 10
    # the screen says why orders expired where the venue's book had nothing to take
    line = next(x for x in _screen(off).splitlines() if "venue expired: no_liquidity" in x)
    assert line.rstrip(" │").endswith(f" {gone['expired: no_liquidity']}")
    assert "market or IOC order with no opposite book" in line


def _sample_bbo_config(window_ns: int, batch_events: int = 20_000) -> Any:
    return parse_config(
        {
            "data": {
                "source": "files",
                "files": SAMPLE_BBO,
                "instrument_files": ["sample:instrument.json"],
                "window_ns": window_ns,
                "batch_events": batch_events,
            },
            "agents": [
                {
                    "id": "mm",
                    "kind": "avellaneda_stoikov",
                    "symbol": "BTCUSDT",
                    "params": {"order_amount": 0.002, "max_inventory": 0.02},
                },
                {
                    "id": "mom",
                    "kind": "momentum",
                    "symbol": "BTCUSDT",
                    "params": {"order_lots": 2, "allow_short": True, "threshold_bps": 0.3},
                },
            ],
            "exchange": {
                "kind": "paper",
                "params": {"balances": {"USDT": "100000"}, "latency": LATENCY},
            },
            "storage": {"root": "runs"},
        }
    )


@pytest.fixture(scope="module")
def bbo_at_lookahead() -> dict[str, Any]:
    kernel = InProcessKernel(_sample_bbo_config(0), "bbo")
    kernel.run()
    result = outcome(kernel)
    fills = result["venue_fills"]
    # both ways of filling are exercised: takers at the quote, makers resting on it
    assert any(f.is_maker for f in fills) and any(not f.is_maker for f in fills)
    return result


@pytest.mark.parametrize(
    ("window_ns", "batch_events"), [(LATENCY["entry_ns"] // 4, 20_000), (LATENCY["entry_ns"], 7)]
)
def test_a_quote_driven_run_is_the_same_at_every_window(
    bbo_at_lookahead: dict[str, Any], window_ns: int, batch_events: int
) -> None:
    kernel = InProcessKernel(_sample_bbo_config(window_ns, batch_events), "bbo")
    kernel.run()
    assert_same(bbo_at_lookahead, outcome(kernel))
