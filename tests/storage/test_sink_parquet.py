from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.storage.parquet_backend import ParquetBackend
from sapphire.storage.query import read_table
from sapphire.storage.schemas import TICKS, SchemaMismatchError
from sapphire.storage.sink import CommitState, StorageSink
from tests.storage.conftest import ticks_from_trades


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so the sink cannot catch it."""


class CrashingBackend(ParquetBackend):
    """Dies at ``point`` during commit number ``on_commit``."""

    def __init__(self, root: Path, point: str, on_commit: int) -> None:
        super().__init__(root)
        self.point, self.on_commit, self.commits = point, on_commit, 0

    def commit(self, flush_id: int, frames: Mapping[str, pl.DataFrame], state: CommitState) -> None:
        self.commits += 1
        if self.commits != self.on_commit:
            super().commit(flush_id, frames, state)
            return
        if self.point == "mid_stage":  # first table's files written, the rest not
            first = dict(list(frames.items())[:1])
            self._stage(flush_id, first)
            raise SimulatedCrash
        self._stage(flush_id, frames)
        if self.point == "after_stage":
            raise SimulatedCrash
        self._write_manifest(state)
        raise SimulatedCrash  # after_manifest: committed, not yet published


def stored(root: Path, table: str = "ticks") -> pl.DataFrame:
    return read_table(root, table).drop("date").sort("producer_id", "seq").collect()


def test_flush_at_batch_size_and_on_time(tmp_path: Path, trades_path: Path) -> None:
    ticks = ticks_from_trades(trades_path, 1200)
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=500, max_delay_ns=1_000)
    r = sink.submit_frame("ticks", ticks[:499], now_ns=0)
    assert r.flushed == 0 and sink.buffered == 499
    assert not sink.flush_due(999)
    assert sink.flush_due(1_000)  # the time limit, not the size, makes it due
    r = sink.submit_frame("ticks", ticks[499:500], now_ns=10)
    assert r.flushed == 500 and sink.buffered == 0
    assert sink.last_committed("ticks", "md-0") == 499
    assert stored(tmp_path).height == 500


def test_hive_layout_atomic_files_and_round_trip(tmp_path: Path, trades_path: Path) -> None:
    ticks = ticks_from_trades(trades_path, 13_000)  # crosses midnight 2023-04-04 -> 05
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=5_000)
    sink.submit_frame("ticks", ticks, now_ns=0)
    sink.flush(0)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert any(f.startswith("ticks/date=2023-04-04/symbol=BTCUSDT/part-sink0-") for f in files)
    assert any(f.startswith("ticks/date=2023-04-05/symbol=BTCUSDT/part-sink0-") for f in files)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or "staging" in p.name]
    assert not leftovers or all(not any(p.iterdir()) for p in leftovers if p.is_dir())
    assert stored(tmp_path).equals(ticks.sort("producer_id", "seq"))
    day = read_table(tmp_path, "ticks").filter(pl.col("date") == pl.date(2023, 4, 5)).collect()
    assert 0 < day.height < ticks.height


def test_duplicates_in_and_across_batches_are_dropped(tmp_path: Path, trades_path: Path) -> None:
    ticks = ticks_from_trades(trades_path, 300)
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=10_000)
    r1 = sink.submit_frame("ticks", pl.concat([ticks[:200], ticks[100:150]]), now_ns=0)
    assert (r1.accepted, r1.duplicates) == (200, 50)
    r2 = sink.submit_frame("ticks", ticks[150:300], now_ns=0)  # 150..199 buffered already
    assert (r2.accepted, r2.duplicates) == (100, 50)
    sink.flush(0)
    r3 = sink.submit_frame("ticks", ticks, now_ns=0)  # full replay after the commit
    assert (r3.accepted, r3.duplicates) == (0, 300)
    assert stored(tmp_path)["seq"].to_list() == list(range(300))


def test_schema_mismatch_raises_and_keeps_buffer(tmp_path: Path, trades_path: Path) -> None:
    ticks = ticks_from_trades(trades_path, 10)
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=100)
    sink.submit_frame("ticks", ticks, now_ns=0)
    with pytest.raises(
        SchemaMismatchError, match=r"table 'ticks'.*price_ticks: expected Int64, got String"
    ):
        sink.submit_frame(
            "ticks", ticks.with_columns(pl.col("price_ticks").cast(pl.String)), now_ns=0
        )
    with pytest.raises(SchemaMismatchError, match=r"missing=.*seq"):
        sink.submit_frame("ticks", ticks.drop("seq"), now_ns=0)
    # a required column all null (its type Null) or partly null: the frame is refused (a null
    # symbol was stored and read back as the text "None" from its partition folder)
    later = ticks.with_columns(pl.col("seq") + 100)
    for broken in (
        later.with_columns(pl.lit(None).alias("symbol")),
        later.with_columns(
            pl.when(pl.col("seq") == 103).then(None).otherwise(pl.col("kind")).alias("kind")
        ),
    ):
        with pytest.raises(SchemaMismatchError, match=r"nulls in required columns"):
            sink.submit_frame("ticks", broken, now_ns=0)
    assert sink.buffered == 10
    sink.flush(0)
    assert stored(tmp_path).height == 10


def test_backend_failure_keeps_rows_until_a_later_flush(tmp_path: Path, trades_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's folder should be")
    sink = StorageSink(ParquetBackend(blocker), batch_size=50)
    ticks = ticks_from_trades(trades_path, 60)
    r = sink.submit_frame("ticks", ticks, now_ns=0)
    assert r.flushed == 0 and sink.buffered == 60
    assert sink.stats.flush_errors == 1 and "Error" in sink.stats.last_error
    blocker.unlink()
    assert sink.flush(1) == 60
    assert stored(blocker)["seq"].to_list() == list(range(60))


@pytest.mark.parametrize("point", ["mid_stage", "after_stage", "after_manifest"])
def test_crash_restart_replay_equals_no_fault_run(
    tmp_path: Path, trades_path: Path, point: str
) -> None:
    ticks = ticks_from_trades(trades_path, 3_000)
    fills_like = ticks.with_columns(pl.lit("md-1").alias("producer_id"))  # a 2nd producer
    batches = [ticks[i : i + 250] for i in range(0, 3_000, 250)]
    batches2 = [fills_like[i : i + 250] for i in range(0, 3_000, 250)]

    clean = StorageSink(ParquetBackend(tmp_path / "clean"), batch_size=500)
    for b, b2 in zip(batches, batches2, strict=True):
        clean.submit_frame("ticks", b, now_ns=0)
        clean.submit_frame("ticks", b2, now_ns=0)
    clean.flush(0)

    root = tmp_path / "faulty"
    crashing = StorageSink(CrashingBackend(root, point, on_commit=3), batch_size=500)
    with pytest.raises(SimulatedCrash):
        for b, b2 in zip(batches, batches2, strict=True):
            crashing.submit_frame("ticks", b, now_ns=0)
            crashing.submit_frame("ticks", b2, now_ns=0)
    del crashing  # the process is gone; only the store survives

    restarted = StorageSink(ParquetBackend(root), batch_size=500)
    resume = restarted.last_committed("ticks", "md-0")
    if point == "after_manifest":
        assert resume == 749  # the commit point was passed: roll forward
    else:
        assert resume == 499  # each commit holds 250 rows per producer
    assert stored(root)["seq"].max() == resume  # the store agrees with the manifest
    # producers re-send everything not acknowledged -- here, everything, to test de-dup too
    for b, b2 in zip(batches, batches2, strict=True):
        restarted.submit_frame("ticks", b, now_ns=0)
        restarted.submit_frame("ticks", b2, now_ns=0)
    restarted.flush(0)
    assert stored(root).equals(stored(tmp_path / "clean"))
    assert stored(root).height == 6_000
    assert not list((root / "_sapphire").glob("staging-*/*"))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(st.tuples(st.booleans(), st.integers(1, 20)), min_size=1, max_size=15),
    batch_size=st.integers(1, 60),
    crash_at=st.integers(1, 5),
    resume_from_zero=st.booleans(),
)
def test_property_crash_and_replays_store_exactly_what_was_sent(
    tmp_path_factory: pytest.TempPathFactory,
    trades_path: Path,
    steps: list[tuple[bool, int]],
    batch_size: int,
    crash_at: int,
    resume_from_zero: bool,
) -> None:
    """A producer sends in seq order, sometimes re-sends its last rows; the sink may die
    once. Whatever happens, the store ends with every sent seq exactly once."""
    ticks = ticks_from_trades(trades_path, 300)
    root = tmp_path_factory.mktemp("prop")
    backend = CrashingBackend(root, "after_stage", on_commit=crash_at)
    backend.durable = False
    sink = StorageSink(backend, batch_size=batch_size)
    cursor = 0
    for replay, n in steps:
        lo, hi = (max(0, cursor - n), cursor) if replay else (cursor, cursor + n)
        cursor = max(cursor, hi)
        try:
            sink.submit_frame("ticks", ticks[lo:hi], now_ns=0)
        except SimulatedCrash:
            sink = StorageSink(ParquetBackend(root, durable=False), batch_size=batch_size)
            start = 0 if resume_from_zero else sink.last_committed("ticks", "md-0") + 1
            sink.submit_frame("ticks", ticks[start:cursor], now_ns=0)  # unacknowledged rows
    try:
        sink.flush(0)
    except SimulatedCrash:
        sink = StorageSink(ParquetBackend(root, durable=False), batch_size=batch_size)
        sink.submit_frame(
            "ticks", ticks[sink.last_committed("ticks", "md-0") + 1 : cursor], now_ns=0
        )
        sink.flush(0)
    assert stored(root)["seq"].to_list() == list(range(cursor))


def test_restart_sees_committed_state_written_by_manifest(
    tmp_path: Path, trades_path: Path
) -> None:
    ticks = ticks_from_trades(trades_path, 100)
    s = StorageSink(ParquetBackend(tmp_path), batch_size=40)
    s.submit_frame("ticks", ticks, now_ns=0)
    assert s.buffered == 0 and s.flush_id == 1
    manifest = tmp_path / "_sapphire" / "manifest-sink0.json"
    assert manifest.exists() and not (tmp_path / "_sapphire" / ".manifest-sink0.json.tmp").exists()
    again = StorageSink(ParquetBackend(tmp_path))
    assert again.committed() == {"ticks": {"md-0": 99}} and again.flush_id == 1
    assert sorted(os.listdir(tmp_path / "_sapphire")) == ["manifest-sink0.json", "staging-sink0"]


def test_publish_failure_after_commit_point_is_finished_later(
    tmp_path: Path, trades_path: Path
) -> None:
    ticks = ticks_from_trades(trades_path, 100)
    (tmp_path / "ticks").write_text("blocks the table folder")
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=50)
    r = sink.submit_frame("ticks", ticks[:50], now_ns=0)
    assert r.flushed == 50 and sink.last_committed("ticks", "md-0") == 49  # committed
    (tmp_path / "ticks").unlink()
    sink.submit_frame("ticks", ticks[50:], now_ns=0)  # next commit publishes the deferred one
    assert stored(tmp_path)["seq"].to_list() == list(range(100))


def test_a_run_ending_with_a_committed_flush_it_cannot_publish_fails(
    tmp_path: Path, trades_path: Path
) -> None:
    # the run's last flush commits, then its move into place fails (the folder is blocked,
    # as a full disk would): the run's end says so instead of ending as stored
    ticks = ticks_from_trades(trades_path, 50)
    (tmp_path / "ticks").write_text("blocks the table folder")
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=50)
    assert sink.submit_frame("ticks", ticks, now_ns=0).flushed == 50
    with pytest.raises(OSError, match="committed but not moved"):
        sink.finish()
    (tmp_path / "ticks").unlink()  # room again: the end's retry moves it
    sink.finish()
    assert stored(tmp_path)["seq"].to_list() == list(range(50))


def test_restart_rolls_forward_a_committed_unpublished_flush(
    tmp_path: Path, trades_path: Path
) -> None:
    ticks = ticks_from_trades(trades_path, 50)
    (tmp_path / "ticks").write_text("blocks the table folder")
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=50)
    sink.submit_frame("ticks", ticks, now_ns=0)
    del sink
    (tmp_path / "ticks").unlink()
    again = StorageSink(ParquetBackend(tmp_path))
    assert again.last_committed("ticks", "md-0") == 49
    assert stored(tmp_path)["seq"].to_list() == list(range(50))


@pytest.mark.parametrize("codec", ["zstd", "lz4", "snappy", "uncompressed"])
def test_every_compression_choice_reads_back(tmp_path: Path, trades_path: Path, codec: str) -> None:
    ticks = ticks_from_trades(trades_path, 200)
    sink = StorageSink(ParquetBackend(tmp_path, compression=codec), batch_size=200)  # type: ignore[arg-type]
    sink.submit_frame("ticks", ticks, now_ns=0)
    assert stored(tmp_path).equals(ticks)


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(
        st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 40)), max_size=25),
        min_size=1,
        max_size=8,
    ),
    single=st.booleans(),
)
def test_property_dedup_matches_a_row_by_row_model(
    writes: list[list[tuple[str, int]]], single: bool
) -> None:
    """Whatever path a frame takes (one producer in order: a slice; anything else: unique
    then filter), a row is accepted iff its (producer, seq) is new in the frame and above the
    producer's mark from before the frame; the marks end at the highest accepted seq."""
    sink = StorageSink(_NoStore(), batch_size=10**9, auto_flush=False)
    template = pl.DataFrame(schema=TICKS.polars_schema)
    model: dict[str, int] = {}
    accepted: list[tuple[str, int]] = []
    for rows in writes:
        if single:  # mostly the fast path: one producer, sorted, no repeats
            rows = [("a", s) for s in sorted({s for _, s in rows})]
        want, seen_here = [], set()
        for producer, s in rows:
            if (producer, s) not in seen_here and s > model.get(producer, -1):
                want.append((producer, s))
            seen_here.add((producer, s))
        frame = pl.concat(
            [
                template,
                pl.DataFrame(
                    {"producer_id": [p for p, _ in rows], "seq": [s for _, s in rows]}
                ).with_columns(
                    pl.lit(0, pl.Int64).alias("ts_ns"),
                    pl.lit(0, pl.Int64).alias("ts_recv_ns"),
                    pl.lit("BTCUSDT").alias("symbol"),
                    pl.lit("").alias("agent_id"),
                    pl.lit("r").alias("run_id"),
                    pl.lit("trade").alias("kind"),
                ),
            ],
            how="diagonal_relaxed",
        ).select(TICKS.names)
        r = sink.submit_frame("ticks", frame, now_ns=0)
        assert (r.accepted, r.duplicates) == (len(want), len(rows) - len(want))
        for producer, s in want:
            model[producer] = max(s, model.get(producer, -1))
        accepted.extend(want)
    batch = sink.begin_flush(0)
    got = [] if batch is None else list(batch.frames["ticks"].select("producer_id", "seq").rows())
    assert got == accepted  # the same rows, in the order they came
    assert batch is None or batch.state.watermarks["ticks"] == model


class _NoStore:
    """A backend that is never committed to (the test only de-duplicates)."""

    def recover(self) -> CommitState:
        return CommitState()

    def commit(self, flush_id: int, frames: Mapping[str, pl.DataFrame], state: CommitState) -> None:
        raise AssertionError("not committed in this test")
