"""Which ccxt failures may be retried, and how long to wait (exponential backoff, jitter).

Three kinds of failure, because they call for different actions on an order:

* ``THROTTLED``: the venue refused the request before executing it (429/418 rate limits, a
  timestamp outside ``recvWindow``); wait (``Retry-After`` when sent) and send again.
* ``AMBIGUOUS``: the request may or may not have been executed (timeouts, dropped
  connections, 5xx, Binance -1000/-1007). Reads may simply be repeated; a new order must not
  be, until the venue has been asked whether it has it.
* ``FINAL``: a definite answer (bad parameters, insufficient funds, unknown order).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
import ccxt.async_support as ccxt
import msgspec

Sleep = Callable[[float], Awaitable[None]]


class Failure(enum.StrEnum):
    THROTTLED = "throttled"
    AMBIGUOUS = "ambiguous"
    FINAL = "final"


def classify(exc: BaseException) -> Failure:
    # DDoSProtection and RateLimitExceeded are NetworkErrors in ccxt: test them first.
    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded | ccxt.InvalidNonce):
        return Failure.THROTTLED
    if isinstance(exc, ccxt.NetworkError):
        return Failure.AMBIGUOUS
    if type(exc) is ccxt.ExchangeError and isinstance(exc.__cause__, aiohttp.ClientError):
        # the transport failed before any answer was read (a response cut off mid-body:
        # aiohttp's ClientPayloadError, which ccxt wraps as a bare ExchangeError): the
        # request may have been executed, so it is no answer at all
        return Failure.AMBIGUOUS
    if isinstance(exc, ccxt.ExchangeError):
        return Failure.FINAL
    if isinstance(exc, ccxt.OperationFailed):  # Binance -1000 "unknown error": status unknown
        return Failure.AMBIGUOUS
    return Failure.FINAL


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``delay(n)`` for the n-th retry (1-based) is ``d/2 + uniform(0, d/2)`` with
    ``d = min(cap_s, base_s * 2**(n-1))`` (equal jitter: spread out, yet growing), and
    never shorter than a venue's ``Retry-After``."""

    max_attempts: int = 6
    base_s: float = 0.25
    cap_s: float = 20.0
    # a venue's Retry-After longer than this (a 418 ban, an hour's 429) is no wait but a
    # refusal: the step returns, and an order decided now never leaves hours later
    max_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(f"invalid retry policy: {self}")
        if not self.max_wait_s >= 0:
            raise ValueError(f"invalid retry policy: max_wait_s must be >= 0: {self}")

    def too_long(self, retry_after_s: float | None) -> bool:
        """The venue asks for a longer wait than a step may take."""
        return retry_after_s is not None and retry_after_s > self.max_wait_s

    def delay(self, retry: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        span = min(self.cap_s, self.base_s * 2 ** max(0, retry - 1))
        wait: float = span / 2 + rng.uniform(0, span / 2)
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return wait


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds form; an HTTP date is ignored)."""
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None
            return seconds if seconds >= 0 else None
    return None
