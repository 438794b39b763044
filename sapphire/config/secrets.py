"""Secrets (exchange keys, Redis passwords) from the environment or secret files, never shown.

Configs name where a secret lives, never the secret: ``NAME`` in the environment holds the
value, or ``NAME_FILE`` names a file that does (the Docker/Kubernetes secret-file convention),
or a file ``NAME`` (lower-cased too) in a secrets directory such as ``/run/secrets``.

A loaded value is a :class:`Secret`: its ``repr``, ``str`` and ``format`` are redacted, msgspec
refuses to encode it unless given :func:`enc_hook` (which redacts), pickling refuses (Ray would
copy it into object stores and spill files), and :class:`RedactingFilter` masks a raw value that
reaches a log record anyway (an exception text, a URL with the key in it).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

REDACTED = "**********"


class SecretError(ValueError):
    """A secret that is missing or unreadable; the message never contains a secret."""


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# names an exchange key, a password or a token goes by: never a config value
SECRET_NAMES = frozenset(
    {
        "apikey",
        "api_key",
        "secret",
        "secret_key",
        "password",
        "passphrase",
        "private_key",
        "privatekey",
        "token",
        "access_token",
        "uid",
    }
)


def check_env_name(field: str, value: str) -> None:
    """``value`` of a config ``field`` that names where a secret lives (an environment
    variable, or a prefix of several) must be such a name. A secret typed there instead was
    echoed by every "not set: define <it>" error, in the CLI and in every Ray worker's log;
    this error never says the value."""
    if value and not _ENV_NAME.fullmatch(value):
        raise SecretError(
            f"{field}: not an environment variable name (letters, digits, _; the value is not "
            "shown): a config names where a secret is, the secret goes in that variable"
        )


def check_no_secret_keys(field: str, params: Mapping[str, Any]) -> None:
    """Refuse a secret written into a config's free-form ``params`` (an ``apiKey`` pasted
    into ``exchange.params``): it was recorded in the run folder's run-config.json before
    the venue's own check refused the field. Only the name is said."""
    for key, value in params.items():
        if str(key).lower() in SECRET_NAMES:
            raise SecretError(
                f"{field}.{key}: secrets never go in a config file; put them in the "
                "environment (exchange.params.credentials_prefix names the variables)"
            )
        if isinstance(value, Mapping):
            check_no_secret_keys(f"{field}.{key}", value)


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        """The value, for the one call that needs it (a client constructor, a signature)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a Secret is not serializable; load it where it is used")


def enc_hook(obj: Any) -> Any:
    """``msgspec.json.encode(cfg, enc_hook=enc_hook)``: secrets come out redacted."""
    if isinstance(obj, Secret):
        return REDACTED
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """JSON of a config (or anything holding secrets), safe to log or write."""
    return msgspec.json.encode(obj, enc_hook=enc_hook)


def load_secret(
    name: str,
    *,
    environ: Mapping[str, str] | None = None,
    secrets_dir: str | Path | None = None,
    required: bool = True,
) -> Secret | None:
    """The secret called ``name``: env ``NAME``, then the file named by env ``NAME_FILE``,
    then ``secrets_dir/NAME`` (or its lower-case name). Surrounding whitespace is stripped
    (files usually end with a newline). Missing: ``SecretError`` if required, else None."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value and value.strip():
        return Secret(value.strip())
    path_name = env.get(f"{name}_FILE")
    candidates = [Path(path_name)] if path_name else []
    if secrets_dir is not None:
        candidates += [Path(secrets_dir) / name, Path(secrets_dir) / name.lower()]
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            if path_name and path == Path(path_name):
                raise SecretError(f"{name}_FILE names {path}, which does not exist") from None
            continue
        except OSError as exc:
            raise SecretError(
                f"cannot read secret file {path} for {name}: {exc.strerror}"
            ) from None
        if text:
            return Secret(text)
        raise SecretError(f"secret file {path} for {name} is empty")
    if required:
        raise SecretError(f"secret {name} not set: define {name} or {name}_FILE")
    return None


class ExchangeKeys(msgspec.Struct, frozen=True, kw_only=True):
    """An exchange account's keys; dump it with :func:`dumps` (plain msgspec refuses)."""

    exchange: str
    api_key: Secret
    api_secret: Secret
    passphrase: Secret | None = None


def load_exchange_keys(
    exchange: str,
    *,
    environ: Mapping[str, str] | None = None,
    secrets_dir: str | Path | None = None,
) -> ExchangeKeys:
    """``SAPPHIRE_<EXCHANGE>_API_KEY``, ``..._API_SECRET`` and optional ``..._PASSPHRASE``
    (each also as ``..._FILE`` or a file in ``secrets_dir``)."""
    prefix = f"SAPPHIRE_{exchange.upper()}"
    opts: dict[str, Any] = {"environ": environ, "secrets_dir": secrets_dir}
    return ExchangeKeys(
        exchange=exchange,
        api_key=_required(f"{prefix}_API_KEY", opts),
        api_secret=_required(f"{prefix}_API_SECRET", opts),
        passphrase=load_secret(f"{prefix}_PASSPHRASE", required=False, **opts),
    )


def _required(name: str, opts: dict[str, Any]) -> Secret:
    secret = load_secret(name, required=True, **opts)
    if secret is None:  # unreachable: required=True raises
        raise SecretError(f"secret {name} not set")
    return secret


def redact_in_logs(values: Iterable[str]) -> None:
    """Mask these raw secret values in everything this process logs from now on: a
    :class:`RedactingFilter` on each of the root logger's handlers (where every logger's
    records are written; Ray's worker log included). Called where a process loads a secret
    it hands to a client (a venue's keys, a Redis password): a library's error or debug
    line that quotes it is masked. Repeated calls add to the masked values; a value masked
    already changes nothing (a client's settings are read at every connection)."""
    new = {v for v in values if v} - _REDACTED_VALUES
    if not new:
        return
    _REDACTED_VALUES.update(new)
    masking = RedactingFilter(Secret(v) for v in _REDACTED_VALUES)
    handlers: list[logging.Handler | None] = [*logging.getLogger().handlers]
    for handler in handlers or [logging.lastResort]:
        if handler is None:
            continue
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(masking)


_REDACTED_VALUES: set[str] = set()  # this process's masked values (never logged, never pickled)


class RedactingFilter(logging.Filter):
    """Masks the given secrets' raw values in every record it sees (message and arguments).
    Attach it to the handlers that write (a filter on a logger misses its children)."""

    def __init__(self, secrets: Iterable[Secret | None]) -> None:
        super().__init__()
        self._values = sorted(
            {s.reveal() for s in secrets if s is not None and len(s) >= 4}, key=len, reverse=True
        )

    def _mask(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._values:
            message = record.getMessage()
            masked = self._mask(message)
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self._mask(record.exc_text)
            if masked != message or record.args:
                record.msg, record.args = masked, None
        return True
