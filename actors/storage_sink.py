"""StorageSinkActor: batches rows into the store (Parquet by default, BigQuery in production).

Exactly-once comes from the pure ``StorageSink``: rows carry (producer_id, seq), the store
keeps a committed watermark per table and producer, and rows at or below it are dropped.
Each reply names this incarnation and the producer's watermarks, so a producer learns when a
restart lost the buffer and re-sends what is not committed.

Commits are grouped (:class:`GroupCommitter`): a write only buffers; one commit at a time
runs on a worker thread, and whatever any producer wrote while it ran goes into the next one
once ``batch_rows`` rows or ``flush_interval_s`` make it due. So a commit's fixed cost (the
fsyncs, the manifest) is paid once per group rather than once per ``batch_rows``, and the
event loop keeps taking writes while the disk works.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl
import ray

from actors import metrics
from sapphire.storage.sink import CommitState, FlushBatch, SinkBackend, StorageSink

log = logging.getLogger(__name__)

# a failed commit is retried after the time limit, and not sooner than this
_MIN_RETRY_S = 0.1


class TimedBackend:
    """Passes through to the real backend and keeps how long its recent commits took (the
    flush latency the stats report), whichever path, grouped or synchronous, commits."""

    def __init__(self, backend: SinkBackend) -> None:
        self.backend = backend
        # (seconds, rows) of recent commits; appended on the commit thread, read on the loop
        self.recent: deque[tuple[float, int]] = deque(maxlen=10_000)

    def recover(self) -> CommitState:
        return self.backend.recover()

    def commit(self, flush_id: int, frames: Mapping[str, pl.DataFrame], state: CommitState) -> None:
        t0 = time.perf_counter()
        self.backend.commit(flush_id, frames, state)
        self.recent.append((time.perf_counter() - t0, sum(f.height for f in frames.values())))

    def summary(self) -> dict[str, float]:
        """Commit time p50 / p99 / max (ms) and rows per commit over the recent commits."""
        took = sorted(t for t, _ in list(self.recent))
        if not took:
            return {}

        def pct(q: float) -> float:
            return took[min(len(took) - 1, int(q * len(took)))] * 1e3

        rows = [n for _, n in list(self.recent)]
        return {
            "commit_p50_ms": pct(0.5),
            "commit_p99_ms": pct(0.99),
            "commit_max_ms": took[-1] * 1e3,
            "commit_mean_rows": sum(rows) / len(rows),
            "commits_timed": len(took),
        }


class GroupCommitter:
    """Group commit for a :class:`StorageSink` that was built with ``auto_flush=False``.

    At most one commit is in flight, on a single worker thread (the backend sees one caller
    at a time, as with a synchronous flush). :meth:`kick` after each write starts a commit
    when none runs and the sink says one is due, or arms a timer for when the time limit
    will make it due; the end of a commit kicks again, so rows that piled up meanwhile, from
    any number of producers, are committed together. Call it on the event loop only.
    """

    def __init__(
        self,
        sink: StorageSink,
        *,
        clock: Callable[[], int] = time.time_ns,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        self.sink = sink
        self._clock = clock
        self._on_settled = on_settled
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-commit")
        self._task: asyncio.Task[int] | None = None
        # uvloop (Ray's async actors) returns handles without .when(): keep the time here
        self._timer: asyncio.Handle | None = None
        self._timer_when = 0.0
        self._closed = False
        self.commits = 0

    @property
    def committing(self) -> bool:
        return self._task is not None

    def kick(self) -> None:
        """Start a commit if none is in flight and one is due; else wait for the time limit."""
        if self._task is not None or self._closed:
            return  # the commit in flight kicks again when it ends
        now_ns = self._clock()
        if self.sink.flush_due(now_ns):
            self._start(now_ns)
            return
        due_ns = self.sink.next_due_ns()
        if due_ns is not None:
            self._arm((due_ns - now_ns) / 1e9)

    async def flush(self) -> int:
        """Commit everything written so far: wait for the commit in flight (and any the end
        of it starts), then commit what still waits now, whatever the thresholds and the
        retry delay say. Returns the rows this call's own commit wrote (0 if it failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)
        task = self._start(self._clock())
        return await asyncio.shield(task) if task is not None else 0

    async def close(self) -> None:
        """Stop starting commits; wait for the one in flight so no thread writes after."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._task is not None:
            await asyncio.shield(self._task)
        self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ internals
    def _arm(self, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, delay_s)
        if self._timer is not None:
            if self._timer_when <= when:
                return  # an earlier wake-up re-evaluates anyway
            self._timer.cancel()
        self._timer = loop.call_at(when, self._on_timer)
        self._timer_when = when

    def _on_timer(self) -> None:
        self._timer = None
        self.kick()

    def _start(self, now_ns: int) -> asyncio.Task[int] | None:
        batch = self.sink.begin_flush(now_ns)
        if batch is None:
            return None
        task = asyncio.get_running_loop().create_task(self._commit(batch))
        self._task = task
        return task

    def _commit_blocking(self, batch: FlushBatch) -> Exception | None:
        try:
            self.sink.commit(batch)
        except Exception as exc:  # settled on the loop: the rows go back to the buffer
            return exc
        return None

    async def _commit(self, batch: FlushBatch) -> int:
        loop = asyncio.get_running_loop()
        try:
            error = await loop.run_in_executor(self._executor, self._commit_blocking, batch)
        except BaseException as exc:  # cancelled or the executor is gone: keep the rows
            abandoned = RuntimeError(f"commit abandoned: {exc!r}")
            self.sink.end_flush(batch, abandoned, now_ns=self._clock())
            self._task = None
            raise
        written = self.sink.end_flush(batch, error, now_ns=self._clock())
        self.commits += 1
        self._task = None
        if self._on_settled is not None:
            self._on_settled()
        self.kick()
        return written


@ray.remote(max_restarts=-1, max_task_retries=-1)
class StorageSinkActor:
    def __init__(
        self,
        build_backend: Any,
        batch_rows: int,
        flush_interval_s: float,
        group_commit: bool = True,
    ) -> None:
        """``group_commit=False`` is the earlier behaviour, kept to measure against
        (``benchmarks/storage_bench.py``): each write that fills ``batch_rows`` commits
        synchronously on the event loop, and a poller flushes on the time limit."""
        self.incarnation = uuid.uuid4().hex
        self.backend = TimedBackend(build_backend())
        self.sink = StorageSink(
            self.backend,
            batch_size=batch_rows,
            max_delay_ns=int(flush_interval_s * 1e9),
            auto_flush=not group_commit,
            retry_delay_ns=int(max(flush_interval_s, _MIN_RETRY_S) * 1e9),
        )
        self._flush_interval_s = flush_interval_s
        self._flusher: asyncio.Task[None] | None = None
        self.metrics = metrics.SinkMetrics()
        self._committer = (
            GroupCommitter(self.sink, on_settled=self._publish_state) if group_commit else None
        )

    def _publish_state(self) -> None:
        self.metrics.on_state(self.sink, time.time_ns())

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
        everything not committed instead (third element False). The watermarks returned
        are committed ones only: rows of this write show up in a later reply."""
        if expected_incarnation and expected_incarnation != self.incarnation:
            return self.incarnation, self._watermarks(producer_id), False
        self._submit(tables)
        if self._committer is not None:
            self._committer.kick()
        elif self._flusher is None and self._flush_interval_s > 0:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())
        return self.incarnation, self._watermarks(producer_id), True

    async def flush(self, producer_id: str, tables: dict[str, Any]) -> tuple[str, dict[str, int]]:
        """Commit everything written so far (after the commit in flight), these rows too."""
        self._submit(tables)
        if self._committer is not None:
            await self._committer.flush()
        else:
            self.sink.flush(time.time_ns())
        self.metrics.on_state(self.sink, time.time_ns())
        return self.incarnation, self._watermarks(producer_id)

    async def close(self) -> None:
        """Stop the background flushing (the driver calls this before the actor is killed)."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._committer is not None:
            await self._committer.close()

    async def stats(self) -> dict[str, Any]:
        s = self.sink.stats
        return {
            "incarnation": self.incarnation,
            # Ray restarted this actor (a producer may never notice: a write in flight at the
            # kill is retried on the new incarnation and accepted there)
            "restarted": ray.get_runtime_context().was_current_actor_reconstructed,
            "accepted": s.accepted,
            "duplicates": s.duplicates,
            "rejected": s.rejected,
            "flush_errors": s.flush_errors,
            "buffered": self.sink.buffered,
            "flush_id": self.sink.flush_id,
            "flushes": s.flushes,
            "flushed_rows": s.flushed_rows,
            "group_commit": self._committer is not None,
            **self.backend.summary(),
        }
