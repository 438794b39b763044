"""A bar system on the trading kernel trades and values as the bar engine does: a bar is an
event at its close, and the run ends when its last bar is visible."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from sapphire.backtest.config import parse_config as parse_backtest
from sapphire.backtest.runner import run_config
from sapphire.cli import main
from sapphire.storage.query import read_table
from tests.conftest import REPO_ROOT


def test_a_bar_system_ends_with_the_bar_engines_fills_and_pnl(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the kernel's run ended one ns after its last bar, which agents and marks see only a
    # feed latency later: the last close never valued the position it ended with (a day of
    # 1m bars: -446.68 against the engine's -443.93 USD)
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data))
    monkeypatch.chdir(REPO_ROOT)  # the config's instrument file is relative to the repo
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "run_ema_cross_bars.yaml").read_bytes())
    raw["storage"] = {"root": str(tmp_path / "runs")}
    config = tmp_path / "bars.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    assert main(["backtest", "--config", str(config), "--run-id", "bars", "--no-progress"]) == 0
    store = tmp_path / "runs" / "store"
    fills = read_table(store, "fills", "bars").collect().sort("ts_ns", "seq")
    pnl = read_table(store, "pnl", "bars").collect().sort("ts_ns", "seq")

    [agent] = raw["agents"]
    bars = parse_backtest(
        {
            "name": "bars",
            "agent": {"kind": agent["kind"], "id": agent["id"], "params": {}},
            "instrument": {"symbol": agent["symbol"]},
            "engine": "event",
            "ohlcv": [str(shared_data / "ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv")],
            "costs": {k: raw["exchange"]["params"][k] for k in ("fee_bps", "slippage_bps")},
            "stake": agent["params"]["stake"],
            "output_dir": str(tmp_path / "reports"),
        }
    )
    params = {k: v for k, v in agent["params"].items() if k != "stake"}  # the top-level one
    bars = msgspec.structs.replace(bars, agent=msgspec.structs.replace(bars.agent, params=params))
    [engine] = run_config(bars, lambda p: Path(p))
    result = engine.result
    assert [f.price_ticks for f in result.fills] == fills["price_ticks"].to_list()
    assert [f.qty_lots for f in result.fills] == fills["qty_lots"].to_list()
    assert pnl["position_lots"][-1] != 0, "the run must end holding a position"
    engine_pnl = result.final_equity - result.initial_cash
    # the store keeps money at 9 decimals, rounded as each amount is booked
    assert abs(pnl["equity_quote"][-1] - engine_pnl) < Decimal("1e-7"), (pnl.tail(1), engine_pnl)
