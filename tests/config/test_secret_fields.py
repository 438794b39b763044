"""A config names where a secret lives, never the secret: a key pasted into a config is
refused at load, before anything records the config (run-config.json kept the key when the
venue's own check refused it later), and a field that names an environment variable must
be a name (a password typed there was echoed by every "not set: define <it>" error, in the
CLI and every Ray worker's log). No error says the value."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from sapphire.config.redis import RedisConfig, RedisConfigError
from sapphire.config.system import ConfigError, parse_config

CANARY = "hunter2-CANARY"


def _raw(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "data": {"source": "sample"},
        "agents": [{"id": "m", "kind": "momentum", "symbol": "BTCUSDT"}],
    }
    raw.update(over)
    return raw


@pytest.mark.parametrize("name", ["apiKey", "secret", "password", "api_key"])
def test_a_key_in_exchange_params_is_refused_by_name(name: str) -> None:
    raw = _raw(exchange={"kind": "ccxt", "params": {"exchange_id": "binance", name: CANARY}})
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert f"exchange.params.{name}: secrets never go in a config file" in str(caught.value)
    assert CANARY not in str(caught.value)


def test_a_nested_secret_is_refused_too() -> None:
    raw = _raw(storage={"backend": "bigquery", "params": {"auth": {"private_key": CANARY}}})
    with pytest.raises(ConfigError, match=r"storage\.params\.auth\.private_key") as caught:
        parse_config(raw)
    assert CANARY not in str(caught.value)


def test_a_password_env_must_name_a_variable() -> None:
    with pytest.raises(RedisConfigError) as caught:
        RedisConfig(password_env=CANARY)
    assert "redis.password_env: not an environment variable name" in str(caught.value)
    assert CANARY not in str(caught.value)
    assert RedisConfig(password_env="REDIS_PASSWORD").password_env
    with pytest.raises(ConfigError) as loaded:  # in a system config: said with its path
        parse_config(_raw(redis={"password_env": CANARY}))
    assert CANARY not in str(loaded.value) and "password_env" in str(loaded.value)


def test_credentials_fields_must_name_variables() -> None:
    from sapphire.adapters.ccxt_gateway import CcxtGatewayConfig
    from sapphire.adapters.stores import BigQueryParams, StoreError

    with pytest.raises(StoreError) as caught:
        BigQueryParams(project="p", dataset="d", credentials_env=CANARY)
    assert CANARY not in str(caught.value) and "credentials_env" in str(caught.value)
    with pytest.raises(msgspec.ValidationError) as bad:
        msgspec.convert({"credentials_prefix": CANARY}, CcxtGatewayConfig)
    assert CANARY not in str(bad.value) and "credentials_prefix" in str(bad.value)
