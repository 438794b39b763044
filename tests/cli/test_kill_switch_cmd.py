"""The firm-wide kill switch: tripped by an operator command, it holds for every run on the
store root (any run id, after any restart) until an explicit, stored reset."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sapphire.adapters.kill_switch import FirmKillSwitch
from sapphire.cli import main
from sapphire.storage.query import read_table
from tests.cli.demo_runs import backtest, demo


def test_tripped_switch_stops_every_new_run_until_an_explicit_reset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, root = demo(tmp_path), tmp_path / "runs"
    # no run has used the root yet: refused (a mistyped root would be a switch no run
    # reads), unless the operator says so
    assert main(["kill-switch", "trip", "--root", str(root), "--reason", "drill"]) == 2
    assert "no run has used" in capsys.readouterr().err and not root.exists()
    assert main(["kill-switch", "status", "--root", str(root)]) == 0
    assert "note: no run has used" in capsys.readouterr().out
    # a reset there is refused too: it made the folder, and a mistyped trip then passed
    assert main(["kill-switch", "reset", "--root", str(root), "--reason", "x"]) == 2
    assert not root.exists()
    args = ["kill-switch", "trip", "--root", str(root), "--reason", "drill", "--pending"]
    assert main(args) == 0
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


def test_an_unreadable_switch_counts_as_tripped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "kill-switch.json").write_text("{not json")
    state = FirmKillSwitch(tmp_path).state()
    assert state.tripped and "unreadable" in state.reason
    # the operator's status says why, not a bare TRIPPED nobody wrote
    assert main(["kill-switch", "status", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "TRIPPED: unreadable" in out and "kill-switch.json" in out


def redis_demo(tmp_path: Path, root: str, key: str, port: int = 6379) -> Path:
    (tmp_path / root).mkdir()
    path = demo(tmp_path / root)
    raw = msgspec.yaml.decode(path.read_bytes())
    raw["kill_switch"] = {"redis": True, "redis_key": key}
    raw["redis"] = {"port": port}
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


def test_a_redis_held_switch_binds_runs_on_another_store_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import uuid

    import redis

    key = f"sapphire:test-kill:{uuid.uuid4().hex}"
    client = redis.Redis()
    try:
        # two machines of the firm: different store roots, one Redis
        here, there = redis_demo(tmp_path, "a", key), redis_demo(tmp_path, "b", key)
        assert main(["kill-switch", "trip", "--config", str(here), "--reason", "redis drill"]) == 0
        assert client.exists(key) and client.llen(f"{key}:log") == 1
        assert backtest(there, "other-root") == 0
        root_b = tmp_path / "b" / "runs"
        assert read_table(root_b / "store", "orders", "other-root").collect().height == 0
        capsys.readouterr()
        assert main(["kill-switch", "status", "--config", str(there)]) == 0
        assert "TRIPPED" in capsys.readouterr().out
        # the reset is an operator command, stored in Redis's log too
        reset = ["kill-switch", "reset", "--config", str(there), "--reason", "drill over"]
        assert main(reset) == 0
        assert [c.action for c in FirmKillSwitch(root_b).history()] == ["reset"]
        from sapphire.adapters.kill_switch import RedisKillSwitch

        assert [c.action for c in RedisKillSwitch(client, key).history()] == ["trip", "reset"]
        assert backtest(there, "after-reset") == 0
        assert read_table(root_b / "store", "orders", "after-reset").collect().height > 0
        # tripped on one machine (its file and Redis), reset on the other (its file and
        # Redis): the newest command wins everywhere, the first machine's file says what it
        # may, and its runs trade again
        root_a = tmp_path / "a" / "runs"
        assert main(["kill-switch", "trip", "--config", str(there), "--reason", "on b"]) == 0
        assert main(["kill-switch", "reset", "--config", str(here), "--reason", "on a"]) == 0
        assert FirmKillSwitch(root_b).state().tripped  # b's own file, read alone
        capsys.readouterr()
        assert main(["kill-switch", "status", "--config", str(there)]) == 0
        assert "off since" in capsys.readouterr().out
        assert backtest(there, "reset-elsewhere") == 0
        assert read_table(root_b / "store", "orders", "reset-elsewhere").collect().height > 0
        assert FirmKillSwitch(root_a).state().tripped is False
    finally:
        client.delete(key, f"{key}:log")


def test_an_unreachable_redis_switch_counts_as_tripped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # nothing listens on port 1: a switch that cannot be read never lets orders through
    import time

    config = redis_demo(tmp_path, "a", "sapphire:test-kill:nobody", port=1)
    raw = msgspec.yaml.decode(config.read_bytes())
    raw["kill_switch"]["poll_ms"] = 0  # a read before every step
    config.write_bytes(msgspec.yaml.encode(raw))
    started = time.monotonic()
    assert backtest(config, "no-redis") == 0
    # one attempt a read, no retries with backoff (4 s a read before, between steps)
    assert time.monotonic() - started < 30
    root = tmp_path / "a" / "runs"
    assert read_table(root / "store", "orders", "no-redis").collect().height == 0
    screen = " ".join(capsys.readouterr().out.split())
    assert "kill switch TRIPPED: firm kill switch: redis kill switch unreadable" in screen
    # the file took the trip, Redis did not: said so, not "it did not happen"
    assert main(["kill-switch", "trip", "--config", str(config), "--reason", "x"]) == 1
    err = capsys.readouterr().err
    assert "only half done" in err and "NOT to Redis" in err
    assert FirmKillSwitch(root).state().tripped


def test_a_missing_redis_password_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAPPHIRE_TEST_NO_SUCH_SECRET", raising=False)
    config = redis_demo(tmp_path, "a", "sapphire:test-kill:secret")
    raw = msgspec.yaml.decode(config.read_bytes())
    raw["redis"]["password_env"] = "SAPPHIRE_TEST_NO_SUCH_SECRET"
    config.write_bytes(msgspec.yaml.encode(raw))
    for argv in (
        ["kill-switch", "status", "--config", str(config)],
        ["stop", "some-run", "--config", str(config)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "SAPPHIRE_TEST_NO_SUCH_SECRET" in err and "Traceback" not in err
    assert backtest(config, "no-secret") == 2
    assert "SAPPHIRE_TEST_NO_SUCH_SECRET" in capsys.readouterr().out


def test_a_root_holding_only_the_switchs_own_files_is_still_unused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "runz"
    trip = ["kill-switch", "trip", "--root", str(typo), "--reason", "drill"]
    assert main([*trip, "--pending"]) == 0  # the operator meant it: the folder now exists
    assert main(["kill-switch", "reset", "--root", str(typo), "--reason", "x", "--pending"]) == 0
    capsys.readouterr()
    assert main(trip) == 2  # still no run there: a second, mistyped trip is refused
    assert "no run has used" in capsys.readouterr().err
