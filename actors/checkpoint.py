"""Checkpoint stores that every node of the cluster can reach.

An actor writes its snapshot after each completed step and reloads it in ``__init__`` when
Ray restarts it. Two stores: a directory (one machine, or a shared filesystem such as NFS
on a real cluster) and Redis (any cluster that can reach the Redis server). Writes are
atomic: a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from sapphire.storage.parquet_backend import atomic_write_bytes, create_exclusive


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
    """``password_env``: the variable (or ``NAME_FILE``) holding the server's password, read
    here; a password written in the URL was recorded in run-config.json and shown in errors
    (the config refuses it)."""

    def __init__(self, url: str, prefix: str, password_env: str = "") -> None:
        import redis

        from sapphire.config.secrets import load_secret, redact_in_logs

        secret = load_secret(password_env) if password_env else None
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


def make_store(location: str) -> CheckpointStore:
    """``location``: a folder, or ``redis[s]://host:port/db#prefix[!PASSWORD_ENV]`` (as
    ``actors.system.checkpoint_location`` writes it)."""
    if location.startswith(("redis://", "rediss://")):
        url, _, rest = location.partition("#")
        prefix, _, password_env = rest.partition("!")
        return RedisCheckpointStore(url, prefix or "sapphire:ckpt", password_env)
    return DirectoryCheckpointStore(location)
