"""`sapphire new-agent NAME`: a tick agent and a bar strategy that run as written, from the
working directory, through the installed `sapphire` command (no PYTHONPATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from sapphire.cli import main

SAPPHIRE = Path(sys.executable).with_name("sapphire")


def test_tick_template_runs_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not SAPPHIRE.is_file():
        pytest.skip(f"no console script at {SAPPHIRE}")
    monkeypatch.chdir(tmp_path)
    assert main(["new-agent", "flow_demo"]) == 0
    assert "next: sapphire backtest --config flow_demo.yaml" in capsys.readouterr().out
    assert main(["new-agent", "flow_demo"]) == 2  # never overwrites without --force
    assert main(["new-agent", "Bad-Name"]) == 2 and main(["new-agent", "json"]) == 2
    # frozen standard modules (their origin is no path) were taken for the folder's own
    assert [main(["new-agent", n]) for n in ("os", "abc", "io")] == [2, 2, 2]
    assert not (tmp_path / "os.py").exists()
    # a kind "indicator:..." is a built-in bar strategy: that module would never be used
    assert main(["new-agent", "indicator"]) == 2
    assert not (tmp_path / "indicator.py").exists()
    config = tmp_path / "flow_demo.yaml"
    # a shorter replay for the test; the template as written runs the whole sample
    source = "  source: sample\n"
    config.write_text(config.read_text().replace(source, f"{source}  max_events: 8000\n"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLUMNS")}
    env["COLUMNS"] = "120"
    done = subprocess.run(
        [str(SAPPHIRE), "backtest", "--config", "flow_demo.yaml", "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if "flow_demo/BTCUSDT" in line)
    traded = Decimal(row.split()[2])  # in BTC
    assert traded > 0, f"the template agent never traded: {row}"


def test_bar_template_runs_bar_by_bar(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    shared_data: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data))
    assert main(["new-agent", "bar_demo", "--bar"]) == 0
    capsys.readouterr()
    assert main(["backtest", "--config", "bar_demo.yaml", "--no-progress"]) == 0
    out = capsys.readouterr().out
    # the summary row of run #1: run, return %, sharpe, max dd %, fills, ...
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["#1"])
    assert len(row) >= 5 and int(row[4]) > 0, row
