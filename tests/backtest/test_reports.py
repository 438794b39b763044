"""Every agent kind backtests on a small real slice and writes its report files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.backtest.config import BacktestConfigError, parse_config
from sapphire.backtest.runner import run_config
from sapphire.cli import main
from sapphire.research.run_report import write_run_report
from sapphire.storage.query import read_table
from tests.conftest import REPO_ROOT

INSTR = {
    "symbol": "BTCUSDT",
    "base": "BTC",
    "quote": "USDT",
    "tick_size": "0.01",
    "lot_size": "0.00001",
    "maker_fee_bps": "0",
    "taker_fee_bps": "1",
}
TICK_AGENTS: dict[str, dict[str, Any]] = {
    "momentum": {
        "fast_span": 20,
        "slow_span": 200,
        "threshold_bps": 0.05,
        "order_lots": 100,
        "allow_short": True,
    },
    "mean_reversion": {"window": 200, "entry_z": 2.0, "order_lots": 100, "allow_short": True},
    "avellaneda_stoikov": {"order_amount": 0.001, "max_inventory": 0.01, "risk_factor": 0.05},
}


def _check(out_png: str, out_html: str) -> None:
    png, page = Path(out_png), Path(out_html)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    # interactive and self-contained: plotly.js inlined, nothing fetched
    assert "<script src=" not in text and text.count("Plotly.newPlot(") >= 2
    assert "Sharpe" in text and "<h2>trades (" in text
    assert msgspec.json.decode(png.with_suffix(".json").read_bytes())["events"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(TICK_AGENTS))
def test_tick_agent_backtest_on_real_session_writes_reports(kind: str, tmp_path: Path) -> None:
    """A tick agent's system config through ``sapphire backtest`` (the kernel, in process),
    then ``sapphire report`` on the stored run."""
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "backtest_momentum.yaml").read_bytes())
    raw["agents"] = [{"id": "a", "kind": kind, "symbol": "BTCUSDT", "params": TICK_AGENTS[kind]}]
    raw["data"]["end_ns"] = raw["data"]["start_ns"] + 90_000_000_000
    raw["data"]["instrument_files"] = [str(REPO_ROOT / p) for p in raw["data"]["instrument_files"]]
    raw["storage"] = {"root": str(tmp_path / "runs")}
    config = tmp_path / "system.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    assert main(["backtest", "--config", str(config), "--run-id", kind, "--no-progress"]) == 0
    store = tmp_path / "runs" / "store"
    report = write_run_report(store, kind, tmp_path / "report")
    assert "Plotly.newPlot(" in report.html.read_text()
    orders = read_table(store, "orders", kind).collect()
    fills = read_table(store, "fills", kind).collect()
    assert orders.height > 0
    assert fills.height > 0
    if kind == "avellaneda_stoikov":
        assert fills["is_maker"].all()  # post-only quotes only make


def test_tick_data_in_a_bar_backtest_config_points_to_the_system_config() -> None:
    with pytest.raises(BacktestConfigError, match="system config"):
        parse_config(
            {
                "name": "x",
                "agent": {"kind": "momentum"},
                "instrument": INSTR,
                "ticks": {"depth": "d", "bbo": "b", "trades": "t", "session": "s"},
            }
        )


@pytest.mark.parametrize(
    ("kind", "engine"),
    [("indicator:EmaCross", "vectorized"), ("indicator:RsiBollinger", "event")],
)
def test_bar_strategy_backtest_on_real_bars_writes_reports(
    kind: str, engine: str, shared_data: Path, tmp_path: Path
) -> None:
    cfg = parse_config(
        {
            "name": "bars",
            "agent": {"kind": kind, "params": {}},
            "instrument": {"symbol": "BTCUSD"},
            "engine": engine,
            "ohlcv": ["ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv"],
            "stake": {"stake_fraction": 0.5, "initial_cash": "10000"},
            "max_bars": 900,
            "output_dir": str(tmp_path),
        }
    )
    [out] = run_config(cfg, lambda p: Path(p) if p == str(tmp_path) else shared_data / p)
    _check(out.png, out.html)
    assert out.summary.events == 900
    # 900 one-minute bars are 15 hours: no annualised ratio, and the page says why
    assert out.summary.sharpe is None and out.summary.ratio_note.startswith("n/a")
    page = Path(out.html).read_text()
    assert "Candlestick" in page or "candlestick" in page
    assert "signal: enter long" in page  # the strategy's entries over the candles


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"engine": "vectorized", "agent": {"kind": "momentum"}}, "vectorized"),
        ({"ohlcv": []}, "exactly one data source"),
        ({"costs": {"fee_bps": -1}}, "fee_bps"),
        ({"stake": {"stake_lots": 0}}, "stake_lots"),
        ({"enigne": "event"}, "unknown field"),
    ],
)
def test_bad_configs_are_rejected_with_the_field_named(patch: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "name": "x",
        "agent": {"kind": "indicator:EmaCross"},
        "instrument": {"symbol": "X"},
        "ohlcv": ["a.csv"],
    }
    with pytest.raises(BacktestConfigError, match=message):
        parse_config({**base, **patch})


def test_loader_with_garbage_values_raises_data_error(tmp_path: Path) -> None:
    from sapphire.backtest import _loaders

    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp_ms,open,high,low,close,volume\n0,1,2,x,1,1\n60000,1,2,1,1,1\n")
    raw = _loaders.read_ohlcv(bad)
    with pytest.raises(_loaders.DataError, match="non-numeric"):
        _loaders.tick_frame(raw, _loaders.instrument_for(raw, "X"))
    stamps = tmp_path / "stamps.csv"
    stamps.write_text("datetime,open,high,low,close,volume\nyesterday,1,1,1,1,1\nnow,1,1,1,1,1\n")
    with pytest.raises(_loaders.DataError, match="timestamps"):
        _loaders.read_ohlcv(stamps)
