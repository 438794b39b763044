"""Point-in-time rules for LLM decisions: the model's knowledge cutoff, and feature as-of times.

Two ways a backtest can lie with a language model:

* the model was trained on text written after the replayed events, so it may "know" what
  happened next. Every engine config names its model's knowledge cutoff; a decision about an
  event before that date is flagged (``warn``, the default) or refused (``strict``).
* a prompt feature computed from data the agent could not have had at decision time (an
  out-of-order feed, a feature store keyed on the wrong clock). Each feature carries its
  as-of time; one later than the decision time refuses the request
  (:class:`LookaheadError`).

Pure functions: no clock, no I/O. Times are ns since the Unix epoch, UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, NamedTuple

PointInTimeMode = Literal["off", "warn", "strict"]
POINT_IN_TIME_MODES: tuple[str, ...] = ("off", "warn", "strict")


class PointInTimeError(ValueError):
    """A cutoff date or mode that cannot be used."""


def cutoff_ns(date: str) -> int:
    """``YYYY-MM-DD`` as ns since the epoch at the *end* of that day (UTC): the model may have
    read anything written on its cutoff day, so events on that day are still flagged."""
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise PointInTimeError(
            f"knowledge_cutoff {date!r} is no calendar date (YYYY-MM-DD)"
        ) from None
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(end.timestamp()) * 1_000_000_000


def iso_ns(ts_ns: int) -> str:
    """A timestamp as readable UTC text for reasons stored with a decision."""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CutoffVerdict(NamedTuple):
    """``flagged``: the event is before the model's cutoff; ``refused``: do not ask."""

    flagged: bool
    refused: bool
    reason: str


CLEAR = CutoffVerdict(False, False, "")


def check_cutoff(ts_event_ns: int, knowledge_cutoff: str, mode: str) -> CutoffVerdict:
    """Whether asking the model about an event at ``ts_event_ns`` is a point-in-time leak."""
    if mode not in POINT_IN_TIME_MODES:
        raise PointInTimeError(f"point_in_time must be one of {POINT_IN_TIME_MODES}, got {mode!r}")
    if mode == "off" or not knowledge_cutoff:
        return CLEAR
    if ts_event_ns >= cutoff_ns(knowledge_cutoff):
        return CLEAR
    reason = (
        f"point_in_time: event at {iso_ns(ts_event_ns)} is before the model's knowledge "
        f"cutoff {knowledge_cutoff} (llm.point_in_time={mode})"
    )
    return CutoffVerdict(True, mode == "strict", reason)


class LookaheadError(ValueError):
    """Prompt features whose as-of time is after the decision time (future data)."""

    def __init__(self, decision_ns: int, late: tuple[tuple[str, int], ...]) -> None:
        self.decision_ns = decision_ns
        self.late = late
        names = ", ".join(f"{name} as of {iso_ns(ts)}" for name, ts in late)
        super().__init__(f"lookahead: {names} after the decision time {iso_ns(decision_ns)}")


def check_as_of(decision_ns: int, as_of: tuple[tuple[str, int], ...]) -> None:
    """Raise :class:`LookaheadError` naming every feature known only after ``decision_ns``."""
    late = tuple((name, ts) for name, ts in as_of if ts > decision_ns)
    if late:
        raise LookaheadError(decision_ns, late)
