"""Checkpoints in a password-protected Redis: the password is read where redis.password_env
says, never written in ``checkpoint_dir`` (a URL's password was recorded in run-config.json,
shown in errors and passed to every actor)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis

from actors.checkpoint import make_store, redis_location
from actors.system import checkpoint_location
from sapphire.config.redis import RedisConfig
from sapphire.config.secrets import SecretError
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


@pytest.mark.parametrize("where", ["variable", "NAME_FILE", "secrets_dir", "secrets_dir, lower"])
def test_the_store_finds_the_password_where_the_caches_do(
    protected_redis: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    """Each place redis.password_env and redis.secrets_dir allow: the caches' client
    (RedisConfig.client_kwargs) and the checkpoint store both get in, with the same value.
    The store read the variable alone: a password in the secrets folder failed it."""
    name = "CKPT_TEST_REDIS_PW2"
    monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(f"{name}_FILE", raising=False)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    if where == "variable":
        monkeypatch.setenv(name, PASSWORD)
    elif where == "NAME_FILE":
        (tmp_path / "pw").write_text(PASSWORD + "\n")
        monkeypatch.setenv(f"{name}_FILE", str(tmp_path / "pw"))
    else:
        (secrets / (name.lower() if "lower" in where else name)).write_text(PASSWORD + "\n")
    config = RedisConfig(port=protected_redis, password_env=name, secrets_dir=str(secrets))
    cache = redis.Redis(**config.client_kwargs())
    assert cache.ping() is True
    location = redis_location(f"redis://127.0.0.1:{protected_redis}/0", "t2:run1", config)
    assert PASSWORD not in location  # where the password is travels, never the password
    store = make_store(location)
    store.save("coordinator", b"state")
    assert cache.get("t2:run1:coordinator") == b"state"


def test_a_wrong_secrets_dir_is_one_line_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CKPT_TEST_REDIS_PW3", raising=False)
    missing = tmp_path / "no-such-folder"
    config = RedisConfig(password_env="CKPT_TEST_REDIS_PW3", secrets_dir=str(missing))
    location = redis_location("redis://127.0.0.1:6379/0", "t3:run1", config)
    for attempt in (config.client_kwargs, lambda: make_store(location)):
        with pytest.raises(SecretError) as caught:
            attempt()
        text = str(caught.value)
        assert text.startswith(f"redis.secrets_dir: {missing} is not a directory")
        assert "\n" not in text and "CKPT_TEST_REDIS_PW3" in text


def test_a_runs_checkpoints_find_the_password_in_its_secrets_dir(
    protected_redis: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The location a run gives its actors names the secrets folder too: with the password
    only in a file there (Docker / Kubernetes secrets), the run's checkpoint store got in
    nowhere while its caches did."""
    monkeypatch.delenv("CKPT_TEST_REDIS_PW", raising=False)
    monkeypatch.delenv("CKPT_TEST_REDIS_PW_FILE", raising=False)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "CKPT_TEST_REDIS_PW").write_text(PASSWORD + "\n")
    config = parse_config(
        {
            "data": {"source": "sample"},
            "agents": [{"id": "m", "kind": "momentum", "symbol": "BTCUSDT"}],
            "checkpoint_dir": f"redis://127.0.0.1:{protected_redis}/0#s",
            "redis": {"password_env": "CKPT_TEST_REDIS_PW", "secrets_dir": str(secrets)},
        }
    )
    location = checkpoint_location(config, "run2")
    assert PASSWORD not in location and str(secrets.resolve()) in location
    store = make_store(location)
    store.save("coordinator", b"kept")
    assert redis.Redis(port=protected_redis, password=PASSWORD).get("s:run2:coordinator") == b"kept"
