"""The switch a run reads between steps (``halt_reason``) is read at most every
``kill_switch.poll_ms`` of wall time: a trip binds within that, a reset this process wrote
binds at once, and an operator's read (``state``) is always fresh."""

from __future__ import annotations

from pathlib import Path

import msgspec

from sapphire.adapters.kill_switch import FirmKillSwitch, RunKillSwitch, system_kill_switch
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
