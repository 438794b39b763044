"""Checkpoint stores that every node of the cluster can reach.

An actor writes its snapshot after each completed step and reloads it in ``__init__`` when
Ray restarts it. Two stores: a directory (one machine, or a shared filesystem such as NFS
on a real cluster) and Redis (any cluster that can reach the Redis server). Writes are
atomic: a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import msgspec

from sapphire.config.redis import RedisConfig
from sapphire.storage.files import atomic_write_bytes, create_exclusive


class CheckpointStore(Protocol):
    def save(self, key: str, data: bytes, *, durable: bool = False) -> None:
        """``durable``: on stable storage before returning (fsync), as a write-ahead
        journal must be; a plain checkpoint only needs to survive the process."""

    def load(self, key: str) -> bytes | None: ...

    def create(self, key: str, data: bytes) -> bytes | None:
        """Write ``key`` only if it does not exist (one writer wins, whole); returns None
        when this call wrote it, else the value that was there."""


class DirectoryCheckpointStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, key: str, data: bytes, *, durable: bool = False) -> None:
        atomic_write_bytes(self.root / f"{key}.ckpt", data, durable=durable)

    def load(self, key: str) -> bytes | None:
        try:
            return (self.root / f"{key}.ckpt").read_bytes()
        except FileNotFoundError:
            return None

    def create(self, key: str, data: bytes) -> bytes | None:
        return None if create_exclusive(self.root / f"{key}.ckpt", data) else self.load(key)


class CheckpointStoreError(ValueError):
    """Redis refused the checkpoint store (a wrong password, an ACL user without the keys),
    or its location cannot be read: one line naming the settings to fix, never a secret."""


# what a checkpoint client needs from the ``redis`` settings beside the URL's server: the ACL
# user, where its password is (never the password) and TLS -- the fields by which
# :meth:`RedisConfig.client_kwargs` builds the caches' and the kill switch's clients
_CONNECTION_FIELDS = (
    "username",
    "password_env",
    "secrets_dir",
    "tls",
    "ca_file",
    "cert_file",
    "key_file",
    "check_hostname",
)
_PATH_FIELDS = frozenset({"secrets_dir", "ca_file", "cert_file", "key_file"})


def server_settings(url: str, config: RedisConfig) -> RedisConfig:
    """``config`` aimed at the server ``url`` names (host, port, db): the Redis settings a
    checkpoint client is built from, so the ACL user, the password and TLS reach it exactly
    as they reach every other client of the product. ``rediss://`` turns TLS on; a plain
    ``redis://`` never turns ``redis.tls`` off (the password would cross in clear). A user
    in the URL stands for ``redis.username``; two different ones are refused."""
    parts = urlsplit(url)
    if parts.query:  # redis-py's own options: the client is built from the settings alone
        raise CheckpointStoreError(  # not shown: redis-py reads a password there too
            "checkpoint_dir: options after '?' in the URL are not read: the redis settings "
            "(redis.username, redis.tls, redis.ca_file, ...) configure every Redis client"
        )
    if parts.password is not None:  # the config refuses it; a location written by hand too
        raise CheckpointStoreError(
            "checkpoint_dir: no password in the URL (it is recorded and shown); set "
            "redis.password_env, which the checkpoint store reads"
        )
    user = unquote(parts.username or "")
    if user and config.username and user != config.username:
        raise CheckpointStoreError(
            f"checkpoint_dir: the URL's user {user!r} is not redis.username "
            f"{config.username!r}: name the user in one place"
        )
    try:
        port = parts.port or 6379
        db = int(parts.path.lstrip("/") or 0)
    except ValueError:
        raise CheckpointStoreError(
            f"checkpoint_dir: {url} is not redis[s]://host[:port][/db] (port and db numbers)"
        ) from None
    return msgspec.structs.replace(
        config,
        host=parts.hostname or "localhost",
        port=port,
        db=db,
        username=user or config.username,
        tls=config.tls or parts.scheme == "rediss",
    )


class RedisCheckpointStore:
    """Checkpoints under ``prefix`` on the Redis server ``url`` names, through a client built
    by the one builder of the product's Redis clients (:meth:`RedisConfig.client_kwargs`,
    ``config``'s ``redis`` settings at :func:`server_settings`): its ACL user, the password
    read by the one rule (``redis.password_env``, ``redis.secrets_dir``) and TLS, as the
    caches and the kill switch have them. This store built its own client from the URL and
    the password alone: ``redis.username`` and the TLS settings never reached it."""

    def __init__(self, url: str, prefix: str, config: RedisConfig | None = None) -> None:
        import redis

        self.settings = server_settings(url, config or RedisConfig())
        self._where = f"{url}#{prefix}"  # the config refuses a password in the URL
        kwargs = self.settings.client_kwargs()
        # the caches' timeout is an accelerator's (skip Redis after 50 ms); a checkpoint is
        # no accelerator: a large snapshot waits for Redis, as before (redis-py's default)
        kwargs.update(socket_timeout=None, socket_connect_timeout=None)
        self._client = redis.Redis(**kwargs)
        self._prefix = prefix

    @contextlib.contextmanager
    def _refusals(self) -> Iterator[None]:
        """Redis's refusals of this client's credentials, as one line naming the settings;
        an actor's restart, or the run's start, failed with a redis-py traceback."""
        from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError

        try:
            yield
        except (AuthenticationError, AuthorizationError, NoPermissionError) as exc:
            user = self.settings.username or "default"
            how = (
                f"the password redis.password_env ({self.settings.password_env}) names"
                if self.settings.password_env
                else "no password (redis.password_env is not set)"
            )
            reason = " ".join(str(exc).split())
            raise CheckpointStoreError(
                f"checkpoint_dir {self._where}: Redis refused user {user!r} (redis.username) "
                f"with {how}: {reason}"
            ) from None

    def save(self, key: str, data: bytes, *, durable: bool = False) -> None:
        # Redis's own persistence (AOF appendfsync) decides how durable a write is; with
        # replicas, WAIT would add replication: out of this store's scope.
        with self._refusals():
            self._client.set(f"{self._prefix}:{key}", data)

    def load(self, key: str) -> bytes | None:
        with self._refusals():
            value = self._client.get(f"{self._prefix}:{key}")
        return value if isinstance(value, bytes) else None

    def create(self, key: str, data: bytes) -> bytes | None:
        with self._refusals():
            if self._client.set(f"{self._prefix}:{key}", data, nx=True):
                return None
        return self.load(key)


def redis_location(url: str, prefix: str, config: RedisConfig) -> str:
    """The location of Redis checkpoints under key ``prefix`` at ``url``, as
    :func:`make_store` reads it: ``url#prefix``, then ``!`` and the ``redis`` connection
    settings that differ from the defaults, as JSON (the ACL user, where the password is,
    TLS and its files; folders and files resolved here, where the config's relative paths
    mean something). Where the password is travels, never the password: each store reads it
    (an actor's location is a string, passed to every actor, shown in errors)."""
    if "!" in prefix:  # the settings follow the first one
        raise CheckpointStoreError(
            f"checkpoint_dir: the key prefix {prefix!r} holds a '!' (it ends the prefix in a "
            "checkpoint location): choose another"
        )
    defaults = RedisConfig()
    settings: dict[str, object] = {}
    for name in _CONNECTION_FIELDS:
        value = getattr(config, name)
        if name in _PATH_FIELDS and value:
            value = str(Path(value).resolve())
        if value != getattr(defaults, name):
            settings[name] = value
    location = f"{url}#{prefix}"
    return f"{location}!{msgspec.json.encode(settings).decode()}" if settings else location


def parse_redis_location(location: str) -> tuple[str, str, RedisConfig]:
    """``(url, prefix, settings)`` of a location :func:`redis_location` wrote."""
    url, _, rest = location.partition("#")
    prefix, _, encoded = rest.partition("!")  # a prefix holds no "!": JSON follows, whole
    try:
        settings = msgspec.json.decode(encoded, type=RedisConfig) if encoded else RedisConfig()
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointStoreError(f"checkpoint location {url}#{prefix}: {exc}") from None
    return url, prefix or "sapphire:ckpt", settings


def make_store(location: str) -> CheckpointStore:
    """``location``: a folder, or ``redis[s]://host:port/db#prefix[!SETTINGS]``
    (:func:`redis_location`, as ``actors.system.checkpoint_location`` writes it)."""
    if location.startswith(("redis://", "rediss://")):
        return RedisCheckpointStore(*parse_redis_location(location))
    return DirectoryCheckpointStore(location)
