"""The switch a run reads between steps (``halt_reason``) is read at most every
``kill_switch.poll_ms`` of wall time: a trip binds within that, a reset this process wrote
binds at once, and an operator's read (``state``) is always fresh."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.adapters.kill_switch import (
    FirmKillSwitch,
    RunKillSwitch,
    run_kill_switch,
    run_switch_key,
    system_kill_switch,
)
from sapphire.config.system import SystemConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_trip_by_another_process_binds_once_the_poll_interval_passed(tmp_path: Path) -> None:
    clock = Clock()
    run = FirmKillSwitch(tmp_path, poll_s=10.0, clock=clock)  # whole seconds: exact sums
    operator = FirmKillSwitch(tmp_path)  # `sapphire kill-switch trip`, another process
    assert run.halt_reason() == ""
    operator.trip("drill", "ops")
    assert run.state().tripped  # an explicit read is fresh
    clock.now += 5
    assert run.halt_reason() == ""  # read 5 s ago: not yet
    clock.now += 5
    assert run.halt_reason() == "firm kill switch: drill"
    operator.reset("drill over", "ops")
    clock.now += 9
    assert run.halt_reason() == "firm kill switch: drill"
    clock.now += 1
    assert run.halt_reason() == ""


def test_without_a_poll_interval_every_call_reads_the_switch(tmp_path: Path) -> None:
    run = RunKillSwitch(tmp_path, poll_s=0.0, clock=lambda: 0.0)
    assert run.halt_reason() == ""
    RunKillSwitch(tmp_path).trip("stop", "ops")
    assert run.halt_reason() == "run stopped: stop"


def test_what_this_process_writes_binds_at_once(tmp_path: Path) -> None:
    # the console trips and resets through the run's own switch: a reset must not be undone
    # by the trip the run read just before it
    clock = Clock()
    run = FirmKillSwitch(tmp_path, poll_s=60.0, clock=clock)
    run.trip("console", "ops")
    assert run.halt_reason() == "firm kill switch: console"
    run.reset("console reset", "ops")
    assert run.halt_reason() == ""


def test_the_config_sets_the_interval(tmp_path: Path) -> None:
    raw = {"storage": {"root": str(tmp_path)}, "kill_switch": {"poll_ms": 250}}
    config = msgspec.convert(raw, SystemConfig)
    assert system_kill_switch(config)._poll_s == 0.25


def _commands(root: str, action: str, rounds: int, start: Any, done: Any, out: Any) -> None:
    switch = FirmKillSwitch(Path(root))
    for k in range(rounds):
        start.wait()
        try:
            getattr(switch, action)("race", "op")
            out.put((k, action, ""))
        except Exception as exc:
            out.put((k, action, repr(exc)))
        done.wait()


def test_commands_at_the_same_moment_each_apply_and_the_last_logged_stands(
    tmp_path: Path,
) -> None:
    # a trip and a reset at once (an operator and the console): both wrote through one
    # temporary file, and a command said "applied" while the file held the other's state,
    # or failed with FileNotFoundError, or a torn mix of both landed
    ctx = multiprocessing.get_context("fork")
    rounds = 60
    start, done, out = ctx.Barrier(3), ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_commands, args=(str(tmp_path), a, rounds, start, done, out))
        for a in ("trip", "reset")
    ]
    for p in procs:
        p.start()
    try:
        for _ in range(rounds):
            start.wait(timeout=30)
            answers = [out.get(timeout=30), out.get(timeout=30)]
            assert all(not error for _, _, error in answers), answers
            switch = FirmKillSwitch(tmp_path)
            last = switch.history()[-1]
            assert switch.state().tripped is (last.action == "trip")
            done.wait(timeout=30)
    finally:
        for p in procs:
            p.join(timeout=30)
    assert len(FirmKillSwitch(tmp_path).history()) == 2 * rounds
    assert not list(tmp_path.glob(".*.tmp"))  # no writer's temporary left behind


def _redis_config(root: Path, key: str) -> SystemConfig:
    raw = {"storage": {"root": str(root)}, "kill_switch": {"redis": True, "redis_key": key}}
    return msgspec.convert(raw, SystemConfig)


def test_a_run_switch_key_is_its_store_root_and_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no Redis is reached: a client connects at its first command
    a, b = _redis_config(tmp_path / "a", "k"), _redis_config(tmp_path / "b", "k")
    key_a = run_switch_key("k", tmp_path / "a", "twin")
    assert run_kill_switch(a, "twin").redis.key == key_a  # type: ignore[union-attr]
    assert run_kill_switch(b, "twin").redis.key != key_a  # type: ignore[union-attr]
    assert run_kill_switch(a, "other").redis.key != key_a  # type: ignore[union-attr]
    # the root as the config writes it, normalised, never resolved: a run's actors on
    # another machine (or in another folder) read the key `sapphire stop` writes here
    assert run_switch_key("k", tmp_path / "b" / ".." / "a", "twin") == key_a
    assert run_switch_key("k", "./runs", "twin") == run_switch_key("k", "runs", "twin")
    monkeypatch.chdir(tmp_path)
    here = run_switch_key("k", "runs", "twin")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert run_switch_key("k", "runs", "twin") == here  # the same config, another folder
    assert key_a.startswith("k:run:") and key_a.endswith(":twin")
    assert str(tmp_path) not in key_a  # a digest: the key names no one's folders
    # the firm's switch is one for every root, as it is meant to be
    assert system_kill_switch(a).redis.key == system_kill_switch(b).redis.key == "k"  # type: ignore[union-attr]


def test_a_stop_on_one_store_root_leaves_the_same_run_id_on_another_trading(
    tmp_path: Path,
) -> None:
    """Two store roots, one Redis, one run id on each: a stop of one (file and Redis key)
    binds it only; a reset then frees it."""
    import uuid

    import redis

    key = f"sapphire:test-kill:{uuid.uuid4().hex}"
    client = redis.Redis(socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    try:
        a, b = _redis_config(tmp_path / "a", key), _redis_config(tmp_path / "b", key)
        stopped, other = run_kill_switch(a, "twin"), run_kill_switch(b, "twin")
        stopped.trip("drill", "ops")
        assert stopped.halt_reason() == "run stopped: drill"
        assert other.halt_reason() == ""
        assert client.exists(run_switch_key(key, tmp_path / "a", "twin"))
        # Redis alone (b's file says nothing either way): the same answer
        assert other.redis is not None and not other.redis.state().tripped
        stopped.reset("drill over", "ops")
        assert run_kill_switch(a, "twin").halt_reason() == ""
    finally:
        for name in client.scan_iter(match=f"{key}*"):
            client.delete(name)
