"""API credentials from the environment or secret files, never printed.

``<PREFIX>_API_KEY`` / ``<PREFIX>_API_SECRET`` hold the values, or ``<PREFIX>_API_KEY_FILE`` /
``<PREFIX>_API_SECRET_FILE`` name files that do (Docker/Kubernetes secrets). Configs carry
only the prefix, so no secret ever sits in a config file, a log line or a repr.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class CredentialsError(ValueError):
    """Credentials are missing or unreadable (the message never contains a secret)."""


class ApiCredentials:
    __slots__ = ("_key", "_secret")

    def __init__(self, api_key: str, secret: str) -> None:
        if not api_key or not secret:
            raise CredentialsError("api key and secret must both be non-empty")
        self._key = api_key
        self._secret = secret

    @classmethod
    def from_env(
        cls, prefix: str = "SAPPHIRE_BINANCE", environ: Mapping[str, str] | None = None
    ) -> ApiCredentials:
        env = os.environ if environ is None else environ
        return cls(_read(env, f"{prefix}_API_KEY"), _read(env, f"{prefix}_API_SECRET"))

    def ccxt_config(self) -> dict[str, str]:
        return {"apiKey": self._key, "secret": self._secret}

    def redacting_logger(self, logger: logging.Logger) -> logging.LoggerAdapter[logging.Logger]:
        """``logger`` with the key and secret masked (ccxt's debug log prints headers).
        An adapter, not a filter: it dies with its owner instead of staying on a global."""
        return _Redacting(logger, (self._key, self._secret))

    @property
    def api_key_hint(self) -> str:
        """Enough of the key to tell accounts apart in logs."""
        return self._key[:4] + "…"

    def __repr__(self) -> str:
        return f"ApiCredentials(api_key={self.api_key_hint!r}, secret='***')"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling (Ray) would copy the secret into object stores and spill files.
        raise TypeError("ApiCredentials are not serializable; load them where they are used")


class _Redacting(logging.LoggerAdapter[logging.Logger]):
    def __init__(self, logger: logging.Logger, secrets: tuple[str, ...]) -> None:
        super().__init__(logger, {})
        self._secrets = secrets

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        self.logger.log(level, "%s", text, **kwargs)


def _read(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if value:
        return value.strip()
    path = env.get(f"{name}_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CredentialsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
        if text:
            return text
        raise CredentialsError(f"{name}_FILE: {path} is empty")
    raise CredentialsError(f"set {name} or {name}_FILE")
