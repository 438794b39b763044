"""A bar backtest (`sapphire backtest` on an ``agent``/``instrument``/``ohlcv`` config) that
cannot run says why in one line naming the config file and the field, and exits 2: a bad
grid step, data that ends inside the strategy's warm-up, a strategy parameter out of range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sapphire.cli import main


def _bar_config(tmp_path: Path, **changes: Any) -> Path:
    """EmaCross on the shared Bitstamp minute bars, event engine, with ``changes``."""
    raw: dict[str, Any] = {
        "name": "ema",
        "agent": {
            "kind": "indicator:EmaCross",
            "id": "ema",
            "params": {"strategy_params": {"fast": 12, "slow": 26}},
        },
        "instrument": {"symbol": "BTCUSD"},
        "engine": "event",
        "ohlcv": ["shared:ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv"],
        "costs": {"fee_bps": 10, "slippage_bps": 2},
        "stake": {"stake_fraction": 0.5, "initial_cash": 10000},
        "output_dir": str(tmp_path / "reports"),
    }
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "bars.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line_error(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    screen = capsys.readouterr()
    out = screen.out + screen.err
    assert "Traceback" not in out and "InstrumentError" not in out, out
    # rich folds a long line at the terminal's width: the words, not the folding, count
    return " ".join(out.split())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tick_size", "0"),
        ("tick_size", "-0.01"),
        ("tick_size", "abc"),
        ("tick_size", "NaN"),
        ("tick_size", "Infinity"),
        ("lot_size", "0"),
        ("lot_size", "-1"),
    ],
)
def test_a_bad_grid_step_is_one_line_naming_the_file_and_field(
    tmp_path: Path,
    shared_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: str,
) -> None:
    # it was a traceback ending in sapphire.model.instrument.InstrumentError, exit 1
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data))
    steps = {"tick_size": "0.01", "lot_size": "0.00000001", field: value}
    config = _bar_config(tmp_path, instrument=steps)
    assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    out = _one_line_error(config, capsys)
    assert str(config) in out and f"instrument.{field}" in out and repr(value) in out


@pytest.mark.parametrize("engine", ["event", "vectorized"])
def test_bars_that_end_inside_the_warm_up_are_an_error_not_a_zero_result(
    tmp_path: Path,
    shared_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    engine: str,
) -> None:
    # EmaCross settles over 400 bars: 300 bars printed a 0.000 % result table and exit 0
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data))
    config = _bar_config(tmp_path, engine=engine, max_bars=300)
    assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    out = _one_line_error(config, capsys)
    assert str(config) in out and "backtest summary" not in out
    assert "ended after 300 warm-up bar(s)" in out and "max_bars: 300" in out
    assert "startup_candle_count=400" in out
    assert not list((tmp_path / "reports").glob("*.html"))  # no report of a run that was not


def test_a_bad_strategy_parameter_names_the_file_and_its_full_path(
    tmp_path: Path,
    shared_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # "backtest failed: EmaCross params: Expected `int` >= 2 - at `$.fast`": no file, and a
    # path the config does not have
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data))
    agent = {"params": {"strategy_params": {"fast": 0, "slow": 26}}}
    config = _bar_config(tmp_path, agent=agent)
    assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    out = _one_line_error(config, capsys)
    assert f"{config}: agent.params.strategy_params.fast: " in out and ">= 2" in out
    assert "$.fast" not in out
    unknown = _bar_config(tmp_path, agent={"kind": "indicator:EmaCrosss"})
    assert main(["backtest", "--config", str(unknown), "--no-progress"]) == 2
    out = _one_line_error(unknown, capsys)
    assert f"{unknown}: agent.kind: unknown strategy 'EmaCrosss'" in out


def test_backtest_help_says_the_configs_run_id_is_the_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # it said "(default: fresh)", while a config's run_id is used when set
    with pytest.raises(SystemExit):
        main(["backtest", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "default: the config's run_id, else fresh" in out


def test_without_a_symbol_each_file_is_its_own_symbol(tmp_path: Path) -> None:
    """One configured symbol labelled every file with it (Bitstamp BTC/USD bars reported as
    "ETHBTC"); without one, each file's name gives its symbol, and a file whose name does
    not is one line naming the field."""
    from sapphire.backtest.config import parse_config
    from sapphire.backtest.runner import run_config
    from sapphire.kernel.assembly import data_path

    ohlcv = [
        "shared:ohlcv/freqtrade_ETH-BTC_5m_2018-01.csv.gz",
        "shared:ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv",
    ]
    path = _bar_config(tmp_path, instrument={"symbol": ""}, ohlcv=ohlcv, max_bars=600)
    cfg = parse_config(yaml.safe_load(path.read_text()))
    outputs = run_config(cfg, lambda p: data_path(p) if p.startswith("shared:") else Path(p))
    assert [o.result.symbol for o in outputs] == ["ETHBTC", "BTCUSD"]
    assert "BTCUSD: tick" in Path(outputs[1].html).read_text(encoding="utf-8")


def test_a_file_that_does_not_name_its_symbol_needs_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sapphire.kernel.assembly import data_path

    bars = tmp_path / "bars.csv"
    bars.write_bytes(
        data_path("shared:ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv").read_bytes()
    )
    config = _bar_config(tmp_path, instrument={"symbol": ""}, ohlcv=[str(bars)], max_bars=600)
    assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    assert "instrument.symbol:" in _one_line_error(config, capsys)
