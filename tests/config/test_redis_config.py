"""Redis AUTH/TLS settings: validation, client kwargs, and AUTH really sent to the real Redis."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import redis

from sapphire.config.redis import RedisConfig
from sapphire.config.secrets import SecretError, dumps


def test_defaults_connect_to_the_local_redis_without_auth() -> None:
    config = RedisConfig()
    kwargs = config.client_kwargs(environ={})
    assert "password" not in kwargs and "ssl" not in kwargs
    try:
        assert redis.Redis(**kwargs).ping() is True
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")


def test_password_comes_from_the_environment_and_is_sent() -> None:
    raw = {"password_env": "SAPPHIRE_REDIS_PASSWORD", "username": "sapphire-test-nobody"}
    config = msgspec.convert(raw, RedisConfig)
    env = {"SAPPHIRE_REDIS_PASSWORD": "hunter2-wrong"}
    kwargs = config.client_kwargs(environ=env)
    assert kwargs["password"] == "hunter2-wrong" and kwargs["username"] == "sapphire-test-nobody"
    assert "hunter2" not in dumps(config).decode()  # the config holds only the env var name
    try:
        redis.Redis(**RedisConfig().client_kwargs(environ={})).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    # no such ACL user on the local Redis: WRONGPASS proves AUTH user+password was sent
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**kwargs).ping()
    with pytest.raises(SecretError, match="SAPPHIRE_REDIS_PASSWORD"):
        config.client_kwargs(environ={})


def test_tls_settings(tmp_path: Path) -> None:
    raw = {"tls": True, "ca_file": "ca.crt", "cert_file": "c.crt", "key_file": "c.key"}
    kwargs = msgspec.convert(raw, RedisConfig).client_kwargs(environ={})
    assert kwargs["ssl"] is True and kwargs["ssl_cert_reqs"] == "required"
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"]) == ("ca.crt", "c.crt")


@pytest.mark.parametrize(
    "raw",
    [
        {"cert_file": "c.crt", "tls": True},  # a certificate without its key
        {"ca_file": "ca.crt"},  # certificates without TLS
        {"port": 0},
        {"pasword_env": "X"},  # typo
    ],
)
def test_bad_settings_are_rejected(raw: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(raw, RedisConfig)
