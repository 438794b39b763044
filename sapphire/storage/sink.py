"""The storage sink's pure core: validate, de-duplicate, buffer and flush batches of rows.

Exactly-once rests on one rule: **a producer numbers the rows it writes to a table with a
strictly increasing ``seq``** (gaps allowed). The sink keeps, per ``(table, producer_id)``,
the highest ``seq`` it has accepted; a row at or below it is a duplicate (a replay after a
restart) and is dropped. The backend commits each flush together with the new high-water
marks, so a restarted sink reads ``last_committed`` back from the store and tells producers
where to resume; whatever they re-send below it is dropped, whatever is above is written.

The sink does no I/O itself: it hands typed frames to a :class:`SinkBackend`, and time comes
in as ``now_ns``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

from sapphire.storage.rows import Rejection, rows_to_frame
from sapphire.storage.schemas import SchemaMismatchError, table_schema

log = logging.getLogger(__name__)

Watermarks = dict[str, dict[str, int]]
"""table -> producer_id -> highest committed seq."""

NO_SEQ = -1


@dataclass(slots=True)
class CommitState:
    """What the store holds: the last flush's id and the high-water marks it committed."""

    flush_id: int = 0
    watermarks: Watermarks = field(default_factory=dict)

    def last(self, table: str, producer_id: str) -> int:
        return self.watermarks.get(table, {}).get(producer_id, NO_SEQ)


class SinkBackend(Protocol):
    """Where flushed rows go. ``commit`` must make rows and ``state`` durable together:
    after a crash, :meth:`recover` returns a state whose marks match exactly what is stored."""

    def recover(self) -> CommitState: ...

    def commit(
        self, flush_id: int, frames: Mapping[str, pl.DataFrame], state: CommitState
    ) -> None: ...


@dataclass(slots=True)
class SubmitResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    flushed: int = 0


@dataclass(slots=True)
class SinkStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    flushes: int = 0
    flushed_rows: int = 0
    flush_errors: int = 0
    last_error: str = ""


class StorageSink:
    """Buffers rows per table and flushes all tables at ``batch_size`` rows or ``max_delay_ns``.

    A failed flush (the backend raised) keeps every row buffered for the next try; only the
    loss of the process loses the buffer, and those rows are above ``last_committed`` so the
    producers re-send them.
    """

    def __init__(
        self,
        backend: SinkBackend,
        *,
        batch_size: int = 500,
        max_delay_ns: int = 1_000_000_000,
        auto_flush: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._backend = backend
        self._batch_size = batch_size
        self._max_delay_ns = max_delay_ns
        self._auto_flush = auto_flush
        self._committed = backend.recover()
        # accepted marks: committed plus buffered, so a replay of a buffered row is dropped too
        self._seen: Watermarks = {t: dict(m) for t, m in self._committed.watermarks.items()}
        self._buffers: dict[str, list[pl.DataFrame]] = {}
        self._buffered = 0
        self._oldest_ns: int | None = None
        self.stats = SinkStats()

    # ------------------------------------------------------------------ queries
    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def flush_id(self) -> int:
        return self._committed.flush_id

    def last_committed(self, table: str, producer_id: str) -> int:
        """Highest ``seq`` of ``producer_id`` durably stored in ``table`` (-1 if none)."""
        return self._committed.last(table, producer_id)

    def committed(self) -> Watermarks:
        return {t: dict(m) for t, m in self._committed.watermarks.items()}

    # ------------------------------------------------------------------ input
    def submit(self, table: str, rows: Sequence[object], *, now_ns: int) -> SubmitResult:
        """Add row dicts; malformed rows are rejected one by one with a reason, never raised."""
        schema = table_schema(table)
        converted = rows_to_frame(schema, rows)
        for rej in converted.rejected:
            log.warning("storage: rejected %s", rej.reason)
        result = self.submit_frame(table, converted.frame, now_ns=now_ns)
        result.rejected = converted.rejected
        self.stats.rejected += len(converted.rejected)
        return result

    def submit_frame(self, table: str, frame: pl.DataFrame, *, now_ns: int) -> SubmitResult:
        """Add a typed frame (the fast path). A frame with the wrong columns raises
        :class:`SchemaMismatchError` and changes nothing."""
        schema = table_schema(table)
        schema.check_frame(frame)
        frame = frame.select(schema.names).cast(schema.polars_schema)  # type: ignore[arg-type]
        if frame.height and frame["seq"].null_count() + frame["producer_id"].null_count():
            raise SchemaMismatchError(f"table {table!r}: producer_id and seq must not be null")
        incoming = frame.height
        fresh = self._drop_seen(table, frame)
        result = SubmitResult(accepted=fresh.height, duplicates=incoming - fresh.height)
        self.stats.accepted += result.accepted
        self.stats.duplicates += result.duplicates
        if fresh.height:
            self._buffers.setdefault(table, []).append(fresh)
            self._buffered += fresh.height
            if self._oldest_ns is None:
                self._oldest_ns = now_ns
        if self._auto_flush and self._buffered >= self._batch_size:
            result.flushed = self.flush(now_ns)
        return result

    def _drop_seen(self, table: str, frame: pl.DataFrame) -> pl.DataFrame:
        if frame.height == 0:
            return frame
        frame = frame.unique(subset=["producer_id", "seq"], keep="first", maintain_order=True)
        marks = self._seen.setdefault(table, {})
        if marks:
            floor = pl.col("producer_id").replace_strict(
                marks, default=NO_SEQ, return_dtype=pl.Int64
            )
            frame = frame.filter(pl.col("seq") > floor)
        if frame.height:
            tops = frame.group_by("producer_id").agg(pl.col("seq").max())
            for producer, top in tops.iter_rows():
                marks[producer] = max(top, marks.get(producer, NO_SEQ))
        return frame

    # ------------------------------------------------------------------ flushing
    def flush_due(self, now_ns: int) -> bool:
        if not self._buffered:
            return False
        if self._buffered >= self._batch_size:
            return True
        return self._oldest_ns is not None and now_ns - self._oldest_ns >= self._max_delay_ns

    def flush(self, now_ns: int) -> int:
        """Commit everything buffered; return the rows written (0 on a backend error)."""
        if not self._buffered:
            return 0
        frames = {t: pl.concat(parts) for t, parts in self._buffers.items() if parts}
        state = CommitState(
            self._committed.flush_id + 1,
            {t: dict(m) for t, m in self._committed.watermarks.items()},
        )
        for table, frame in frames.items():
            marks = state.watermarks.setdefault(table, {})
            tops = frame.group_by("producer_id").agg(pl.col("seq").max())
            for producer, top in tops.iter_rows():
                marks[producer] = max(top, marks.get(producer, NO_SEQ))
        try:
            self._backend.commit(state.flush_id, frames, state)
        except Exception as exc:  # the backend's failure must not lose the buffer
            self.stats.flush_errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("storage: flush %d failed, rows kept: %s", state.flush_id, exc)
            return 0
        written = self._buffered
        self._committed = state
        self._buffers.clear()
        self._buffered = 0
        self._oldest_ns = None
        self.stats.flushes += 1
        self.stats.flushed_rows += written
        return written
