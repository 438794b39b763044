"""The storage sink actor's group commit: first the loop itself on asyncio (no Ray), then
several producers writing concurrently through the real actor on a local Ray cluster."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import ray

from actors.storage_sink import GroupCommitter, StorageSinkActor, pack_tables
from sapphire.storage.parquet_backend import ParquetBackend
from sapphire.storage.query import read_table
from sapphire.storage.sink import StorageSink
from tests.ray_local import init_local, release_local
from tests.storage.conftest import TRADES_CSV, ticks_from_trades
from tests.storage.test_group_commit import FlakyBackend


@pytest.fixture(scope="module")
def trades_path(shared_data: Path) -> Path:
    return shared_data / TRADES_CSV


def stored(root: Path) -> pl.DataFrame:
    return read_table(root, "ticks").drop("date").sort("producer_id", "seq").collect()


def producer_frames(trades_path: Path, producers: int, rows: int) -> list[pl.DataFrame]:
    base = ticks_from_trades(trades_path, rows)
    return [base.with_columns(pl.lit(f"p{i}").alias("producer_id")) for i in range(producers)]


@pytest.fixture(params=["asyncio", "uvloop"])
def run_loop(request: pytest.FixtureRequest) -> Any:
    """Run a coroutine on the stock loop and on uvloop, the loop of Ray's async actors (its
    timer handles differ: a bug that only uvloop showed once stopped every run's sink)."""
    import uvloop

    factory = asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop

    def run(coro: Any) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run


# -- the loop, on asyncio and uvloop ----------------------------------------------------------
def test_concurrent_writers_share_commits_and_store_each_row_once(
    tmp_path: Path, trades_path: Path, run_loop: Any
) -> None:
    """Durable Parquet at batch 100: four producers, 25 writes of 100 rows each. A commit per
    write would be 100 commits; grouped, the writes made during a commit share the next."""
    frames = producer_frames(trades_path, 4, 2_500)

    async def scenario() -> tuple[GroupCommitter, int]:
        sink = StorageSink(ParquetBackend(tmp_path), batch_size=100, auto_flush=False)
        committer = GroupCommitter(sink)
        writes = 0

        async def produce(frame: pl.DataFrame) -> None:
            nonlocal writes
            for lo in range(0, frame.height, 100):
                sink.submit_frame("ticks", frame[lo : lo + 100], now_ns=time.time_ns())
                committer.kick()
                writes += 1
                await asyncio.sleep(0)  # let the other producers in, as the actor's loop does

        await asyncio.gather(*(produce(f) for f in frames))
        await committer.flush()
        await committer.close()
        return committer, writes

    committer, writes = run_loop(scenario())
    assert writes == 100
    assert 1 <= committer.commits < writes // 2, committer.commits
    assert committer.sink.committed() == {"ticks": {f"p{i}": 2_499 for i in range(4)}}
    got = stored(tmp_path)
    assert got.height == 10_000 and got.select("producer_id", "seq").is_unique().all()


def test_time_limit_commits_a_small_batch_without_another_write(
    tmp_path: Path, trades_path: Path, run_loop: Any
) -> None:
    ticks = ticks_from_trades(trades_path, 10)

    async def scenario() -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
        sink = StorageSink(
            ParquetBackend(tmp_path), batch_size=500, max_delay_ns=50_000_000, auto_flush=False
        )
        committer = GroupCommitter(sink)
        sink.submit_frame("ticks", ticks, now_ns=time.time_ns())
        committer.kick()
        before = sink.committed()  # below batch_rows and younger than the limit: waits
        for _ in range(100):
            await asyncio.sleep(0.02)
            if sink.committed():
                break
        await committer.close()
        return before, sink.committed()

    before, after = run_loop(scenario())
    assert before == {} and after == {"ticks": {"md-0": 9}}


def test_flush_waits_for_the_commit_in_flight_then_commits_the_rest(
    tmp_path: Path, trades_path: Path
) -> None:
    ticks = ticks_from_trades(trades_path, 300)
    backend = FlakyBackend(tmp_path)
    backend.gate = threading.Event()

    async def scenario() -> tuple[int, int, dict[str, dict[str, int]]]:
        sink = StorageSink(backend, batch_size=100, auto_flush=False)
        committer = GroupCommitter(sink)
        sink.submit_frame("ticks", ticks[:100], now_ns=time.time_ns())
        committer.kick()  # due at once: a commit starts and waits on the gate
        assert committer.committing
        sink.submit_frame("ticks", ticks[100:300], now_ns=time.time_ns())
        committer.kick()  # one commit at a time: this only buffers
        flushing = asyncio.ensure_future(committer.flush())
        await asyncio.sleep(0.05)
        assert not flushing.done()  # flush waits for the commit in flight
        backend.gate.set()
        written = await flushing
        await committer.close()
        return written, committer.commits, sink.committed()

    written, commits, marks = asyncio.run(scenario())
    assert marks == {"ticks": {"md-0": 299}}
    # the end of the first commit started the second (200 rows >= batch): flush waited for
    # it and found nothing left, or started it itself
    assert commits == 2 and written in (0, 200)
    assert stored(tmp_path)["seq"].to_list() == list(range(300))


def test_a_hung_commit_keeps_the_lag_gauge_rising(
    tmp_path: Path, trades_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a group commit hangs (a stalled store) the sink's lag gauge is set again and
    again, rising: it was set only at writes and commit ends, so it stood still and Ray's
    exporter dropped it, and the sink-lag alert could not fire."""
    import actors.storage_sink as sink_module
    from actors import metrics
    from tests.actors.test_metrics import MemoryRecorder

    monkeypatch.setattr(sink_module, "STATE_EVERY_S", 0.05)
    backend = FlakyBackend(tmp_path)
    backend.gate = threading.Event()
    actor: Any = StorageSinkActor.__ray_metadata__.modified_class(lambda: backend, 100, 0.01)
    ticks = ticks_from_trades(trades_path, 100)
    recorder = MemoryRecorder()
    previous = metrics.set_recorder(recorder)

    async def scenario() -> None:
        await actor.write("md-0", {"ticks": ticks}, 0)  # a full batch: its commit hangs
        await asyncio.sleep(0.5)
        backend.gate.set()
        await actor.flush("md-0", {})

    try:
        asyncio.run(scenario())
    finally:
        metrics.set_recorder(previous)
    lags = [v for name, v, _ in recorder.calls if name == metrics.SINK_LAG]
    rising = [v for v in lags if v > 0]
    assert len(rising) >= 5, lags  # set every 50 ms while the commit hung
    assert rising == sorted(rising) and rising[-1] >= 0.3, lags
    assert lags[-1] == 0.0  # committed at last


def test_failed_commit_is_retried_after_the_delay_and_loses_nothing(
    tmp_path: Path, trades_path: Path
) -> None:
    ticks = ticks_from_trades(trades_path, 200)
    backend = FlakyBackend(tmp_path)
    backend.fail = True

    async def scenario() -> tuple[int, int, dict[str, dict[str, int]]]:
        sink = StorageSink(
            backend, batch_size=100, max_delay_ns=10**9, auto_flush=False, retry_delay_ns=10**8
        )
        committer = GroupCommitter(sink)
        sink.submit_frame("ticks", ticks[:150], now_ns=time.time_ns())
        committer.kick()
        while sink.stats.flush_errors == 0:
            await asyncio.sleep(0.005)
        errors_then = sink.stats.flush_errors
        sink.submit_frame("ticks", ticks[150:], now_ns=time.time_ns())
        committer.kick()  # due by size, but the retry delay holds it back
        assert not committer.committing and sink.buffered == 200
        backend.fail = False
        for _ in range(200):
            await asyncio.sleep(0.01)
            if sink.buffered == 0:
                break
        await committer.close()
        return errors_then, sink.stats.flush_errors, sink.committed()

    errors_then, errors, marks = asyncio.run(scenario())
    assert errors_then == errors == 1
    assert marks == {"ticks": {"md-0": 199}}
    assert stored(tmp_path)["seq"].to_list() == list(range(200))


def test_groups_are_capped_and_writes_wait_behind_a_full_backlog(
    tmp_path: Path, trades_path: Path, run_loop: Any
) -> None:
    """With ``max_group_rows`` 100, a commit takes at most the oldest writes up to 100 rows;
    while one is stuck on the disk and 400 rows wait behind it, ``room()`` holds the next
    write back until it ends; ``flush`` commits everything in capped groups."""
    ticks = ticks_from_trades(trades_path, 1_000)
    backend = FlakyBackend(tmp_path)
    backend.gate = threading.Event()

    async def scenario() -> tuple[list[int], bool, bool, int, dict[str, dict[str, int]]]:
        sink = StorageSink(backend, batch_size=50, auto_flush=False)
        committer = GroupCommitter(sink, max_group_rows=100)
        sink.submit_frame("ticks", ticks[:50], now_ns=time.time_ns())
        committer.kick()  # due: commits these 50 and waits on the gate
        for lo in range(50, 450, 50):  # 400 rows pile up behind it
            await committer.room()
            sink.submit_frame("ticks", ticks[lo : lo + 50], now_ns=time.time_ns())
        waiter = asyncio.ensure_future(committer.room())
        await asyncio.sleep(0.05)
        held = not waiter.done()
        backend.gate.set()
        await asyncio.wait_for(waiter, 30)
        released = sink.waiting < 400
        for lo in range(450, 1_000, 50):
            await committer.room()
            sink.submit_frame("ticks", ticks[lo : lo + 50], now_ns=time.time_ns())
        await committer.flush()
        await committer.close()
        return (
            [f.height for f in backend.committed_frames],
            held,
            released,
            sink.buffered,
            (sink.committed()),
        )

    sizes, held, released, buffered, marks = run_loop(scenario())
    assert held and released
    assert sizes[0] == 50 and max(sizes) <= 100 and sum(sizes) == 1_000, sizes
    assert buffered == 0 and marks == {"ticks": {"md-0": 999}}
    assert stored(tmp_path)["seq"].to_list() == list(range(1_000))


class _SlowDisk(FlakyBackend):
    """Commits take 5 us a row: a disk (or a share of a CPU) slower than the target allows."""

    def commit(self, flush_id: int, frames: Any, state: Any) -> None:
        time.sleep(5e-6 * sum(f.height for f in frames.values()))
        super().commit(flush_id, frames, state)


def test_group_cap_follows_the_measured_commit_time(
    tmp_path: Path, trades_path: Path, run_loop: Any
) -> None:
    """Nothing measured yet, a group may take ``max_group_rows``; once a commit has shown 5 us
    a row, groups shrink to what fits ``target_commit_s`` (20 ms: under 4,000 rows, so a
    group is at most that plus the one write that crosses it)."""
    ticks = ticks_from_trades(trades_path, 24_000)
    backend = _SlowDisk(tmp_path)

    async def scenario() -> tuple[list[int], int | None]:
        sink = StorageSink(backend, batch_size=500, auto_flush=False)
        committer = GroupCommitter(
            sink, max_group_rows=16_000, min_group_rows=1_000, target_commit_s=0.02
        )
        for lo in range(0, 24_000, 500):
            sink.submit_frame("ticks", ticks[lo : lo + 500], now_ns=time.time_ns())
        await committer.flush()
        await committer.close()
        return [f.height for f in backend.committed_frames], committer.group_rows

    sizes, cap = run_loop(scenario())
    assert sizes[0] == 16_000 and sum(sizes) == 24_000, sizes
    assert cap is not None and 1_000 <= cap < 4_000
    assert all(1_000 <= n <= 4_500 for n in sizes[1:-1]) and len(sizes) >= 3, sizes
    assert stored(tmp_path)["seq"].to_list() == list(range(24_000))


# -- the real actor on a local Ray cluster --------------------------------------------------
@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=2, include_dashboard=False, namespace="sapphire-sink")
    yield
    release_local()


@ray.remote(num_cpus=0)
def produce(sink: Any, frame: pl.DataFrame, rows_per_write: int, root: str) -> dict[str, Any]:
    """Write ``frame`` in slices, re-sending the previous slice's tail each time (a replay
    the sink must drop); each time the reported watermark moves, check it is in the store."""
    pid = frame["producer_id"][0]
    marks_seen: list[int] = []
    problems: list[str] = []
    writes = 0

    def check(mark: int) -> None:
        # what the sink reports committed is in the store: every seq up to it, once
        rows = read_table(root, "ticks").filter(pl.col("producer_id") == pid).collect()
        upto = rows.filter(pl.col("seq") <= mark)
        if not upto.height == mark + 1 == upto["seq"].n_unique():
            problems.append(f"{pid}: mark {mark}, {upto.height} rows up to it in the store")

    for lo in range(0, frame.height, rows_per_write):
        part = frame[max(0, lo - 7) : lo + rows_per_write]
        _, marks, accepted = ray.get(sink.write.remote(pid, {"ticks": part}, 0, ""))
        writes += 1
        if not accepted:
            problems.append(f"{pid}: write {writes} refused")
        mark = marks.get("ticks", -1)
        if mark >= 0 and (not marks_seen or mark > marks_seen[-1]):
            check(mark)
        marks_seen.append(mark)
    _, final = ray.get(sink.flush.remote(pid, {}))
    check(final.get("ticks", -1))
    return {"marks": marks_seen, "final": final, "problems": problems, "writes": writes}


@pytest.mark.slow
@pytest.mark.parametrize("group_commit", [True, False])
def test_producers_through_the_actor_store_every_row_exactly_once(
    ray_local: None, tmp_path: Path, trades_path: Path, group_commit: bool
) -> None:
    frames = producer_frames(trades_path, 4, 6_000)
    build = functools.partial(ParquetBackend, str(tmp_path))
    sink = StorageSinkActor.remote(build, 500, 1.0, group_commit)
    refs = [produce.remote(sink, f, 200, str(tmp_path)) for f in frames]
    results = ray.get(refs, timeout=300)
    stats = ray.get(sink.stats.remote())
    ray.get(sink.close.remote())
    for i, res in enumerate(results):
        assert res["final"] == {"ticks": 5_999}, (i, res)
        assert res["problems"] == []
        assert res["marks"] == sorted(res["marks"])  # committed marks never move back
    got = stored(tmp_path)
    assert got.select("producer_id", "seq").is_unique().all()
    assert got.height == 24_000
    assert got.equals(pl.concat(frames).sort("producer_id", "seq"))
    writes = sum(r["writes"] for r in results)
    assert stats["duplicates"] > 0 and stats["group_commit"] is group_commit, stats
    if group_commit:
        assert stats["flushes"] < writes, stats  # writes of several producers shared commits
    else:
        # a commit each time 500 rows wait: at most 500 + 200 rows per commit
        assert stats["flushes"] >= 24_000 // 700, stats
    ray.kill(sink)


def test_packed_frames_are_stored_as_the_frames_themselves(
    ray_local: None, tmp_path: Path, trades_path: Path
) -> None:
    """A producer's large frames go as lz4 Arrow IPC bytes (small enough for Ray to pass
    inside the call), small ones as they are; the sink stores the same rows either way,
    replays de-duplicated as for frames."""
    ticks = ticks_from_trades(trades_path, 6_000)
    packed = pack_tables({"ticks": ticks[:2_000]})
    assert isinstance(packed["ticks"], bytes) and len(packed["ticks"]) < 100 * 1024
    assert isinstance(pack_tables({"ticks": ticks[:50]})["ticks"], pl.DataFrame)
    sink = StorageSinkActor.remote(functools.partial(ParquetBackend, str(tmp_path)), 500, 1.0)
    for lo in (0, 1_500, 3_500):  # replays: 1,000 rows of the second write, 500 of the third
        ray.get(sink.write.remote("md-0", pack_tables({"ticks": ticks[lo : lo + 2_500]}), 0, ""))
    ray.get(sink.write.remote("md-0", pack_tables({"ticks": ticks[5_990:]}), 0, ""))  # 10, small
    _, marks = ray.get(sink.flush.remote("md-0", {}))
    stats = ray.get(sink.stats.remote())
    ray.get(sink.close.remote())
    ray.kill(sink)
    assert marks == {"ticks": 5_999} and stats["duplicates"] == 1_510
    assert stored(tmp_path).equals(ticks)


def test_re_arming_after_an_already_due_timer_works_on_every_loop(
    tmp_path: Path, run_loop: Any
) -> None:
    """uvloop turns a timer that is already due into a plain handle (no ``when()``): arming
    again before it ran must not fail (it stopped every run's sink on Ray once)."""

    async def scenario() -> int:
        sink = StorageSink(ParquetBackend(tmp_path), batch_size=500, auto_flush=False)
        committer = GroupCommitter(sink)
        committer._arm(0.0)  # due now
        committer._arm(0.5)  # a later deadline while the first has not run yet
        committer._arm(-1.0)  # and an earlier one
        await asyncio.sleep(0.05)
        await committer.close()
        return committer.commits

    assert run_loop(scenario()) == 0  # nothing buffered: the wake-ups find nothing to commit


def test_the_timed_backend_ends_a_run_as_its_backend_does(
    tmp_path: Path, trades_path: Path
) -> None:
    # the actor wraps its backend to time commits; the wrapper hid the backend's finish, so
    # `sapphire run` ended 0 with its last flush committed but never moved into the store
    from actors.storage_sink import TimedBackend

    (tmp_path / "ticks").write_text("blocks the table folder")
    sink = StorageSink(TimedBackend(ParquetBackend(tmp_path)), batch_size=50)
    assert sink.submit_frame("ticks", ticks_from_trades(trades_path, 50), now_ns=0).flushed == 50
    with pytest.raises(OSError, match="committed but not moved"):
        sink.finish()
    (tmp_path / "ticks").unlink()
    sink.finish()  # the way is clear: the staged flush is moved, the rows are readable
    assert stored(tmp_path)["seq"].to_list() == list(range(50))
