"""``serve run serve_configs/llm_cpu.yaml`` starts a local cluster and answers over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from sapphire.llm.decision import parse_decision
from sapphire.llm.prompt import MarketFeatures, build_prompt

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_run_cpu_config_answers_a_decision_request(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "serve_configs" / "llm_cpu.yaml").read_text())
    port = _free_port()  # 8000 may be taken by another Serve on this machine
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    config["proxy_location"] = "HeadOnly"
    path = tmp_path / "llm_cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_ADDRESS": "local"}  # a fresh cluster, never someone else's
    serve_bin = Path(sys.executable).with_name("serve")
    proc = subprocess.Popen(
        [str(serve_bin), "run", str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    prompt = build_prompt(
        MarketFeatures(symbol="BTCUSDT", ts_event_ns=0, mid=28165.475, spread_bps=0.0036)
    )
    body = json.dumps({"system": prompt.system, "user": prompt.user}).encode()
    reply = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/llm",
                data=body,
                headers={"content-type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    reply = json.loads(resp.read())
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGINT)  # serve run shuts down Serve and its own cluster
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert reply is not None, log[-3000:]
    assert reply["error"] == ""
    assert parse_decision(reply["text"]).ok, reply
