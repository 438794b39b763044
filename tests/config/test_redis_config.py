"""Redis AUTH/TLS settings: validation, client kwargs, and AUTH really sent to the real Redis."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.config.redis import RedisConfig, redis_password
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


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    in_env=st.booleans(),
    in_named_file=st.booleans(),
    in_folder=st.sampled_from(["", "REDIS_PW_T", "redis_pw_t"]),
)
def test_the_password_is_where_password_env_and_secrets_dir_say_first_found_first(
    tmp_path: Path, in_env: bool, in_named_file: bool, in_folder: str
) -> None:
    """The one rule (redis_password) for every client of the Redis: the variable, then the
    file ``NAME_FILE`` names, then a file of that name (or lower-cased) in secrets_dir."""
    folder = tmp_path / "secrets"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    environ: dict[str, str] = {}
    if in_env:
        environ["REDIS_PW_T"] = " from-env\n"
    if in_named_file:
        (tmp_path / "named").write_text("from-named-file\n")
        environ["REDIS_PW_T_FILE"] = str(tmp_path / "named")
    if in_folder:
        (folder / in_folder).write_text("from-folder\n")
    config = RedisConfig(password_env="REDIS_PW_T", secrets_dir=str(folder))
    want = (
        "from-env"
        if in_env
        else "from-named-file"
        if in_named_file
        else "from-folder"
        if in_folder
        else None
    )
    if want is None:
        with pytest.raises(SecretError, match=r"^redis\.password_env: .*REDIS_PW_T"):
            redis_password("REDIS_PW_T", str(folder), environ=environ)
        return
    secret = redis_password("REDIS_PW_T", str(folder), environ=environ)
    assert secret is not None and secret.reveal() == want
    assert config.client_kwargs(environ=environ)["password"] == want
    assert redis_password("", str(folder), environ=environ) is None  # no AUTH


def test_a_wrong_secrets_dir_says_which_field(tmp_path: Path) -> None:
    config = RedisConfig(password_env="REDIS_PW_T", secrets_dir=str(tmp_path / "nope"))
    with pytest.raises(SecretError) as caught:
        config.client_kwargs(environ={})
    text = str(caught.value)
    assert text.startswith(f"redis.secrets_dir: {tmp_path / 'nope'} is not a directory")
    assert "\n" not in text
    # the variable set, the folder is not needed: no error
    assert config.client_kwargs(environ={"REDIS_PW_T": "pw"})["password"] == "pw"
