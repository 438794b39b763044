"""The firm-wide kill switch: tripped by an operator command, it holds for every run on the
store root (any run id, after any restart) until an explicit, stored reset."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sapphire.adapters.kill_switch import FirmKillSwitch
from sapphire.cli import main
from sapphire.storage.query import read_table
from tests.conftest import REPO_ROOT


def demo(tmp_path: Path) -> Path:
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw["data"] = {**raw["data"], "max_events": 6_000}
    raw["storage"] = {"root": str(tmp_path / "runs")}
    path = tmp_path / "demo.yaml"
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


def backtest(config: Path, run_id: str) -> int:
    return main(["backtest", "--config", str(config), "--run-id", run_id, "--no-progress"])


def test_tripped_switch_stops_every_new_run_until_an_explicit_reset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, root = demo(tmp_path), tmp_path / "runs"
    assert main(["kill-switch", "trip", "--root", str(root), "--reason", "drill"]) == 0
    assert "TRIPPED" in capsys.readouterr().out
    assert backtest(config, "while-tripped") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "TRIPPED" in out
    orders = read_table(root / "store", "orders", "while-tripped").collect()
    assert orders.height == 0, "no order may leave while the firm switch is tripped"
    decisions = read_table(root / "store", "risk_decisions", "while-tripped").collect()
    assert decisions.height > 0
    assert set(decisions["reason"]) == {"risk_kill_switch"}
    # a reset needs a reason, and is stored with the trip
    assert main(["kill-switch", "reset", "--root", str(root)]) == 2
    assert main(["kill-switch", "reset", "--root", str(root), "--reason", "drill over"]) == 0
    history = FirmKillSwitch(root).history()
    assert [c.action for c in history] == ["trip", "reset"]
    assert history[1].reason == "drill over" and history[1].by
    assert backtest(config, "after-reset") == 0
    assert read_table(root / "store", "orders", "after-reset").collect().height > 0


def test_an_unreadable_switch_counts_as_tripped(tmp_path: Path) -> None:
    (tmp_path / "kill-switch.json").write_text("{not json")
    state = FirmKillSwitch(tmp_path).state()
    assert state.tripped and "unreadable" in state.reason
