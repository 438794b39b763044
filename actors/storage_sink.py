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

A group takes the oldest writes up to a row cap, so a commit's duration stays bounded
however many rows piled up during the one before. The cap follows the commits' measured
time per row, aiming at ``target_commit_s`` a commit, between ``min_group_rows`` and
``max_group_rows``: on an idle host groups are large (the fixed cost of the fsyncs is
spread thin), on a loaded one, where the commit thread gets a fraction of a core, they
shrink so the flush p99 stays near the target. While a commit runs with four groups'
worth of rows already waiting, a write waits for it before buffering more,
so producers that outpace the disk are slowed down instead of growing the buffer (and
every row's time to durability) without limit.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
import warnings
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
# A commit costs ~1.3 ms of CPU plus 0.2-0.5 us a tick row (pyarrow zstd, fsyncs), and takes
# 2-4x that in wall time on a loaded 2-core host: the group cap aims at 20 ms a commit, so
# the p99 stays within issue 19's 50 ms, and keeps groups within these bounds.
DEFAULT_MAX_GROUP_ROWS = 65_536
DEFAULT_MIN_GROUP_ROWS = 8_192
DEFAULT_TARGET_COMMIT_S = 0.020
# commits smaller than this say more about the fixed cost than about the cost of a row
_MIN_SAMPLE_ROWS = 4_096
# waiting rows (in groups) past which a write waits for the commit in flight
_BACKLOG_GROUPS = 4
# How often a group-committing sink re-sets its lag and buffered-rows gauges between writes
# and commits. Why: they were set only then, so while a commit hung (a stalled store) the
# lag stood still, and Ray's exporter drops a gauge not set for ~30 s: the sink-lag alert
# could not fire when it mattered most.
STATE_EVERY_S = 5.0
# Ray passes a call's argument of up to 100 KiB inside the call, a larger one through the
# object store; frames whose in-memory size passes this are packed (pickled, a polars frame
# takes up to ~3x its estimated size: string views, null columns)
_PACK_MIN_BYTES = 32 * 1024


def _reconstructed() -> bool:
    """Whether Ray restarted this actor. Ray 2.60's own property reads a deprecated one
    inside and warns on every call (into every test's log): the warning is Ray's, muted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def pack_tables(tables: Mapping[str, pl.DataFrame]) -> dict[str, pl.DataFrame | bytes]:
    """A write's frames as a producer should send them: as they are when small, else each
    as an lz4-compressed Arrow IPC stream, which :meth:`StorageSinkActor.write` accepts.

    Why: a 2,000-row ``ticks`` frame pickles to 325 kB, over Ray's inline limit, so each
    write went through the object store (create, seal, fetch, release: about 1 ms of CPU in
    the caller, the raylet and the sink); packed it is 44 kB and travels inside the call,
    for ~0.13 ms to pack and ~0.14 ms to unpack (``benchmarks/storage_bench.py --packed``)."""
    if sum(f.estimated_size() for f in tables.values()) < _PACK_MIN_BYTES:
        return dict(tables)
    out: dict[str, pl.DataFrame | bytes] = {}
    for table, frame in tables.items():
        buf = io.BytesIO()
        frame.write_ipc_stream(buf, compression="lz4")
        out[table] = buf.getvalue()
    return out


class TimedBackend:
    """Passes through to the real backend and keeps how long its recent commits took (the
    flush latency the stats report), whichever path, grouped or synchronous, commits."""

    def __init__(self, backend: SinkBackend) -> None:
        self.backend = backend
        # (seconds, rows, CPU seconds of the committing thread) of recent commits; appended
        # on the commit thread, read on the loop. Wall time well above CPU time says the
        # commit waited for a core (a loaded host), not for its own work.
        self.recent: deque[tuple[float, int, float]] = deque(maxlen=10_000)

    def recover(self) -> CommitState:
        return self.backend.recover()

    def finish(self) -> None:
        """The backend's end-of-run work (Parquet: move a committed flush still staged into
        the store, or raise). Why it is passed on: the sink asks its backend for ``finish``,
        and this wrapper hid it, so ``sapphire run`` ended 0 with every row staged where no
        reader saw them (``sapphire backtest``, unwrapped, failed as it should)."""
        finish = getattr(self.backend, "finish", None)
        if finish is not None:
            finish()

    def commit(self, flush_id: int, frames: Mapping[str, pl.DataFrame], state: CommitState) -> None:
        t0, cpu0 = time.perf_counter(), time.thread_time()
        self.backend.commit(flush_id, frames, state)
        rows = sum(f.height for f in frames.values())
        self.recent.append((time.perf_counter() - t0, rows, time.thread_time() - cpu0))

    def summary(self) -> dict[str, float]:
        """Commit time p50 / p99 / max (ms) and rows per commit over the recent commits."""
        recent = list(self.recent)
        took = sorted(t for t, _, _ in recent)
        if not took:
            return {}

        def pct(q: float) -> float:
            return took[min(len(took) - 1, int(q * len(took)))] * 1e3

        rows = sum(n for _, n, _ in recent)
        return {
            "commit_p50_ms": pct(0.5),
            "commit_p99_ms": pct(0.99),
            "commit_max_ms": took[-1] * 1e3,
            "commit_mean_rows": rows / len(recent),
            "commits_timed": len(took),
            # pyarrow encodes on the calling thread: this is nearly all of a commit's CPU
            "commit_cpu_us_per_row": sum(c for _, _, c in recent) / max(rows, 1) * 1e6,
            "commit_wall_us_per_row": sum(took) / max(rows, 1) * 1e6,
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
        max_group_rows: int | None = DEFAULT_MAX_GROUP_ROWS,
        min_group_rows: int = DEFAULT_MIN_GROUP_ROWS,
        target_commit_s: float = DEFAULT_TARGET_COMMIT_S,
    ) -> None:
        self.sink = sink
        self.max_group_rows = max_group_rows
        self.min_group_rows = min(min_group_rows, max_group_rows or min_group_rows)
        self.target_commit_s = target_commit_s
        # moving average of a commit's wall seconds per row (None: none measured yet)
        self.row_s: float | None = None
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

    @property
    def group_rows(self) -> int | None:
        """The row cap of the next group (None: uncapped)."""
        if self.max_group_rows is None:
            return None
        if self.row_s is None:
            return self.max_group_rows
        fit = int(self.target_commit_s / self.row_s)
        return max(self.min_group_rows, min(self.max_group_rows, fit))

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

    async def room(self) -> None:
        """Wait while a commit runs and ``_BACKLOG_GROUPS`` groups' worth of rows already
        wait behind it (so a row waits about that many commits to be durable, whatever the
        load). Only while one runs: after a failed commit nothing is in flight until the
        retry delay, and writes are buffered as before rather than held."""
        while (
            (task := self._task) is not None
            and (cap := self.group_rows) is not None
            and self.sink.waiting >= _BACKLOG_GROUPS * cap
        ):
            await asyncio.wait([task])

    async def flush(self) -> int:
        """Commit everything written so far: wait for the commit in flight (and any the end
        of it starts), then commit what still waits, whatever the thresholds and the retry
        delay say, in capped groups (a final flush must not make the one long commit the
        cap exists to prevent) until every row accepted before this call is committed, or
        until one of this call's commits fails. Returns the rows this call's own commits
        wrote (0 if the first failed)."""
        # groups take the oldest rows first and a failed one goes back in front, so the rows
        # accepted before now are committed once this many rows have been
        target = self.sink.stats.accepted
        written = 0
        while True:
            while self._task is not None:
                await asyncio.shield(self._task)
            if self.sink.stats.flushed_rows >= target:
                return written
            task = self._start(self._clock())
            if task is None:
                return written
            rows = await asyncio.shield(task)
            if not rows:
                return written
            written += rows

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
        batch = self.sink.begin_flush(now_ns, max_rows=self.group_rows)
        if batch is None:
            return None
        task = asyncio.get_running_loop().create_task(self._commit(batch))
        self._task = task
        return task

    def _commit_blocking(self, batch: FlushBatch) -> tuple[Exception | None, float]:
        t0 = time.perf_counter()
        try:
            self.sink.commit(batch)
        except Exception as exc:  # settled on the loop: the rows go back to the buffer
            return exc, time.perf_counter() - t0
        return None, time.perf_counter() - t0

    def _observe(self, seconds: float, rows: int) -> None:
        if rows < _MIN_SAMPLE_ROWS:
            return
        sample = seconds / rows
        # a quarter weight: a few slow commits shrink the cap, one outlier does not halve it
        self.row_s = sample if self.row_s is None else 0.75 * self.row_s + 0.25 * sample

    async def _commit(self, batch: FlushBatch) -> int:
        loop = asyncio.get_running_loop()
        try:
            error, took = await loop.run_in_executor(self._executor, self._commit_blocking, batch)
        except BaseException as exc:  # cancelled or the executor is gone: keep the rows
            abandoned = RuntimeError(f"commit abandoned: {exc!r}")
            self.sink.end_flush(batch, abandoned, now_ns=self._clock())
            self._task = None
            raise
        written = self.sink.end_flush(batch, error, now_ns=self._clock())
        if error is None:
            self._observe(took, written)
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
        max_group_rows: int | None = DEFAULT_MAX_GROUP_ROWS,
    ) -> None:
        """``group_commit=False`` is the earlier behaviour, kept to measure against
        (``benchmarks/storage_bench.py``): each write that fills ``batch_rows`` commits
        synchronously on the event loop, and a poller flushes on the time limit.
        ``max_group_rows`` bounds the adaptive cap of a group commit (None: no cap, no
        backpressure)."""
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
        self._publisher: asyncio.Task[None] | None = None
        self.metrics = metrics.SinkMetrics()
        self._committer = (
            GroupCommitter(self.sink, on_settled=self._publish_state, max_group_rows=max_group_rows)
            if group_commit
            else None
        )

    def _publish_state(self) -> None:
        self.metrics.on_state(self.sink, time.time_ns())

    async def _publish_periodically(self) -> None:
        while True:
            await asyncio.sleep(STATE_EVERY_S)
            self._publish_state()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval_s)
            now_ns = time.time_ns()
            if self.sink.flush_due(now_ns):
                self.sink.flush(now_ns)
            self.metrics.on_state(self.sink, now_ns)

    def _watermarks(self, producer_id: str) -> dict[str, int]:
        return self.sink.committed_of(producer_id)

    def _submit(self, tables: dict[str, Any]) -> None:
        """Typed frames take the fast path (packed ones, :func:`pack_tables`, are unpacked
        first); lists of row dicts are validated row by row, so one malformed row is
        rejected and counted while the valid ones are kept."""
        wall_ns = time.time_ns()
        if any(isinstance(rows, bytes) for rows in tables.values()):
            tables = {
                table: pl.read_ipc_stream(io.BytesIO(rows)) if isinstance(rows, bytes) else rows
                for table, rows in tables.items()
            }
        accepted: dict[str, int] = {}
        for table, rows in tables.items():
            if isinstance(rows, pl.DataFrame):
                if rows.height:
                    result = self.sink.submit_frame(table, rows, now_ns=wall_ns)
                    accepted[table] = result.accepted
            elif rows:
                accepted[table] = self.sink.submit(table, rows, now_ns=wall_ns).accepted
        # what the sink took, not what was sent: a producer re-sends every row not yet
        # acknowledged (its finish, a sink restart), and the sink drops the repeats
        self.metrics.on_write(accepted)
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
        if self._committer is not None:
            await self._committer.room()
        self._submit(tables)
        if self._committer is not None:
            self._committer.kick()
            if self._publisher is None:
                loop = asyncio.get_running_loop()
                self._publisher = loop.create_task(self._publish_periodically())
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
        # the run's end (the coordinator's finish): committed rows readers cannot see yet
        # fail it here, with the store's reason, never end as stored
        self.sink.finish()
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
            "restarted": _reconstructed(),
            "accepted": s.accepted,
            "duplicates": s.duplicates,
            "rejected": s.rejected,
            "flush_errors": s.flush_errors,
            "buffered": self.sink.buffered,
            "flush_id": self.sink.flush_id,
            "flushes": s.flushes,
            "flushed_rows": s.flushed_rows,
            "group_commit": self._committer is not None,
            "group_rows_cap": self._committer.group_rows if self._committer else None,
            **self.backend.summary(),
        }
