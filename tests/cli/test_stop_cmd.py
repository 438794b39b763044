"""`sapphire stop RUN_ID`: one run halts from its next step (no new order, resting ones
cancelled), other runs on the same store go on; the stop holds until an explicit reset."""

from __future__ import annotations

from pathlib import Path

import msgspec
import polars as pl
import pytest

from sapphire.adapters.kill_switch import RunKillSwitch, run_kill_switch, system_kill_switch
from sapphire.cli import kernel_run, main
from sapphire.config.system import load_config
from sapphire.kernel.coordinator import CoordinatorStep
from sapphire.model.orders import OrderStatus
from sapphire.storage.query import read_table
from tests.cli.demo_runs import backtest, demo


def test_a_stopped_run_sends_nothing_and_other_runs_trade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, store = demo(tmp_path), tmp_path / "runs" / "store"
    # stopped before it starts: only with --pending (an id with no run is refused, below)
    assert main(["stop", "halted", "--config", str(config), "--reason", "drill", "--pending"]) == 0
    out = capsys.readouterr().out
    assert "run halted: STOPPED" in out and "starts halted" in out
    assert backtest(config, "halted") == 0
    screen = " ".join(capsys.readouterr().out.split())
    assert "TRIPPED" in screen and "risk rejected: risk_kill_switch - the kill switch" in screen
    assert read_table(store, "orders", "halted").collect().height == 0
    decisions = read_table(store, "risk_decisions", "halted").collect()
    assert decisions.height > 0 and set(decisions["reason"]) == {"risk_kill_switch"}
    # the stop names one run: another on the same store trades
    assert backtest(config, "free") == 0
    assert read_table(store, "orders", "free").collect().height > 0
    # lifting it needs a reason, and both commands are kept
    assert main(["stop", "halted", "--config", str(config), "--reset"]) == 2
    assert main(["stop", "halted", "--config", str(config), "--reset", "--reason", "ok"]) == 0
    history = RunKillSwitch(tmp_path / "runs" / "halted").history()
    assert [(c.action, c.reason) for c in history] == [("trip", "drill"), ("reset", "ok")]
    assert main(["stop"]) == 2 and main(["stop", "../x"]) == 2


def test_stop_halts_a_run_that_is_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the operator's command arrives while the run steps: right after its first fills
    # (deterministic, where a wall-clock wait would race the replay on a busy machine)
    config, root = demo(tmp_path, max_events=12_000), tmp_path / "runs"
    # read before every step (poll_ms 0): the stop lands on the step after the command, not
    # up to 10 ms of wall time later, when this short run's resting orders may have filled
    raw = msgspec.yaml.decode(config.read_bytes())
    raw["kill_switch"] = {"poll_ms": 0}
    config.write_bytes(msgspec.yaml.encode(raw))
    sent: list[int] = []

    class Watched(kernel_run.InProcessKernel):
        def step(self) -> CoordinatorStep | None:
            result = super().step()
            if result is not None and result.fills_total > 0 and not sent:
                sent.append(self.steps)
                assert main(["stop", "busy", "--root", str(root), "--reason", "mid-run"]) == 0
            return result

    monkeypatch.setattr(kernel_run, "InProcessKernel", Watched)
    assert backtest(config, "busy") == 0
    assert "TRIPPED" in capsys.readouterr().out
    decisions = read_table(root / "store", "risk_decisions", "busy").collect().sort("ts_ns", "seq")
    stopped = decisions.filter(decisions["reason"] == "risk_kill_switch")
    assert decisions["accepted"].any(), "it traded before the stop"
    assert stopped.height > 0, "it was stopped while running"
    after = decisions.filter(decisions["ts_ns"] >= stopped["ts_ns"].min())
    assert not after["accepted"].any(), "an order was accepted after the stop"
    # and it cancelled what rested: no order of the run is left open at the venue
    orders = read_table(root / "store", "orders", "busy").collect()
    last = orders.sort("ts_ns", "seq").group_by("client_order_id").agg(pl.col("status").last())
    assert "canceled" in set(last["status"])
    open_statuses = [s.value for s in OrderStatus if not s.is_final]
    assert last.filter(pl.col("status").is_in(open_statuses)).height == 0


def test_stop_refuses_a_run_id_with_no_run_and_names_the_runs_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a mistyped id answered "STOPPED" (and wrote a switch no run reads) while the run the
    # operator meant went on trading
    config, root = demo(tmp_path), tmp_path / "runs"
    assert main(["stop", "ghost", "--root", str(root)]) == 2
    assert "no store root at" in capsys.readouterr().err
    assert backtest(config, "real-1") == 0
    capsys.readouterr()
    assert main(["stop", "real-l", "--config", str(config), "--reason", "typo"]) == 2
    captured = capsys.readouterr()
    assert "STOPPED" not in captured.out
    err = " ".join(captured.err.split())
    assert "no run 'real-l'" in err and "real-1" in err and "nothing stopped" in err
    assert not (root / "real-l").exists()
    # the run's own id is known from the moment it starts (its folder): stopped, exit 0
    assert main(["stop", "real-1", "--config", str(config), "--reason", "drill"]) == 0
    assert "run real-1: STOPPED" in capsys.readouterr().out
    # --all on a store root nothing ever ran on is refused the same way
    assert main(["stop", "--all", "--root", str(tmp_path / "elsewhere")]) == 2
    assert not (tmp_path / "elsewhere").exists()
    capsys.readouterr()
    assert main(["stop", "--all", "--root", str(tmp_path / "elsewhere"), "--pending"]) == 0
    assert "no run has used" in capsys.readouterr().out  # it said "no run None"
    # "store" is the Parquet store's folder, never a run's
    assert main(["stop", "store", "--root", str(root)]) == 2
    assert backtest(config, "store") == 2
    # nor the firm switch's file: a run folder there read as "unreadable: tripped" everywhere
    assert backtest(config, "kill-switch.json") == 2


def test_a_stop_binds_its_run_id_on_its_store_root_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two store roots sharing a Redis-held switch, one run id on each (two users' stores):
    `sapphire stop` of one halts that run, and the other trades. The key the command wrote is
    the one the run reads (run_kill_switch, the kernel's), and the firm's key is shared."""
    import uuid

    import redis

    client = redis.Redis(socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    key = f"sapphire:test-kill:{uuid.uuid4().hex}"
    configs = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        path = demo(tmp_path / name)
        raw = msgspec.yaml.decode(path.read_bytes())
        raw["kill_switch"] = {"redis": True, "redis_key": key}
        path.write_bytes(msgspec.yaml.encode(raw))
        configs[name] = path
    try:
        stop = ["stop", "twin", "--config", str(configs["a"]), "--reason", "a only"]
        assert main([*stop, "--pending"]) == 0
        written = capsys.readouterr().out.split("redis key: ")[1].split()[0]
        loaded = {n: load_config(p) for n, p in configs.items()}
        read = run_kill_switch(loaded["a"], "twin").redis
        assert read is not None and read.key == written and client.exists(written)
        assert system_kill_switch(loaded["a"]).redis.key == key  # type: ignore[union-attr]
        assert backtest(configs["b"], "twin") == 0
        store_b = tmp_path / "b" / "runs" / "store"
        assert read_table(store_b, "orders", "twin").collect().height > 0
        assert backtest(configs["a"], "twin") == 0
        store_a = tmp_path / "a" / "runs" / "store"
        assert read_table(store_a, "orders", "twin").collect().height == 0
    finally:
        for name in client.scan_iter(match=f"{key}*"):
            client.delete(name)
