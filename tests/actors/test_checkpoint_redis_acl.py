"""The checkpoint store's Redis client is built as every other Redis client of the product
(``RedisConfig.client_kwargs``): ``redis.username`` and the TLS settings reach it, as the
password did. It built its own client from the URL and the password: an ACL user's
password was sent as the default user's, and TLS settings were dropped.

Against the real Redis at 127.0.0.1:6379, with an ACL user of this test's own (a unique
name, allowed only its own key prefix), deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import SSLConnection

from actors.checkpoint import (
    CheckpointStoreError,
    RedisCheckpointStore,
    make_store,
    parse_redis_location,
    redis_location,
)
from actors.system import checkpoint_location
from sapphire.config.redis import RedisConfig
from sapphire.config.system import SystemConfig, parse_config

PASSWORD = "acl-pw-CANARY"
ENV = "CKPT_ACL_TEST_PW"


@dataclass(frozen=True)
class AclUser:
    name: str
    prefix: str  # the only keys it may touch


@pytest.fixture
def acl_user() -> Iterator[AclUser]:
    admin = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
    try:
        admin.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    tag = uuid.uuid4().hex[:10]
    user = AclUser(f"sapphire-ckpt-test-{tag}", f"sapphire-test:acl-{tag}")
    admin.execute_command(
        "ACL", "SETUSER", user.name, "on", f">{PASSWORD}", f"~{user.prefix}*", "+@all"
    )
    try:
        yield user
    finally:
        admin.execute_command("ACL", "DELUSER", user.name)
        keys = list(admin.scan_iter(f"{user.prefix}*"))
        if keys:
            admin.delete(*keys)


def _config(checkpoint_dir: str, **redis_settings: object) -> SystemConfig:
    return parse_config(
        {
            "data": {"source": "sample"},
            "agents": [{"id": "m", "kind": "momentum", "symbol": "BTCUSDT"}],
            "checkpoint_dir": checkpoint_dir,
            "redis": {"password_env": ENV, **redis_settings},
        }
    )


def test_an_acl_users_checkpoints_go_through_its_name_and_password(
    acl_user: AclUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    config = _config(f"redis://127.0.0.1:6379/0#{acl_user.prefix}", username=acl_user.name)
    location = checkpoint_location(config, "run1")
    assert PASSWORD not in location and acl_user.name in location
    store = make_store(location)
    assert store.create("owner", b"/root") is None
    assert store.create("owner", b"/other") == b"/root"
    store.save("coordinator", b"state")
    assert store.load("coordinator") == b"state"
    admin = redis.Redis(host="127.0.0.1", port=6379)
    assert admin.get(f"{acl_user.prefix}:run1:coordinator") == b"state"
    # it is the ACL user that got in, not the default one: outside the user's keys Redis
    # refuses, where the default user (no password here) is allowed everything
    outside = _config(
        f"redis://127.0.0.1:6379/0#elsewhere-{acl_user.prefix}", username=acl_user.name
    )
    with pytest.raises(CheckpointStoreError) as caught:
        make_store(checkpoint_location(outside, "run1")).save("coordinator", b"state")
    text = str(caught.value)
    assert "\n" not in text and PASSWORD not in text
    assert f"Redis refused user {acl_user.name!r} (redis.username)" in text
    assert "no permissions to access" in text  # Redis's own reason, NOPERM


def test_a_wrong_password_is_one_line_naming_the_settings(
    acl_user: AclUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "not-" + PASSWORD)
    config = _config(f"redis://127.0.0.1:6379/0#{acl_user.prefix}", username=acl_user.name)
    store = make_store(checkpoint_location(config, "run1"))
    # one operation: the three share the refusal's wording, and redis-py retries a refused
    # AUTH as a lost connection (about 3 s each)
    with pytest.raises(CheckpointStoreError) as caught:
        store.save("coordinator", b"x")
    text = str(caught.value)
    assert "\n" not in text and PASSWORD not in text
    assert text.startswith(f"checkpoint_dir redis://127.0.0.1:6379/0#{acl_user.prefix}:run1: ")
    assert f"Redis refused user {acl_user.name!r} (redis.username)" in text
    assert f"the password redis.password_env ({ENV}) names" in text
    assert "invalid username-password pair" in text
    assert (
        redis.Redis(host="127.0.0.1", port=6379).exists(f"{acl_user.prefix}:run1:coordinator") == 0
    )


def _pool_kwargs(store: object) -> dict[str, object]:
    assert isinstance(store, RedisCheckpointStore)
    return dict(store._client.connection_pool.connection_kwargs)


def test_tls_settings_reach_the_client_as_they_reach_the_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No TLS server here: the client's connection settings are checked (it connects lazily),
    against those of the one builder every other Redis client uses."""
    monkeypatch.setenv(ENV, PASSWORD)
    monkeypatch.chdir(tmp_path)
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-")
    redis_settings = {
        "username": "ckpt",
        "tls": True,
        "ca_file": "ca.pem",  # relative: resolved where the config is read
        "cert_file": "client.pem",
        "key_file": "client.key",
        "check_hostname": False,
    }
    config = _config("redis://redis.internal:6380/3#ck", **redis_settings)
    location = checkpoint_location(config, "run1")
    monkeypatch.chdir("/")  # an actor's working directory is another
    store = make_store(location)
    kwargs = _pool_kwargs(store)
    assert isinstance(store, RedisCheckpointStore)
    store_class = store._client.connection_pool.connection_class
    assert kwargs["host"] == "redis.internal" and kwargs["port"] == 6380 and kwargs["db"] == 3
    assert kwargs["ssl_ca_certs"] == str(tmp_path / "ca.pem")
    assert kwargs["ssl_certfile"] == str(tmp_path / "client.pem")
    assert kwargs["ssl_keyfile"] == str(tmp_path / "client.key")
    assert kwargs["ssl_check_hostname"] is False and kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["username"] == "ckpt" and kwargs["password"] == PASSWORD
    # the caches' client from the same settings: the same user, password and TLS
    monkeypatch.chdir(tmp_path)
    caches = msgspec.structs.replace(config.redis, host="redis.internal", port=6380, db=3)
    for key, value in caches.client_kwargs().items():
        if key == "ssl":  # redis-py keeps it as the connection's class
            assert store_class is SSLConnection
        elif key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):  # the same files
            assert kwargs[key] == str(Path(value).resolve()), key
        elif not key.startswith("socket_"):  # a checkpoint waits; the cache skips Redis
            assert kwargs[key] == value, key
    assert kwargs["socket_timeout"] is None


def test_rediss_turns_tls_on_and_redis_never_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    plain = make_store(checkpoint_location(_config("redis://127.0.0.1:6379/0#ck"), "r"))
    assert "ssl_cert_reqs" not in _pool_kwargs(plain)
    secure = make_store(checkpoint_location(_config("rediss://127.0.0.1:6379/0#ck"), "r"))
    assert _pool_kwargs(secure)["ssl_cert_reqs"] == "required"
    tls = make_store(checkpoint_location(_config("redis://127.0.0.1:6379/0#ck", tls=True), "r"))
    assert _pool_kwargs(tls)["ssl_cert_reqs"] == "required"


def test_a_user_named_twice_differently_or_an_unread_option_is_one_line() -> None:
    config = RedisConfig(username="alice")
    with pytest.raises(
        CheckpointStoreError, match=r"the URL's user 'bob' is not redis.username 'alice'"
    ):
        RedisCheckpointStore("redis://bob@127.0.0.1:6379/0", "p", config)
    assert (
        RedisCheckpointStore("redis://alice@127.0.0.1:6379/0", "p", config).settings.username
        == "alice"
    )
    assert RedisCheckpointStore("redis://bob@127.0.0.1:6379/0", "p").settings.username == "bob"
    for url in (
        "rediss://127.0.0.1:6379/0?ssl_cert_reqs=none",
        f"redis://127.0.0.1:6379/0?password={PASSWORD}",  # redis-py reads one there too
    ):
        with pytest.raises(CheckpointStoreError) as caught:
            RedisCheckpointStore(url, "p")
        assert "options after '?' in the URL are not read" in str(caught.value)
        assert PASSWORD not in str(caught.value)
    with pytest.raises(CheckpointStoreError) as caught:
        make_store(f"redis://:{PASSWORD}@127.0.0.1:6379/0#p")  # a location written by hand
    assert "no password in the URL" in str(caught.value) and PASSWORD not in str(caught.value)
    with pytest.raises(CheckpointStoreError, match=r"is not redis\[s\]://host\[:port\]\[/db\]"):
        RedisCheckpointStore("redis://127.0.0.1:6379/zero", "p")
    with pytest.raises(CheckpointStoreError, match=r"holds a '!'"):
        redis_location("redis://127.0.0.1:6379/0", "a!b", config)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@given(
    username=_text,
    password_env=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True) | st.just(""),
    folder=_text,
    tls=st.booleans(),
    check_hostname=st.booleans(),
    prefix=_text.filter(lambda p: "!" not in p),
)
def test_a_location_carries_the_connection_settings_whole(
    username: str, password_env: str, folder: str, tls: bool, check_hostname: bool, prefix: str
) -> None:
    """Any user name, and folders holding '!' or '#', come back from the location as they
    went in (the paths resolved): it is a string split on those characters."""
    base = Path("/tmp/ckpt-settings")
    files = {"ca_file": str(base / f"{folder}ca")} if tls else {}
    config = RedisConfig(
        username=username,
        password_env=password_env,
        secrets_dir=str(base / folder) if folder else "",
        tls=tls,
        check_hostname=check_hostname,
        **files,
    )
    url = "redis://127.0.0.1:6379/0"
    got_url, got_prefix, got = parse_redis_location(redis_location(url, prefix, config))
    assert (got_url, got_prefix) == (url, prefix or "sapphire:ckpt")
    resolved = {
        "secrets_dir": str(Path(config.secrets_dir).resolve()) if config.secrets_dir else "",
        "ca_file": str(Path(config.ca_file).resolve()) if config.ca_file else "",
    }
    assert got == msgspec.structs.replace(config, **resolved)
