"""TLS: the certificate script, and a real Ray head with mutual TLS that a driver joins only
with certificates from the cluster's CA."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ops.ray_head import ray_head

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen_tls_certs.sh"
DRIVER = (
    "import ray, sys\n"
    "ray.init(address=sys.argv[1], log_to_driver=False)\n"
    "print('JOINED', ray.get(ray.remote(lambda: 41 + 1).options(num_cpus=0).remote()))\n"
)


def _certs(out: Path, *sans: str) -> Path:
    subprocess.run(["bash", str(SCRIPT), str(out), *sans], check=True, capture_output=True)
    return out


def _tls_env(certs: Path, prefix: str = "server") -> dict[str, str]:
    return {
        "RAY_USE_TLS": "1",
        "RAY_TLS_SERVER_CERT": str(certs / f"{prefix}.crt"),
        "RAY_TLS_SERVER_KEY": str(certs / f"{prefix}.key"),
        "RAY_TLS_CA_CERT": str(certs / "ca.crt"),
    }


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def test_script_issues_a_verifiable_chain(tmp_path: Path) -> None:
    certs = _certs(tmp_path / "a", "DNS:ray-head", "IP:10.1.2.3")
    assert (
        _openssl("verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.crt")).returncode
        == 0
    )
    server = _openssl("x509", "-in", str(certs / "server.crt"), "-noout", "-text").stdout
    assert "IP Address:127.0.0.1" in server and "DNS:ray-head" in server and "10.1.2.3" in server
    assert "TLS Web Server Authentication" in server
    client = _openssl("x509", "-in", str(certs / "client.crt"), "-noout", "-text").stdout
    assert "TLS Web Client Authentication" in client and "Server Authentication" not in client
    for key in certs.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    other = _certs(tmp_path / "b")
    assert (
        _openssl("verify", "-CAfile", str(other / "ca.crt"), str(certs / "server.crt")).returncode
        != 0
    )


@pytest.mark.slow
def test_tls_cluster_admits_only_drivers_with_its_certificates(tmp_path: Path) -> None:
    certs = _certs(tmp_path / "cluster")
    stranger = _certs(tmp_path / "stranger")  # a valid chain, from another CA
    # token auth off here so that TLS alone decides who joins
    base = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_gcs_rpc_server_connect_timeout_s": "5"}
    base = {k: v for k, v in base.items() if not k.startswith("RAY_TLS") and k != "RAY_USE_TLS"}
    head_env = {"RAY_AUTH_MODE": "disabled", **_tls_env(certs)}
    with ray_head(head_env, ["--num-cpus=1", "--include-dashboard=false"]) as (address, port):
        assert port != 6379
        member = subprocess.run(
            [sys.executable, "-c", DRIVER, address],
            env={**base, **_tls_env(certs)},
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert member.returncode == 0 and "JOINED 42" in member.stdout, member.stderr[-2000:]
        strangers = {"no certificates": base, "another CA": {**base, **_tls_env(stranger)}}
        outsiders = {
            name: subprocess.Popen(
                [sys.executable, "-c", DRIVER, address], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for name, env in strangers.items()
        }  # fmt: skip
        deadline = time.monotonic() + 12
        for name, proc in outsiders.items():
            try:
                out, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # a refused handshake retried forever: never joins
                proc.kill()
                out, _ = proc.communicate()
            assert "JOINED" not in out, f"a driver with {name} joined the TLS cluster"
