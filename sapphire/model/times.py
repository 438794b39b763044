"""One way to write a time for people: ``YYYY-MM-DD HH:MM:SS[.f...] UTC`` from nanoseconds since
the epoch, exact (integer arithmetic: ``ns / 1e9`` is a float that can be a microsecond off)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_text(ts_ns: int, digits: int = 0) -> str:
    """The time of ``ts_ns`` in UTC with ``digits`` (0-9) digits of the second's fraction."""
    if not 0 <= digits <= 9:
        raise ValueError(f"digits must be 0-9, got {digits}")
    seconds, ns = divmod(int(ts_ns), 1_000_000_000)
    text = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")
    if digits:
        text += "." + f"{ns:09d}"[:digits]
    return text + " UTC"
