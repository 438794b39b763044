from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sapphire.backtest.config import parse_config as parse_backtest
from sapphire.config.system import ConfigError, parse_config
from sapphire.research import system_tune
from sapphire.research.export import backtest_dict, system_dict, write_yaml
from sapphire.research.tune_config import load_tune_config
from sapphire.research.walkforward import Window
from tests.conftest import REPO_ROOT

BEST = {"risk_factor": 0.25, "order_refresh_time": 0.7, "min_spread": 0.001}


def test_best_params_go_into_the_tuned_system_config(tmp_path: Path) -> None:
    cfg = load_tune_config(REPO_ROOT / "configs" / "tune_avellaneda_stoikov.yaml")
    assert cfg.system is not None
    window = Window(cfg.system["data"]["start_ns"] + 10, cfg.system["data"]["start_ns"] + 99)
    raw = system_tune.system_dict(cfg.system, cfg.agent, BEST, window)
    system = parse_config(raw)
    mm = next(a for a in system.agents if a.id == cfg.agent)
    assert mm.params["risk_factor"] == 0.25 and mm.params["order_refresh_time"] == 0.7
    assert mm.params["order_amount"] == 0.001  # the tuned base params are kept
    assert (system.data.start_ns, system.data.end_ns) == (window.start, window.end)
    assert cfg.system["data"]["start_ns"] != window.start, "the tune config is not modified"
    path = write_yaml(tmp_path / "best.yaml", raw, header="tuned")
    assert path.read_text().startswith("# tuned\n")
    assert parse_config(msgspec.yaml.decode(path.read_bytes())) == system


def test_bar_best_params_go_into_the_demo_system_template() -> None:
    cfg = load_tune_config(REPO_ROOT / "configs" / "tune_ema_cross.yaml")
    template = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw = system_dict(cfg, {"strategy_params.fast": 7}, template)
    system = parse_config(raw)
    assert {a.id for a in system.agents} >= {"mm_as", "momentum", "meanrev"}  # others kept


def test_best_backtest_keeps_the_data_and_swaps_params() -> None:
    cfg = load_tune_config(REPO_ROOT / "configs" / "tune_ema_cross.yaml")
    raw = backtest_dict(cfg, {"strategy_params.fast": 7, "strategy_params.slow": 90}, str.upper)
    bt = parse_backtest(raw)
    assert bt.agent.params == {"strategy_params": {"fast": 7, "slow": 90}}
    assert bt.ohlcv == [cfg.backtest["ohlcv"][0].upper()]  # paths went through rewrite
    assert bt.name == "tune_ema_cross-best"


def test_best_backtest_pins_the_grid_the_tune_traded_on(shared_data: Path) -> None:
    """The tune inferred its instrument's grid from the whole OHLCV file; the exported
    config left it to be inferred again, and a fold's window cut out of the file (to check
    its score) inferred a lot 10,000 times coarser: another score. A grid the config sets
    is kept as set."""
    from sapphire.kernel.assembly import data_path
    from sapphire.research import dataset

    cfg = load_tune_config(REPO_ROOT / "configs" / "tune_ema_cross.yaml")
    bt = cfg.backtest_config
    bars = dataset.load_bars(bt, data_path)
    assert bt.instrument.tick_size is None, "the config leaves the grid to inference"
    raw = backtest_dict(cfg, {"strategy_params.fast": 7}, instrument=bars.instrument)
    pinned = parse_backtest(raw).instrument
    assert (pinned.tick_size, pinned.lot_size) == (
        bars.instrument.tick_size,
        bars.instrument.lot_size,
    )
    unpinned = backtest_dict(cfg, {"strategy_params.fast": 7}).get("instrument", {})
    assert "tick_size" not in unpinned  # without the tune's instrument, left as it was


def test_a_system_the_runner_would_refuse_is_not_written() -> None:
    cfg = load_tune_config(REPO_ROOT / "configs" / "tune_ema_cross.yaml")
    with pytest.raises(ConfigError):
        system_dict(cfg, BEST, {"agents": [], "risk": {"no_such_limit": 1}})


def test_bar_tune_exports_a_system_on_its_own_bars(tmp_path: Path, shared_data: Path) -> None:
    """Without a template, the tuned bar strategy's system config runs on the tuned OHLCV
    file (symbol and grid from the file), with the bar venue and the backtest's costs: not
    on the bundled tick sample, whose symbol differs."""
    from sapphire.kernel.assembly import load_instruments
    from sapphire.research.export import BAR_LATENCY, BAR_VENUE, write_bar_system

    cfg = load_tune_config(REPO_ROOT / "configs" / "tune_ema_cross.yaml")
    files = write_bar_system(
        cfg,
        {"strategy_params.fast": 7},
        lambda p: shared_data / p.removeprefix("shared:"),
        tmp_path,
    )
    system = parse_config(msgspec.yaml.decode(files[-1].read_bytes()))
    [agent] = system.agents
    instruments = load_instruments(system.data)
    assert list(instruments) == [agent.symbol] == ["BTC-PERP"]
    assert agent.params["strategy_params"] == {"fast": 7, "slow": 26}
    assert agent.params["stake"] == cfg.backtest["stake"]
    assert system.exchange.factory == BAR_VENUE
    assert system.exchange.params == {**cfg.backtest["costs"], "latency": BAR_LATENCY}
    assert system.data.files == tuple(cfg.backtest["ohlcv"])
