"""A real local Ray head started with ``ray start --head`` in a subprocess, for tests that need
a cluster process outside pytest (TLS, job submission). It runs with ``--block`` in its own
session and temp dir, so teardown ends exactly its processes (never ``ray stop``, which would
stop every Ray on the machine)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REDIS_PORT = 6379


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != REDIS_PORT:
            return port


def ray_bin(name: str = "ray") -> str:
    return str(Path(sys.executable).parent / name)


def wait_for_port(
    port: int,
    timeout_s: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Until something listens on ``port``; a ``proc`` that exits first (its port taken, a
    bad flag) fails at once, with the tail of its ``log_path``, instead of after the wait."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"ray start exited ({proc.returncode}) before port {port} listened: "
                    + _tail(log_path)
                ) from None
            time.sleep(0.3)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s}s: " + _tail(log_path))


def _tail(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None:
        return ""
    try:
        return " | ".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _pids_using(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@contextmanager
def ray_head(
    env: dict[str, str],
    extra_args: Sequence[str] = (),
    start_timeout_s: float = 60.0,
    port: int | None = None,
) -> Iterator[tuple[str, int]]:
    """Yields (gcs address, gcs port); the GCS port is free and never 6379."""
    port = port or free_port()
    assert port != REDIS_PORT
    temp_dir = tempfile.mkdtemp(prefix="sapphire-rayhead-", dir="/tmp")
    args = [
        ray_bin(),
        "start",
        "--head",
        f"--port={port}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        "--block",
        # the agents' ports are fixed by default (52365...): another Ray on this machine (a
        # parallel test worker) would keep them from starting ("No available agent")
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        *extra_args,
    ]
    log_path = Path(temp_dir) / "ray-start.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in finally
    head = subprocess.Popen(
        args,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        log.flush()
        wait_for_port(port, start_timeout_s, head, log_path)
        yield f"127.0.0.1:{port}", port
    finally:
        _stop(head, temp_dir)
        log.close()


def _stop(head: subprocess.Popen[bytes], temp_dir: str) -> None:
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=2)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    # Ray's daemons run in the head's session; a straggler is found by our unique temp dir
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _pids_using(temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.5)
    if head.poll() is None:
        head.kill()
    shutil.rmtree(temp_dir, ignore_errors=True)
