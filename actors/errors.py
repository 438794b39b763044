"""How a failure that crossed Ray is told in one line."""

from __future__ import annotations


def root_cause(exc: BaseException) -> str:
    """The underlying exception's type and last line (at most 300 characters): a
    ``RayTaskError`` carries the actor's or trainable's own exception as ``cause``."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]
