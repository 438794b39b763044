"""Checkpoint stores that every node of the cluster can reach.

An actor writes its snapshot after each completed step and reloads it in ``__init__`` when
Ray restarts it. Two stores: a directory (one machine, or a shared filesystem such as NFS
on a real cluster) and Redis (any cluster that can reach the Redis server). Writes are
atomic: a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sapphire.storage.parquet_backend import atomic_write_bytes, create_exclusive

if TYPE_CHECKING:
    from sapphire.config.redis import RedisConfig


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


class RedisCheckpointStore:
    """``password_env`` and ``secrets_dir``: where the server's password is (``redis.
    password_env`` and ``redis.secrets_dir``), read here by the rule every client of the
    configured Redis follows (:func:`sapphire.config.redis.redis_password`); a password
    written in the URL was recorded in run-config.json and shown in errors (the config
    refuses it)."""

    def __init__(
        self, url: str, prefix: str, password_env: str = "", secrets_dir: str = ""
    ) -> None:
        import redis

        from sapphire.config.redis import redis_password
        from sapphire.config.secrets import redact_in_logs

        secret = redis_password(password_env, secrets_dir)
        auth = {"password": secret.reveal()} if secret is not None else {}
        redact_in_logs(auth.values())
        self._client = redis.Redis.from_url(url, **auth)
        self._prefix = prefix

    def save(self, key: str, data: bytes, *, durable: bool = False) -> None:
        # Redis's own persistence (AOF appendfsync) decides how durable a write is; with
        # replicas, WAIT would add replication: out of this store's scope.
        self._client.set(f"{self._prefix}:{key}", data)

    def load(self, key: str) -> bytes | None:
        value = self._client.get(f"{self._prefix}:{key}")
        return value if isinstance(value, bytes) else None

    def create(self, key: str, data: bytes) -> bytes | None:
        if self._client.set(f"{self._prefix}:{key}", data, nx=True):
            return None
        return self.load(key)


def redis_location(url: str, prefix: str, config: RedisConfig) -> str:
    """The location of Redis checkpoints under key ``prefix`` at ``url``, as
    :func:`make_store` reads it: ``url#prefix[!PASSWORD_ENV[!SECRETS_DIR]]``. Where the
    password is travels (the variable's name, the secrets folder resolved here, where the
    config's relative paths mean something), never the password: each store reads it."""
    location = f"{url}#{prefix}"
    if config.password_env:
        location += f"!{config.password_env}"
        if config.secrets_dir:
            location += f"!{Path(config.secrets_dir).resolve()}"
    return location


def make_store(location: str) -> CheckpointStore:
    """``location``: a folder, or ``redis[s]://host:port/db#prefix[!PASSWORD_ENV[!SECRETS_DIR]]``
    (:func:`redis_location`, as ``actors.system.checkpoint_location`` writes it)."""
    if location.startswith(("redis://", "rediss://")):
        url, _, rest = location.partition("#")
        prefix, _, auth = rest.partition("!")
        # a variable's name holds no "!": what follows the next one is the folder, whole
        password_env, _, secrets_dir = auth.partition("!")
        return RedisCheckpointStore(url, prefix or "sapphire:ckpt", password_env, secrets_dir)
    return DirectoryCheckpointStore(location)
