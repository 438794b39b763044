"""Redis connection settings: AUTH (ACL user + password) and TLS, with the password taken from
the environment or a secret file, never from the config file itself."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from sapphire.config.secrets import (
    Secret,
    SecretError,
    check_env_name,
    load_secret,
    redact_in_logs,
)

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class RedisConfigError(ValueError):
    """Redis settings that do not fit together."""


def redis_password(
    password_env: str, secrets_dir: str = "", *, environ: Mapping[str, str] | None = None
) -> Secret | None:
    """The Redis password named by ``redis.password_env`` (None without one): the variable,
    the file its ``NAME_FILE`` names, or a file of that name in ``redis.secrets_dir``. The one
    rule for every client of the configured Redis -- the caches, the kill switch and the
    checkpoint store (``actors.checkpoint``, from the settings its location carries), all
    built by :meth:`RedisConfig.client_kwargs` -- so a password one of them finds, each finds
    (the checkpoint store read the variable alone: a password kept in a secrets folder
    reached the caches and not it).

    Missing: :class:`SecretError`, one line naming the field to fix, never the value."""
    if not password_env:
        return None
    try:
        return load_secret(
            password_env, environ=environ, secrets_dir=secrets_dir or None, required=True
        )
    except SecretError as exc:
        if secrets_dir and not Path(secrets_dir).is_dir():
            raise SecretError(
                f"redis.secrets_dir: {secrets_dir} is not a directory (looked there for a "
                f"file {password_env}, the password redis.password_env names): {exc}"
            ) from None
        where = (
            f", nor a file {password_env} in redis.secrets_dir {secrets_dir}" if secrets_dir else ""
        )
        raise SecretError(f"redis.password_env: {exc}{where}") from None


class RedisConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 6379
    db: Annotated[int, msgspec.Meta(ge=0)] = 0
    username: str = ""  # Redis 6 ACL user; "" = the default user
    # The env var holding the password (or NAME_FILE naming a file); "" = no AUTH.
    password_env: str = ""
    secrets_dir: str = ""  # also look for a file named password_env here (/run/secrets)
    tls: bool = False
    ca_file: str = ""  # CA that signed the server's certificate (scripts/gen_tls_certs.sh)
    cert_file: str = ""  # client certificate, when the server requires one
    key_file: str = ""
    check_hostname: bool = True
    socket_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 0.05
    # where the cache hierarchy's L2 keys live (instrument specs, LLM decisions); a run's
    # tests and benchmarks give their own, so they can delete exactly their keys
    cache_prefix: Annotated[str, msgspec.Meta(min_length=1)] = "sapphire:cache:"

    def __post_init__(self) -> None:
        try:
            check_env_name("redis.password_env", self.password_env)
        except SecretError as exc:
            raise RedisConfigError(str(exc)) from None
        if bool(self.cert_file) != bool(self.key_file):
            raise RedisConfigError("redis: cert_file and key_file go together")
        if (self.ca_file or self.cert_file) and not self.tls:
            raise RedisConfigError("redis: certificate files given but tls is false")

    def password(self, environ: Mapping[str, str] | None = None) -> Secret | None:
        return redis_password(self.password_env, self.secrets_dir, environ=environ)

    def client_kwargs(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis(**kwargs)``. The password is revealed here, at
        the client's edge: pass the dict straight on, never log it."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
        }
        password = self.password(environ)
        if password is not None:
            redact_in_logs([password.reveal()])  # a client's error may quote its settings
            kwargs["password"] = password.reveal()
            if self.username:
                kwargs["username"] = self.username
        if self.tls:
            kwargs["ssl"] = True
            kwargs["ssl_cert_reqs"] = "required"
            kwargs["ssl_check_hostname"] = self.check_hostname
            for key, path in (
                ("ssl_ca_certs", self.ca_file),
                ("ssl_certfile", self.cert_file),
                ("ssl_keyfile", self.key_file),
            ):
                if path:
                    kwargs[key] = str(Path(path))
        return kwargs
