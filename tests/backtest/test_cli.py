from __future__ import annotations

import argparse
import re
from decimal import Decimal
from pathlib import Path

import pytest

from sapphire.cli import backtest_cmd

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    backtest_cmd.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_backtest_command_runs_example_config_and_prints_summary(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data))
    config = REPO / "configs" / "backtest_rsi_bollinger_event.yaml"
    assert _run(["backtest", "--config", str(config), "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "backtest summary" in out
    # the run's row: PnL and fees at the quote's 8 decimals, uncut in 80 columns, no float
    # noise (the fees' Decimal sum, not a float printed at some width)
    [row] = [line.split() for line in out.splitlines() if line.strip().startswith("#1 ")][:1]
    assert len(row) == 8, row
    pnl, fees = row[-2:]
    assert re.fullmatch(r"-?\d+\.\d{8}", pnl) and re.fullmatch(r"\d+\.\d{8}", fees), row
    assert Decimal(fees) > 0 and "report: " in out
    assert (tmp_path / "rsi_bollinger-basana_bitstamp_BTC-USD_1m_2020-01-01.png").is_file()


def test_backtest_command_with_bad_config_returns_2_and_explains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nagent: {kind: momentum}\ninstrument: {symbol: X}\nohlcv: [a.csv]\n"
        "engine: vectorized\n"
    )
    assert _run(["backtest", "--config", str(bad)]) == 2
    assert "vectorized" in capsys.readouterr().out
    missing = tmp_path / "missing.yaml"
    missing.write_text(
        "name: x\nagent: {kind: momentum}\ninstrument: {symbol: X}\nohlcv: [nope.csv]\n"
    )
    assert _run(["backtest", "--config", str(missing)]) == 2
    assert "not found" in capsys.readouterr().out
