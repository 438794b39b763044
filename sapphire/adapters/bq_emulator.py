"""Start the ``bqemulator`` BigQuery emulator offline, on loopback, for tests and benchmarks.

``bqemulator`` 1.4 installs DuckDB's ``spatial`` extension at start-up, which needs the
internet; without it the process exits. Running it through this module replaces that step
with a no-op first (GEOGRAPHY columns are then unsupported, which Sapphire never uses)::

    python -m sapphire.adapters.bq_emulator start --rest-port 9050 --grpc-port 9060 --project test

:func:`start_emulator` does the same in a subprocess on free loopback ports and waits until
the REST endpoint answers. The emulator is a development tool (``pip install bqemulator``);
nothing else in Sapphire imports it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Emulator:
    endpoint: str  # http://127.0.0.1:PORT, the client's ``api_endpoint``
    project: str
    process: subprocess.Popen[bytes]


def _ready(endpoint: str, project: str) -> bool:
    url = f"{endpoint}/bigquery/v2/projects/{project}/datasets"
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def start_emulator(
    *, project: str = "test", timeout_s: float = 60.0, log_path: Path | None = None
) -> Iterator[Emulator]:
    """Run the emulator (ephemeral, in-memory) for the duration of the ``with`` block."""
    rest, grpc = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "sapphire.adapters.bq_emulator",
        "start",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        str(rest),
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        str(grpc),
        "--project",
        project,
        "--ephemeral",
        "--log-level",
        "warning",
    ]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    endpoint = f"http://127.0.0.1:{rest}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(endpoint, project):
            if proc.poll() is not None:
                raise RuntimeError(f"bqemulator exited with {proc.returncode} (log: {log_path})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bqemulator not ready after {timeout_s} s")
            time.sleep(0.1)
        yield Emulator(endpoint, project, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not subprocess.DEVNULL:
            log.close()  # type: ignore[union-attr]


def main() -> None:
    from bqemulator.cli import main as cli_main
    from bqemulator.storage.engine import DuckDBEngine

    # Offline: skip the spatial extension download (GEOGRAPHY unsupported as a consequence).
    DuckDBEngine._load_spatial = lambda self: None  # type: ignore[method-assign]
    cli_main()


if __name__ == "__main__":
    main()
