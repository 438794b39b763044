"""Every agent kind backtests on a small real slice and writes its report files."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from sapphire.backtest.config import BacktestConfigError, parse_config
from sapphire.backtest.html_page import fmt_money, money_text
from sapphire.backtest.runner import run_config
from sapphire.cli import main
from sapphire.research.run_report import write_run_report
from sapphire.storage.query import read_table
from tests.conftest import REPO_ROOT

_STAT = re.compile(r"<div class='l'>([^<]*)</div><div class='v'>([^<]*)</div>")


def _money_stats(page: str, labels: tuple[str, ...]) -> dict[str, str]:
    """The header's money figures, each checked to carry exactly the quote's 8 decimals."""
    shown = {label: value for label, value in _STAT.findall(page) if label in labels}
    assert set(shown) == set(labels), shown
    for label, value in shown.items():
        assert re.fullmatch(r"-?\d+\.\d{8} \w+", value), f"{label}: {value!r}"
    return shown


def test_money_is_shown_at_the_settlement_assets_stored_scale() -> None:
    """The one money rule of the screen and the stored tables: the asset's scale
    (quote_scale), half-even, no exponent, no float digits."""
    assert fmt_money(Decimal("-12.41288700000000000000000333"), "USDT") == "-12.41288700 USDT"
    assert fmt_money(Decimal("0E-28"), "BTC") == "0.00000000 BTC"
    assert fmt_money(Decimal("1.0000000005"), "ETH") == "1.000000000 ETH"  # a gwei
    assert fmt_money(Decimal("0.000000025"), "") == "0.00000002"  # half-even, default scale
    assert fmt_money(Decimal("5"), "USDT/ETH") == "5.000000000 USDT/ETH"  # the finer scale


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
    from sapphire.config.system import load_config
    from sapphire.kernel.assembly import load_instruments

    instruments = load_instruments(load_config(config).data)
    report = write_run_report(store, kind, tmp_path / "report", instruments, 10_000.0)
    page = report.html.read_text()
    assert "Plotly.newPlot(" in page
    # money in USDT at its stored scale: the agents table, the header and the trade list
    pnl = read_table(store, "pnl", kind).sort("ts_ns", "producer_id", "seq").collect()
    assert report.summary["final_equity"].to_list() == [pnl["equity_quote"][-1]]
    assert report.summary.schema["final_equity"] == pl.Decimal(38, 8)
    shown = _money_stats(page, ("firm PnL", "firm max drawdown"))
    assert shown["firm PnL"] == fmt_money(pnl["equity_quote"][-1], "USDT")
    fees = re.findall(r"<td>(-?[0-9.]+)</td><td>(?:True|False)</td><td>(?:True|False)</td>", page)
    assert fees and all(re.fullmatch(r"\d+\.\d{8}", f) for f in fees), fees[:5]
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
    # money from the ledger's Decimals at the quote's scale (8: the config names no quote)
    fees = sum((f.fee_quote for f in out.result.fills), Decimal(0))
    shown = _money_stats(page, ("final equity", "PnL", "fees"))
    assert shown["fees"] == fmt_money(fees, "quote") and fees > 0
    assert shown["final equity"] == fmt_money(out.result.final_equity, "quote")
    trades = Path(out.html).with_name(Path(out.html).stem + "_trades.csv").read_text()
    csv_fees = [line.split(",")[4] for line in trades.splitlines()[1:]]
    assert all(re.fullmatch(r"\d+\.\d{8}", f) for f in csv_fees), csv_fees[:5]
    assert csv_fees == [money_text(f.fee_quote, "quote") for f in out.result.fills]
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
        (  # one engine sized by it, the other by the top-level stake
            {"agent": {"kind": "indicator:EmaCross", "params": {"stake": {"stake_lots": 1}}}},
            "agent.params.stake",
        ),
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


def test_a_strategy_timeframe_other_than_the_bars_is_noted() -> None:
    """EmaCross is a 5m strategy; on 1m bars its periods count minutes (freqtrade would
    resample or refuse): said under the figures, not silently."""
    import polars as pl

    from sapphire.agents.indicator import load_strategy
    from sapphire.backtest.runner import timeframe_note

    strategy = load_strategy("EmaCross", {})
    minute = pl.DataFrame({"interval_ns": [60 * 10**9] * 3})
    assert "timeframe 5m, bars of 1m" in timeframe_note(strategy, minute)
    five = pl.DataFrame({"interval_ns": [300 * 10**9] * 3})
    assert timeframe_note(strategy, five) == ""
    assert timeframe_note(None, minute) == ""


@pytest.mark.parametrize("engine", ["vectorized", "event"])
def test_the_ratios_start_after_the_strategys_warm_up(
    engine: str, shared_data: Path, tmp_path: Path
) -> None:
    # every bar is marked, the warm-up's flat ones too: they diluted the Sharpe, and tune,
    # which scores from the warm-up's end, gave the same trades another one
    from sapphire.backtest import analytics

    cfg = parse_config(
        {
            "name": "bars",
            "agent": {"kind": "indicator:EmaCross", "params": {}},
            "instrument": {"symbol": "BTCUSD"},
            "engine": engine,
            "ohlcv": ["ohlcv/nautilus_btc-perp_1m_2021-12-31_2022-02-01.csv.gz"],
            "stake": {"stake_fraction": 0.5, "initial_cash": "10000"},
            "max_bars": 5000,
            "output_dir": str(tmp_path),
        }
    )
    [out] = run_config(cfg, lambda p: Path(p) if p == str(tmp_path) else shared_data / p)
    result = out.result
    start = 400 - 1  # EmaCross 12/26 warms up 400 bars; its last warm-up close opens
    assert result.scored_from == start and result.fills
    ppy = result.periods_per_year
    expected = analytics.sharpe(analytics.returns(result.equity[start:]), ppy)
    assert out.summary.sharpe == pytest.approx(expected)
    diluted = analytics.sharpe(analytics.returns(result.equity), ppy)
    assert out.summary.sharpe != pytest.approx(diluted)
