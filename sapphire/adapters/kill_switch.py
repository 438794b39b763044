"""The firm-wide kill switch: held in the store root, outside any one run.

Every run (``sapphire run``, ``sapphire backtest``) reads it when it starts and between steps,
at most every ``kill_switch.poll_ms`` of wall-clock time (before every step with 0): while it
is tripped no order leaves, whatever the run id, across crashes and restarts.
Only an explicit operator command resets it (``sapphire kill-switch reset``), and every command
is appended to ``kill-switch.log`` beside it (who, when, why), so the history is stored too.

With ``kill_switch.redis: true`` in the system config the switch is also held in Redis (one
key and one command list, shared by every machine of the firm; a run's own switch, ``sapphire
stop``'s, under a key of its store root and id: :func:`run_switch_key`): a command is
applied to both places, and the newest command of the two wins (a reset on one machine clears
a trip made on another, whose own file still says tripped). An unreadable file or an
unreachable Redis counts as tripped: never trade on a doubt. The Redis client makes one
attempt per read (no retries with backoff: a run asks between steps, and a switch it cannot
read halts it).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from sapphire.config.system import SystemConfig
from sapphire.storage.files import atomic_write_bytes

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


REDIS_KEY = "sapphire:kill-switch"


class RedisKillSwitch:
    """The switch as a Redis key (``KEY``: the state) and list (``KEY:log``: every command)."""

    def __init__(self, client: Any, key: str = REDIS_KEY) -> None:
        self._client = client
        self.key = key

    def state(self) -> KillState:
        try:
            raw = self._client.get(self.key)
        except Exception as exc:  # redis.RedisError, OSError: the switch cannot be read
            return KillState(tripped=True, reason=f"redis kill switch unreadable: {exc}"[:200])
        if raw is None:
            return KillState()
        try:
            return msgspec.json.decode(raw, type=KillState)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return KillState(tripped=True, reason=f"unreadable redis key {self.key}")

    def apply(self, command: KillCommand, state: KillState) -> None:
        # one transaction: the command is in the log exactly when the state changed
        pipe = self._client.pipeline(transaction=True)
        pipe.rpush(f"{self.key}:log", msgspec.json.encode(command))
        pipe.set(self.key, msgspec.json.encode(state))
        pipe.execute()

    def history(self) -> list[KillCommand]:
        rows = self._client.lrange(f"{self.key}:log", 0, -1)
        return [msgspec.json.decode(r, type=KillCommand) for r in rows]


_OFF = KillState()


class FirmKillSwitch:
    """``poll_s``: :meth:`halt_reason` (what a run asks between steps) reads the switch at
    most that often (wall-clock seconds; 0: at every call), answering what it last read in
    between. :meth:`state` always reads it. ``clock``: the wall clock (monotonic seconds)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        redis: RedisKillSwitch | None = None,
        poll_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.root = Path(root)
        self._path = self.root / STATE_FILE
        self._path_str = str(self._path)
        self._seen: tuple[int, int] | None = None
        self._state = _OFF
        self._poll_s = poll_s
        self._clock = clock
        self._next_read = float("-inf")
        self._halt = ""

    def state(self) -> KillState:
        """The switch as stored now. With Redis: the newer command of the file and Redis
        (tripped on a tie), and tripped when either cannot be read (a state no command wrote,
        ``ts_ns`` 0, that says tripped)."""
        local = self._file_state()
        if self.redis is None or (local.tripped and not local.ts_ns):
            return local
        remote = self.redis.state()
        if remote.tripped and not remote.ts_ns:
            return remote
        if remote.ts_ns == local.ts_ns:
            return local if local.tripped else remote
        return remote if remote.ts_ns > local.ts_ns else local

    def _file_state(self) -> KillState:
        """The file's state (re-read only when the file changed). Runs before every step of
        a run, so the common answer, no file, costs one ``access`` call (no exception, no
        new object): a tenth of a backtest's time went to this check before."""
        if not os.access(self._path_str, os.F_OK):
            self._seen, self._state = None, _OFF
            return _OFF
        try:
            stat = os.stat(self._path_str)
        except FileNotFoundError:  # removed since the access call
            self._seen, self._state = None, _OFF
            return _OFF
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
        """Why no order may leave now ("" while the switch is off), as read at most
        ``poll_s`` ago."""
        if self._poll_s > 0:
            now = self._clock()
            if now < self._next_read:
                return self._halt
            self._next_read = now + self._poll_s
        state = self.state()
        self._halt = self._reason(state) if state.tripped else ""
        return self._halt

    def _reason(self, state: KillState) -> str:
        return f"firm kill switch: {state.reason or 'tripped'}"

    def trip(self, reason: str, by: str) -> KillState:
        return self._command("trip", reason or "manual", by)

    def reset(self, reason: str, by: str) -> KillState:
        return self._command("reset", reason, by)

    def history(self) -> list[KillCommand]:
        """Every command, from the file log (and Redis's, merged by time)."""
        try:
            lines = (self.root / LOG_FILE).read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        out = [msgspec.json.decode(line, type=KillCommand) for line in lines if line.strip()]
        if self.redis is not None:
            seen = set(out)
            out += [c for c in self.redis.history() if c not in seen]
        return sorted(out, key=lambda c: c.ts_ns)

    def _command(self, action: str, reason: str, by: str) -> KillState:
        self.root.mkdir(parents=True, exist_ok=True)
        # one command at a time on this root (an operator's trip, a console reset, `sapphire
        # stop`): the log's order is then the state's, and a command that says it was
        # applied is the state that stands until the next one
        with open(self.root / LOG_FILE, "ab") as log:
            fcntl.flock(log.fileno(), fcntl.LOCK_EX)
            now = time.time_ns()
            command = KillCommand(action=action, reason=reason, by=by, ts_ns=now)
            log.write(msgspec.json.encode(command) + b"\n")  # the command first: the record
            log.flush()
            os.fsync(log.fileno())
            state = KillState(tripped=action == "trip", reason=reason, by=by, ts_ns=now)
            atomic_write_bytes(self._path, msgspec.json.encode(state))
            if self.redis is not None:  # in the same order as the file, on this root
                try:
                    self.redis.apply(command, state)
                except Exception as exc:
                    raise HalfApplied(self._path, exc) from exc
        # what this process just wrote is what its runs answer from now (a console reset
        # must not be undone by the trip read before it)
        self._halt = self._reason(state) if state.tripped else ""
        self._next_read = self._clock() + self._poll_s
        return state


class HalfApplied(Exception):
    """A command reached the switch's file but not Redis: runs reading this store root obey
    it, runs on other machines' roots (reading Redis) do not."""

    def __init__(self, path: Path, cause: BaseException) -> None:
        super().__init__(f"written to {path}, but NOT to Redis ({cause})"[:300])
        self.path = path


# what a run leaves in its folder under the store root (sapphire.kernel.assembly): its
# instruments, and its claim while it runs
_RUN_FILES = ("instruments.json", "claimed")


def is_run_folder(folder: Path) -> bool:
    """A run's folder under a store root: it holds what a run leaves there."""
    return folder.is_dir() and any((folder / name).exists() for name in _RUN_FILES)


def root_used(root: Path) -> bool:
    """Whether runs have used the store root ``root`` (``storage.root``): it holds a run's
    folder or the Parquet store. The switch's own files do not count (an operator's trip
    makes the folder), nor does any other folder: the store folder itself, a run's folder or
    the current directory would take a trip that no run reads."""
    try:
        for entry in root.iterdir():
            if entry.name == "store" and entry.is_dir():
                return True
            if is_run_folder(entry):
                return True
    except OSError:
        return False
    return False


def _redis_client(config: SystemConfig) -> Any:
    import redis as redis_lib
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # one attempt: the client's default retries with backoff turned one read of an
    # unreachable Redis into seconds, between every step of a run
    return redis_lib.Redis(**config.redis.client_kwargs(), retry=Retry(NoBackoff(), 0))


def system_kill_switch(config: SystemConfig) -> FirmKillSwitch:
    """The firm's switch of a system config: its store root, and Redis when configured."""
    redis = None
    if config.kill_switch.redis:
        redis = RedisKillSwitch(_redis_client(config), config.kill_switch.redis_key)
    return FirmKillSwitch(
        Path(config.storage.root).resolve(), redis, config.kill_switch.poll_ms / 1000
    )


class RunKillSwitch(FirmKillSwitch):
    """One run's own switch (``sapphire stop RUN_ID``), in ``<storage.root>/<run_id>/``: read
    between the steps of that run only (as the firm's, every ``kill_switch.poll_ms``), kept
    across restarts and ``--resume`` until reset."""

    def _reason(self, state: KillState) -> str:
        return f"run stopped: {state.reason or 'stop'}"


def run_switch_key(redis_key: str, store_root: str | os.PathLike[str], run_id: str) -> str:
    """The Redis key of run ``run_id``'s switch on the store root ``store_root``, as the
    config writes it (``storage.root``), lexically normalised (``./runs`` is ``runs``).

    Scoped by the root: keyed by the id alone, two runs of one id on two roots (two users'
    stores, a test and a real run) shared a switch, and stopping one halted the other. As
    written, not resolved: the switch in Redis is how ``sapphire stop`` reaches a run on
    another machine, whose actors resolve a relative root (the default ``runs``) in their
    own folder, or mount a shared store elsewhere; resolved on each side, the two keys
    differed and a stop said STOPPED to a run that never read it. Digested: the key has
    one length and names no one's folders."""
    root = os.fsencode(os.path.normpath(os.fspath(store_root)))
    return f"{redis_key}:run:{hashlib.blake2b(root, digest_size=8).hexdigest()}:{run_id}"


def run_kill_switch(config: SystemConfig, run_id: str) -> RunKillSwitch:
    """Run ``run_id``'s switch of a system config (in Redis too when the firm's is, at
    :func:`run_switch_key`): what a run reads between steps and ``sapphire stop`` writes."""
    root = Path(config.storage.root).resolve()
    redis = None
    if config.kill_switch.redis:
        key = run_switch_key(config.kill_switch.redis_key, config.storage.root, run_id)
        redis = RedisKillSwitch(_redis_client(config), key)
    return RunKillSwitch(root / run_id, redis, config.kill_switch.poll_ms / 1000)
