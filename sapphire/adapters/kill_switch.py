"""The firm-wide kill switch: held in the store root, outside any one run.

Every run (``sapphire run``, ``sapphire backtest``) reads it when it starts and before every
step: while it is tripped no order leaves, whatever the run id, across crashes and restarts.
Only an explicit operator command resets it (``sapphire kill-switch reset``), and every command
is appended to ``kill-switch.log`` beside it (who, when, why), so the history is stored too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec

from sapphire.storage.parquet_backend import atomic_write_bytes

STATE_FILE = "kill-switch.json"
LOG_FILE = "kill-switch.log"


class KillState(msgspec.Struct, frozen=True, kw_only=True):
    tripped: bool = False
    reason: str = ""
    by: str = ""
    ts_ns: int = 0


class KillCommand(msgspec.Struct, frozen=True, kw_only=True):
    action: str  # "trip" | "reset"
    reason: str
    by: str
    ts_ns: int


class FirmKillSwitch:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._path = self.root / STATE_FILE
        self._seen: tuple[int, int] | None = None
        self._state = KillState()

    def state(self) -> KillState:
        """The switch as stored now (re-read only when the file changed)."""
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            self._seen, self._state = None, KillState()
            return self._state
        key = (stat.st_mtime_ns, stat.st_size)
        if key != self._seen:
            try:
                self._state = msgspec.json.decode(self._path.read_bytes(), type=KillState)
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                # an unreadable switch is treated as tripped: never trade on a doubt
                self._state = KillState(tripped=True, reason=f"unreadable {self._path}")
            self._seen = key
        return self._state

    def halt_reason(self) -> str:
        """Why no order may leave now ("" while the switch is off)."""
        state = self.state()
        return f"firm kill switch: {state.reason or 'tripped'}" if state.tripped else ""

    def trip(self, reason: str, by: str) -> KillState:
        return self._command("trip", reason or "manual", by)

    def reset(self, reason: str, by: str) -> KillState:
        return self._command("reset", reason, by)

    def history(self) -> list[KillCommand]:
        try:
            lines = (self.root / LOG_FILE).read_bytes().splitlines()
        except FileNotFoundError:
            return []
        return [msgspec.json.decode(line, type=KillCommand) for line in lines if line.strip()]

    def _command(self, action: str, reason: str, by: str) -> KillState:
        now = time.time_ns()
        command = KillCommand(action=action, reason=reason, by=by, ts_ns=now)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOG_FILE, "ab") as log:  # the command first: it is the record
            log.write(msgspec.json.encode(command) + b"\n")
            log.flush()
            os.fsync(log.fileno())
        state = KillState(tripped=action == "trip", reason=reason, by=by, ts_ns=now)
        atomic_write_bytes(self._path, msgspec.json.encode(state))
        return state
