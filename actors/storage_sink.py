"""StorageSinkActor: batches rows into the store (Parquet by default, BigQuery in production).

Exactly-once comes from the pure ``StorageSink``: rows carry (producer_id, seq), the store
keeps a committed watermark per table and producer, and rows at or below it are dropped.
Each reply names this incarnation and the producer's watermarks, so a producer learns when a
restart lost the buffer and re-sends what is not committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import polars as pl
import ray

from actors import metrics
from sapphire.storage.sink import StorageSink

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class StorageSinkActor:
    def __init__(self, build_backend: Any, batch_rows: int, flush_interval_s: float) -> None:
        self.incarnation = uuid.uuid4().hex
        self.sink = StorageSink(
            build_backend(),
            batch_size=batch_rows,
            max_delay_ns=int(flush_interval_s * 1e9),
        )
        self._flush_interval_s = flush_interval_s
        self._flusher: asyncio.Task[None] | None = None
        self.metrics = metrics.SinkMetrics()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval_s)
            now_ns = time.time_ns()
            if self.sink.flush_due(now_ns):
                self.sink.flush(now_ns)
            self.metrics.on_state(self.sink, now_ns)

    def _watermarks(self, producer_id: str) -> dict[str, int]:
        return {
            table: marks[producer_id]
            for table, marks in self.sink.committed().items()
            if producer_id in marks
        }

    def _submit(self, tables: dict[str, Any]) -> None:
        """Typed frames take the fast path; lists of row dicts are validated row by row,
        so one malformed row is rejected and counted while the valid ones are kept."""
        wall_ns = time.time_ns()
        for table, rows in tables.items():
            if isinstance(rows, pl.DataFrame):
                if rows.height:
                    self.sink.submit_frame(table, rows, now_ns=wall_ns)
            elif rows:
                self.sink.submit(table, rows, now_ns=wall_ns)
        self.metrics.on_write(tables)
        self.metrics.on_state(self.sink, wall_ns)

    async def write(
        self,
        producer_id: str,
        tables: dict[str, Any],
        now_ns: int,
        expected_incarnation: str = "",
    ) -> tuple[str, dict[str, int], bool]:
        """Accept rows unless the producer believes it talks to another incarnation: then
        rows it sent before may be lost from this one's buffer, and accepting newer rows
        first would move the de-duplication watermark past them. The producer re-sends
        everything not committed instead (third element False)."""
        if self._flusher is None and self._flush_interval_s > 0:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())
        if expected_incarnation and expected_incarnation != self.incarnation:
            return self.incarnation, self._watermarks(producer_id), False
        self._submit(tables)
        return self.incarnation, self._watermarks(producer_id), True

    async def flush(self, producer_id: str, tables: dict[str, Any]) -> tuple[str, dict[str, int]]:
        self._submit(tables)
        self.sink.flush(time.time_ns())
        self.metrics.on_state(self.sink, time.time_ns())
        return self.incarnation, self._watermarks(producer_id)

    async def close(self) -> None:
        """Stop the background flusher (the driver calls this before the actor is killed)."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None

    async def stats(self) -> dict[str, Any]:
        s = self.sink.stats
        return {
            "incarnation": self.incarnation,
            "accepted": s.accepted,
            "duplicates": s.duplicates,
            "rejected": s.rejected,
            "flush_errors": s.flush_errors,
            "buffered": self.sink.buffered,
            "flush_id": self.sink.flush_id,
        }
