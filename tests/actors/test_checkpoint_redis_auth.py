"""Checkpoints in a password-protected Redis: the password is read where redis.password_env
says, never written in ``checkpoint_dir`` (a URL's password was recorded in run-config.json,
shown in errors and passed to every actor)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import msgspec
import pytest
import redis

from actors.checkpoint import make_store
from actors.system import checkpoint_location
from sapphire.config.system import ConfigError, parse_config

PASSWORD = "ckpt-pw-CANARY"


@pytest.fixture(scope="module")
def protected_redis() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                redis.Redis(port=port, password=PASSWORD).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()  # only the server this test started, by its own handle
        proc.wait(10)


def _config(checkpoint_dir: str) -> object:
    return parse_config(
        {
            "data": {"source": "sample"},
            "agents": [{"id": "m", "kind": "momentum", "symbol": "BTCUSDT"}],
            "checkpoint_dir": checkpoint_dir,
            "redis": {"password_env": "CKPT_TEST_REDIS_PW"},
        }
    )


def test_the_store_reads_the_password_from_its_variable(
    protected_redis: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CKPT_TEST_REDIS_PW", PASSWORD)
    config = _config(f"redis://127.0.0.1:{protected_redis}/0#t")
    location = checkpoint_location(config, "run1")  # type: ignore[arg-type]
    assert PASSWORD not in location  # the variable's name travels, never its value
    store = make_store(location)
    store.save("coordinator", b"state")
    assert store.load("coordinator") == b"state"
    raw = redis.Redis(port=protected_redis, password=PASSWORD)
    assert raw.get("t:run1:coordinator") == b"state"


def test_a_password_in_the_url_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        _config(f"redis://:{PASSWORD}@127.0.0.1:6379/0#t")
    assert "checkpoint_dir: no password in the URL" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    # a user name alone, or none, is fine
    assert msgspec.to_builtins(_config("redis://127.0.0.1:6379/0#t"))["checkpoint_dir"]
