"""A run id names one run in the store: a second backtest under it is refused, never mixed
into the first (its rows' seqs would be taken for duplicates and dropped, its summary would
count the first run's rows as its own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sapphire.storage.query import read_table
from tests.cli.demo_runs import backtest, demo


def test_a_second_backtest_under_a_stored_run_id_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = demo(tmp_path)
    assert backtest(config, "once") == 0
    fills = read_table(tmp_path / "runs" / "store", "fills", "once").collect().height
    capsys.readouterr()
    assert backtest(config, "once") == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "run 'once' is already stored" in out and "choose another --run-id" in out
    assert read_table(tmp_path / "runs" / "store", "fills", "once").collect().height == fills
    assert backtest(config, "twice") == 0  # another id is a run of its own


def test_a_backtest_whose_data_ends_before_its_trading_period_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # data.start_ns after every recorded event: only warm-up windows, no trading; it used to
    # print "0 events in 2 steps" and exit 0
    config = demo(tmp_path, start_ns=4_000_000_000_000_000_000)
    assert backtest(config, "late") == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "no market events in the trading period" in out
