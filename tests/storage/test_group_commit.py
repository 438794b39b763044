"""Group commit in the pure sink: begin_flush / commit / end_flush, with rows arriving while a
batch is in flight (from other threads' point of view: a commit on a worker thread)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.storage.parquet_backend import ParquetBackend
from sapphire.storage.query import read_table
from sapphire.storage.sink import CommitState, StorageSink
from tests.storage.conftest import ticks_from_trades


def stored(root: Path, table: str = "ticks") -> pl.DataFrame:
    return read_table(root, table).drop("date").sort("producer_id", "seq").collect()


def two_producers(trades_path: Path, n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    a = ticks_from_trades(trades_path, n, producer_id="md-0")
    return a, a.with_columns(pl.lit("md-1").alias("producer_id"))


class FlakyBackend(ParquetBackend):
    """A real (not fsynced) Parquet store whose commits can be made to fail or to wait;
    it keeps every committed frame so a test can compare what the sink claimed."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, durable=False)
        self.fail = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.committed_frames: list[pl.DataFrame] = []

    def commit(self, flush_id: int, frames: Mapping[str, pl.DataFrame], state: CommitState) -> None:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        if self.fail:
            raise OSError(28, "No space left on device")
        super().commit(flush_id, frames, state)
        self.committed_frames.extend(frames.values())


def test_marks_move_only_when_the_batch_in_flight_commits(
    tmp_path: Path, trades_path: Path
) -> None:
    ticks = ticks_from_trades(trades_path, 400)
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=500, auto_flush=False)
    sink.submit_frame("ticks", ticks[:300], now_ns=10)
    batch = sink.begin_flush(now_ns=20)
    assert batch is not None and batch.rows == 300 and batch.oldest_ns == 10
    assert batch.state.watermarks == {"ticks": {"md-0": 299}} and batch.flush_id == 1
    assert (sink.waiting, sink.buffered) == (0, 300)
    # a write during the commit is buffered, de-duplicated against the batch, not committed
    r = sink.submit_frame("ticks", ticks[250:400], now_ns=30)
    assert (r.accepted, r.duplicates, r.flushed) == (100, 50, 0)
    assert (sink.waiting, sink.buffered) == (100, 400)
    assert sink.oldest_buffered_ns == 10
    with pytest.raises(RuntimeError, match="in flight"):
        sink.begin_flush(now_ns=40)
    sink.commit(batch)
    assert sink.committed() == {}  # durable, but not reported before end_flush
    assert sink.end_flush(batch, now_ns=50) == 300
    assert sink.committed() == {"ticks": {"md-0": 299}}  # not 399: those rows still wait
    assert sink.oldest_buffered_ns == 30
    assert stored(tmp_path)["seq"].to_list() == list(range(300))
    assert sink.flush(60) == 100 and sink.last_committed("ticks", "md-0") == 399
    assert stored(tmp_path)["seq"].to_list() == list(range(400))
    with pytest.raises(RuntimeError, match="not the one in flight"):
        sink.end_flush(batch, now_ns=70)


def test_failed_commit_puts_rows_back_in_front_in_order(tmp_path: Path, trades_path: Path) -> None:
    a, b = two_producers(trades_path, 600)
    backend = FlakyBackend(tmp_path)
    sink = StorageSink(
        backend, batch_size=100, max_delay_ns=1_000, auto_flush=False, retry_delay_ns=5_000
    )
    sink.submit_frame("ticks", a[:200], now_ns=100)
    sink.submit_frame("ticks", b[:150], now_ns=110)
    first = sink.begin_flush(now_ns=120)
    assert first is not None
    backend.fail = True
    with pytest.raises(OSError, match="No space"):
        sink.commit(first)
    sink.submit_frame("ticks", a[200:300], now_ns=130)  # arrived while the commit ran
    sink.submit_frame("ticks", b[100:250], now_ns=140)  # half of it a replay of the batch
    assert sink.end_flush(first, OSError("No space left on device"), now_ns=1_000) == 0
    assert sink.committed() == {} and sink.stats.flush_errors == 1
    assert (sink.waiting, sink.buffered) == (550, 550) and sink.oldest_buffered_ns == 100
    # the retry waits for the delay, even though 550 rows >= batch_size
    assert sink.next_due_ns() == 6_000
    assert not sink.flush_due(5_999) and sink.flush_due(6_000)
    assert sink.stats.duplicates == 50  # the replay was dropped against the failed batch
    backend.fail = False
    retry = sink.begin_flush(now_ns=6_000)
    assert retry is not None and retry.flush_id == first.flush_id  # the id was not used
    expected = pl.concat([a[:200], b[:150], a[200:300], b[150:250]])
    assert retry.frames["ticks"].equals(expected)  # failed rows first, then the newer ones
    sink.commit(retry)
    assert sink.end_flush(retry, now_ns=6_001) == 550
    assert sink.committed() == {"ticks": {"md-0": 299, "md-1": 249}}
    assert sink.next_due_ns() is None and sink.buffered == 0
    assert stored(tmp_path).equals(pl.concat([a[:300], b[:250]]))


def test_rows_written_during_a_commit_are_coalesced_into_the_next(
    tmp_path: Path, trades_path: Path
) -> None:
    """A commit runs on a worker thread; four producers write 10 batches each meanwhile.
    The next commit takes all 40 together: 2 commits for 41 write batches."""
    producers = [ticks_from_trades(trades_path, 550, producer_id=f"md-{i}") for i in range(4)]
    backend = FlakyBackend(tmp_path)
    backend.gate = threading.Event()
    sink = StorageSink(backend, batch_size=50, auto_flush=False)
    sink.submit_frame("ticks", producers[0][:50], now_ns=0)
    writes = 1
    first = sink.begin_flush(now_ns=0)
    assert first is not None
    worker = threading.Thread(target=sink.commit, args=(first,))
    worker.start()
    assert backend.entered.wait(30)
    for k in range(10):  # the producers interleave while the commit waits on the "disk"
        for frame in producers:
            lo = 50 + 50 * k
            sink.submit_frame("ticks", frame[lo : lo + 50], now_ns=k)
            writes += 1
            assert sink.flush_due(k) and sink.in_flight is first  # due, yet one at a time
    backend.gate.set()
    worker.join(30)
    sink.end_flush(first, now_ns=20)
    second = sink.begin_flush(now_ns=20)
    assert second is not None and second.rows == 40 * 50
    sink.commit(second)
    sink.end_flush(second, now_ns=21)
    assert sink.stats.flushes == 2 < writes == 41
    assert sink.stats.flushed_rows == 2050 and second.flush_id == 2
    got = stored(tmp_path)
    assert got.select("producer_id", "seq").is_unique().all()
    assert sink.committed() == {"ticks": {"md-0": 549, "md-1": 549, "md-2": 549, "md-3": 549}}
    assert got.height == 2050


def test_capped_batch_takes_the_oldest_writes_whole_and_claims_only_them(
    tmp_path: Path, trades_path: Path
) -> None:
    """``max_rows`` takes writes in arrival order, across tables and producers, until the cap
    is reached (never part of a write); the marks are those writes' tops, the rest waits in
    order, and a failed capped batch goes back in front of it."""
    a, b = two_producers(trades_path, 900)
    backend = FlakyBackend(tmp_path)
    sink = StorageSink(backend, batch_size=10, auto_flush=False, retry_delay_ns=0)
    sink.submit_frame("ticks", a[:300], now_ns=1)
    sink.submit_frame("ticks", b[:200], now_ns=2)
    sink.submit_frame("ticks", a[300:600], now_ns=3)
    sink.submit_frame("ticks", b[200:900], now_ns=4)
    first = sink.begin_flush(now_ns=5, max_rows=450)  # 300 < 450 <= 300 + 200: two writes
    assert first is not None and first.rows == 500 and first.oldest_ns == 1
    assert first.state.watermarks == {"ticks": {"md-0": 299, "md-1": 199}}
    assert first.frames["ticks"].equals(pl.concat([a[:300], b[:200]]))
    assert (sink.waiting, sink.buffered, sink.oldest_buffered_ns) == (1_000, 1_500, 1)
    backend.fail = True
    with pytest.raises(OSError):
        sink.commit(first)
    sink.end_flush(first, OSError("No space left on device"), now_ns=6)
    backend.fail = False
    retry = sink.begin_flush(now_ns=7, max_rows=1)  # the failed batch is one write per table
    assert retry is not None and retry.frames["ticks"].equals(first.frames["ticks"])
    assert retry.state.watermarks == first.state.watermarks and retry.oldest_ns == 1
    sink.commit(retry)
    sink.end_flush(retry, now_ns=8)
    assert sink.committed() == {"ticks": {"md-0": 299, "md-1": 199}}
    assert sink.oldest_buffered_ns == 3  # the oldest write still waiting
    second = sink.begin_flush(now_ns=9, max_rows=1)
    assert second is not None and second.rows == 300
    assert second.state.watermarks == {"ticks": {"md-0": 599, "md-1": 199}}
    sink.commit(second)
    sink.end_flush(second, now_ns=10)
    assert sink.flush(11) == 700
    assert sink.committed() == {"ticks": {"md-0": 599, "md-1": 899}}
    assert stored(tmp_path).equals(pl.concat([a[:600], b[:900]]))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(0, 2), st.integers(1, 30), st.booleans()),
            st.tuples(st.just("begin"), st.integers(0, 60), st.just(0), st.just(False)),
            st.tuples(st.just("end"), st.just(0), st.just(0), st.booleans()),
        ),
        min_size=1,
        max_size=40,
    ),
    batch_size=st.integers(1, 40),
)
def test_property_reported_marks_never_run_ahead_of_the_store(
    tmp_path_factory: pytest.TempPathFactory,
    trades_path: Path,
    ops: list[tuple[str, int, int, bool]],
    batch_size: int,
) -> None:
    """Any interleaving of writes (with replays), begin_flush (whole or capped at a random
    row count) and end_flush (ok or failed): ``committed()`` always equals the highest seq
    per producer in what the backend really committed, that holds no duplicate, and a final
    flush stores every sent row exactly once in each producer's order."""
    base = ticks_from_trades(trades_path, 400)
    frames = [base.with_columns(pl.lit(f"p{i}").alias("producer_id")) for i in range(3)]
    backend = FlakyBackend(tmp_path_factory.mktemp("gc"))
    sink = StorageSink(backend, batch_size=batch_size, auto_flush=False, retry_delay_ns=0)
    cursor = [0, 0, 0]
    clock = 0
    for op, producer, n, flag in ops:
        clock += 1
        if op == "write":
            c = cursor[producer]
            lo, hi = (max(0, c - n), c) if flag else (c, min(400, c + n))  # flag: a replay
            cursor[producer] = max(c, hi)
            sink.submit_frame("ticks", frames[producer][lo:hi], now_ns=clock)
        elif op == "begin" and sink.in_flight is None:
            sink.begin_flush(now_ns=clock, max_rows=producer or None)  # 0: no cap
        elif op == "end" and (batch := sink.in_flight) is not None:
            backend.fail = flag
            try:
                sink.commit(batch)
            except OSError as exc:
                sink.end_flush(batch, exc, now_ns=clock)
            else:
                sink.end_flush(batch, now_ns=clock)
        done = pl.concat([base.clear(), *backend.committed_frames])
        assert done.select("producer_id", "seq").is_unique().all()
        tops = dict(done.group_by("producer_id").agg(pl.col("seq").max()).iter_rows())
        assert sink.committed().get("ticks", {}) == tops
        assert sink.buffered + done.height == sum(cursor)
    backend.fail = False
    if (batch := sink.in_flight) is not None:
        sink.commit(batch)
        sink.end_flush(batch, now_ns=clock)
    sink.flush(clock)
    got = stored(backend.root)
    want = pl.concat([f[:c] for f, c in zip(frames, cursor, strict=True)])
    assert got.equals(want.sort("producer_id", "seq"))
