"""The main job submitted to a real local head, the way a cluster runs it:
``ray job submit --working-dir . -- python -m actors.main --config ...`` with token auth on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from tests.ops.ray_head import free_port, ray_bin, ray_head, wait_for_port

REPO = Path(__file__).resolve().parents[2]
POLL = """
import sys, time
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
end = time.monotonic() + float(sys.argv[3])
status = client.get_job_status(sys.argv[2])
while not status.is_terminal() and time.monotonic() < end:
    time.sleep(1)
    status = client.get_job_status(sys.argv[2])
print("STATUS", status.value)
print(client.get_job_logs(sys.argv[2]))
"""


def _short_config(tmp_path: Path) -> Path:
    raw = msgspec.yaml.decode((REPO / "configs" / "demo.yaml").read_bytes())
    raw["data"]["max_events"] = 20_000
    raw["storage"]["root"] = str(tmp_path / "runs")
    path = tmp_path / "demo-short.yaml"
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


def _ray(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ray_bin(), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@pytest.mark.slow
def test_main_job_runs_through_ray_job_submit(tmp_path: Path) -> None:
    config = _short_config(tmp_path)
    dashboard = free_port()
    token_file = tmp_path / "auth_token"
    token_file.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    token_file.chmod(0o600)
    wrong_token = tmp_path / "wrong_token"
    wrong_token.write_text("0" * 64)
    # token auth (Ray's default for local clusters since 2.59) with the token in a file of the
    # test's own (RAY_AUTH_TOKEN_PATH), so ~/.ray/auth_token is neither read nor written; the
    # venv first on PATH so the job's `python` is this project's
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "COLUMNS": "160",  # rich would cut the summary to 80 columns in a job log
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    head_args = [
        "--num-cpus=2",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
    ]
    with ray_head(env, head_args) as (_, port):
        assert port != 6379
        wait_for_port(dashboard, 60)
        address = f"http://127.0.0.1:{dashboard}"
        job_id = f"sapphire-test-{uuid.uuid4().hex[:8]}"
        # without the token the jobs API refuses
        denied = _ray(
            "job", "list", "--address", address,
            env={**env, "RAY_AUTH_TOKEN_PATH": str(wrong_token)}, timeout=60,
        )  # fmt: skip
        assert denied.returncode != 0
        for _ in range(30):  # the head's job agent registers a little after the dashboard
            submit = _ray(
                "job", "submit", "--address", address, "--submission-id", job_id,
                "--working-dir", ".", "--no-wait",
                "--", "python", "-m", "actors.main", "--config", str(config),
                env=env, timeout=120,
            )  # fmt: skip
            if "No available agent" not in submit.stderr:
                break
            time.sleep(2)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        # one Python process polls (each `ray` CLI call costs seconds of start-up)
        poll = subprocess.run(
            [sys.executable, "-c", POLL, address, job_id, "300"],
            env=env, capture_output=True, text=True, timeout=360,
        )  # fmt: skip
        status, _, logs = poll.stdout.partition("\n")
        assert status == "STATUS SUCCEEDED", f"{status!r}\n{logs[-4000:]}\n{poll.stderr[-2000:]}"
    # the summary the main job prints
    assert "20,000 events" in logs, logs[-4000:]
    assert "Agents" in logs and "mm_as/BTCUSDT" in logs and "orders sent" in logs
    assert list((tmp_path / "runs").rglob("*.parquet")), "the job wrote its store"
