"""The Parquet store merges a partition's small files (sapphire.storage.parquet_backend): the
rows read back are exactly the rows written, in the same order, however often it merges and
wherever a crash stops it; a sink merges only its own files."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.storage.parquet_backend import ParquetBackend
from sapphire.storage.query import IncompleteRunError, read_table
from sapphire.storage.schemas import TICKS
from sapphire.storage.sink import StorageSink

DAY_NS = 86_400 * 1_000_000_000
T0 = 19_800 * DAY_NS  # a midnight (2024-03-18)

# one producer a symbol: a producer's rows then read back in seq order
PRODUCERS = {"BTCUSDT": "md-btc", "ETHUSDT": "md-eth"}


class Crash(BaseException):
    """The process dying: not an Exception, so neither the sink nor the backend catch it."""


def ticks(
    lo: int, hi: int, *, symbol: str = "BTCUSDT", run: str = "run-1", day: int = 0
) -> pl.DataFrame:
    """``ticks`` rows ``seq`` lo..hi-1 of the symbol's producer, on day ``day``."""
    seq = pl.int_range(lo, hi, dtype=pl.Int64, eager=True)
    n = hi - lo
    frame = pl.DataFrame(
        {
            "ts_ns": T0 + day * DAY_NS + seq * 1_000_000,
            "symbol": [symbol] * n,
            "agent_id": [""] * n,
            "run_id": [run] * n,
            "producer_id": [PRODUCERS.get(symbol, "md-x")] * n,
            "seq": seq,
            "kind": ["trade"] * n,
            "ts_recv_ns": T0 + day * DAY_NS + seq * 1_000_000 + 7,
            "price_ticks": 650_000 + seq % 17,
            "qty_lots": seq % 5 + 1,
            "side": pl.Series([1, -1] * n, dtype=pl.Int8)[:n],
            "trade_id": seq + 10_000,
        }
    )
    for col in TICKS.columns:
        if col.name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=col.dtype).alias(col.name))
    return frame.select(TICKS.names).cast(TICKS.polars_schema)  # type: ignore[arg-type]


Flush = list[pl.DataFrame]  # the frames one flush commits


def small_flushes(n: int, *, rows: int = 3, symbols: tuple[str, ...] = ("BTCUSDT",)) -> list[Flush]:
    """``n`` flushes of ``rows`` rows per symbol, the last third on the next day."""
    out: list[Flush] = []
    for i in range(n):
        day = 1 if i >= 2 * n // 3 else 0
        out.append([ticks(i * rows, (i + 1) * rows, symbol=s, day=day) for s in symbols])
    return out


def sink_on(root: Path, **kw: Any) -> StorageSink:
    kw.setdefault("durable", False)
    return StorageSink(ParquetBackend(root, **kw), batch_size=10**9, auto_flush=False)


def write(sink: StorageSink, flush: Flush) -> None:
    for frame in flush:
        sink.submit_frame("ticks", frame, now_ns=0)
    sink.flush(0)


def visible(root: Path, run: str | None = None) -> pl.DataFrame:
    """What a reader gets, in the order it gets it (no sort)."""
    return read_table(root, "ticks", run).drop("date").collect()


def own_files(root: Path, sink_id: str = "sink0") -> dict[str, list[str]]:
    """Partition folder -> the sink's file names there."""
    out: dict[str, list[str]] = {}
    for p in sorted(root.glob(f"ticks/*/*/part-{sink_id}-*.parquet")):
        out.setdefault(p.parent.relative_to(root).as_posix(), []).append(p.name)
    return out


def tiers(flushes: int, fanin: int) -> int:
    return max(1, math.ceil(math.log(flushes + 1, fanin)))


def assert_exactly_committed(root: Path, **kw: Any) -> StorageSink:
    """A sink restarted on ``root`` (its recovery) and the store agree: each producer's
    committed seqs are visible exactly once, in order, and nothing else is."""
    sink = sink_on(root, **kw)
    marks = sink.committed().get("ticks", {})
    got = visible(root)
    for producer in set(marks) | set(got["producer_id"].unique().to_list()):
        seqs = got.filter(pl.col("producer_id") == producer)["seq"].to_list()
        assert seqs == list(range(marks.get(producer, -1) + 1)), producer
    assert not list((root / "_sapphire").glob("staging-*/*"))
    assert not list(root.rglob("*.merging"))
    return sink


# --------------------------------------------------------------------------- (a)
@pytest.mark.parametrize("fanin", [2, 4, 64])
def test_many_small_flushes_keep_few_files_and_read_the_same(tmp_path: Path, fanin: int) -> None:
    flushes = small_flushes(300, symbols=("BTCUSDT", "ETHUSDT"))
    plain = sink_on(tmp_path / "plain", compact_at=None)
    merged = sink_on(tmp_path / "merged", compact_at=fanin)
    for flush in flushes:
        write(plain, flush)
        write(merged, flush)
    assert visible(tmp_path / "merged").equals(visible(tmp_path / "plain"))  # rows and order
    files = own_files(tmp_path / "merged")
    assert len(files) == 4  # 2 days x 2 symbols
    for folder, names in files.items():
        n = 100 if "date=2024-03-19" in folder else 200  # flushes into the folder
        assert len(names) <= (fanin - 1) * tiers(n, fanin), (folder, names)
    assert sum(len(v) for v in own_files(tmp_path / "plain").values()) == 4 * 150
    # the manifest keeps the merges of its own flush only: earlier ones are done
    doc = json.loads((tmp_path / "merged" / "_sapphire" / "manifest-sink0.json").read_text())
    assert set(doc.get("retire", {})) <= {str(doc["flush_id"])}
    assert sorted(os.listdir(tmp_path / "merged" / "_sapphire")) == [
        "manifest-sink0.json",
        "staging-sink0",
    ]


def test_each_row_is_rewritten_once_per_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Size tiers: n flushes cost O(n log n) rows written, not the O(n^2) of merging the
    whole partition every time."""
    written = [0]
    real = ParquetBackend._write_arrow

    def counting(self: ParquetBackend, table: Any, *a: Any) -> None:
        written[0] += table.num_rows
        real(self, table, *a)

    monkeypatch.setattr(ParquetBackend, "_write_arrow", counting)
    sink = sink_on(tmp_path, compact_at=4)
    n = 4**4  # 256 flushes of 3 rows, one partition
    for i in range(n):
        write(sink, [ticks(3 * i, 3 * i + 3)])
    assert written[0] <= 3 * n * (tiers(n, 4) + 1)  # written once, then once a tier climbed
    assert len(own_files(tmp_path)["ticks/date=2024-03-18/symbol=BTCUSDT"]) == 1  # 4^4: one file
    assert visible(tmp_path)["seq"].to_list() == list(range(3 * n))


def test_a_merge_never_writes_more_than_compact_rows(tmp_path: Path) -> None:
    sink = sink_on(tmp_path, compact_at=3, compact_rows=40)
    plain = sink_on(tmp_path / "plain", compact_at=None)
    seq = 0
    for i in range(200):
        n = [1, 2, 7, 3, 12][i % 5]
        write(sink, [ticks(seq, seq + n)])
        write(plain, [ticks(seq, seq + n)])
        seq += n
    assert visible(tmp_path).equals(visible(tmp_path / "plain"))
    names = own_files(tmp_path)["ticks/date=2024-03-18/symbol=BTCUSDT"]
    rows = [
        pq.read_metadata(tmp_path / "ticks/date=2024-03-18/symbol=BTCUSDT" / n).num_rows
        for n in names
    ]
    assert max(rows) <= 40
    assert sum(rows) == seq
    # files of 20-40 rows (final), but for the open tiers' newest ones (unmerged: 200 files of
    # 1-12 rows)
    assert sum(r < 20 for r in rows) <= 2 * tiers(200, 3)
    assert len(rows) <= seq // 20 + 2 * tiers(200, 3)


def test_a_store_written_without_merging_is_merged_when_written_again(tmp_path: Path) -> None:
    flushes = [[ticks(3 * i, 3 * i + 3)] for i in range(120)]  # one partition
    old = sink_on(tmp_path, compact_at=None)
    for flush in flushes[:100]:
        write(old, flush)
    assert sum(len(v) for v in own_files(tmp_path).values()) == 100
    resumed = sink_on(tmp_path, compact_at=8)
    for flush in flushes[100:]:
        write(resumed, flush)
    assert visible(tmp_path)["seq"].to_list() == list(range(360))
    for names in own_files(tmp_path).values():
        assert len(names) <= 7 * 3


def test_a_damaged_file_is_left_alone_and_commits_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = sink_on(tmp_path, compact_at=4)
    for i in range(2):
        write(sink, [ticks(3 * i, 3 * i + 3)])
    folder = tmp_path / "ticks/date=2024-03-18/symbol=BTCUSDT"
    damaged = folder / "part-sink0-000000000002.parquet"
    data = bytearray(damaged.read_bytes())
    data[4:40] = b"\xff" * 36  # the first page, not the footer: it lists, it does not read
    damaged.write_bytes(bytes(data))
    for i in range(2, 40):
        write(sink, [ticks(3 * i, 3 * i + 3)])
    assert sink.stats.flush_errors == 0
    assert "part-sink0-000000000002.parquet unreadable, not merged" in caplog.text
    assert damaged.read_bytes() == bytes(data)
    assert len(list(folder.iterdir())) <= 2 + 3 * 3
    rest = [p for p in folder.iterdir() if p != damaged]
    seqs = pl.concat([pl.read_parquet(p, hive_partitioning=False) for p in sorted(rest)])["seq"]
    assert seqs.to_list() == [0, 1, 2, *range(6, 120)]


def test_a_file_from_before_a_column_was_added_merges_with_it_null(tmp_path: Path) -> None:
    sink = sink_on(tmp_path, compact_at=4)
    write(sink, [ticks(0, 3)])
    first = tmp_path / "ticks/date=2024-03-18/symbol=BTCUSDT/part-sink0-000000000001.parquet"
    old = pq.read_table(first, partitioning=None).drop_columns(["bid_ticks"])
    pq.write_table(old, first)  # as written before the table had bid_ticks
    before = visible(tmp_path)
    for i in range(1, 4):
        write(sink, [ticks(3 * i, 3 * i + 3).with_columns(pl.lit(5, pl.Int64).alias("bid_ticks"))])
    assert len(own_files(tmp_path)["ticks/date=2024-03-18/symbol=BTCUSDT"]) == 1  # merged
    after = visible(tmp_path)
    assert after.head(3).equals(before)
    assert after["bid_ticks"].to_list() == [None] * 3 + [5] * 9


def test_a_merge_whose_move_fails_is_finished_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = sink_on(tmp_path, compact_at=3)
    for i in range(2):
        write(sink, [ticks(3 * i, 3 * i + 3)])
    real = os.replace
    failing = [True]

    def full_disk(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if failing[0] and "ticks" in str(dst):
            raise OSError(28, "No space left on device")
        real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    write(sink, [ticks(6, 9)])  # committed (the manifest says so), its move deferred
    assert sink.last_committed("ticks", "md-btc") == 8 and sink.stats.flush_errors == 0
    doc = json.loads((tmp_path / "_sapphire" / "manifest-sink0.json").read_text())
    assert doc["retire"] == {
        "3": {
            "ticks/date=2024-03-18/symbol=BTCUSDT": [
                "part-sink0-000000000001.parquet",
                "part-sink0-000000000002.parquet",
            ]
        }
    }
    # the move failed before anything was removed: the files it replaces are still read
    assert visible(tmp_path)["seq"].to_list() == list(range(6))
    write(sink, [ticks(9, 12)])  # the move still fails: this commit fails, rows kept
    assert sink.stats.flush_errors == 1
    failing[0] = False
    for i in range(4, 12):
        write(sink, [ticks(3 * i, 3 * i + 3)])
    assert visible(tmp_path)["seq"].to_list() == list(range(36))
    assert len(own_files(tmp_path)["ticks/date=2024-03-18/symbol=BTCUSDT"]) <= 2 * 3


# --------------------------------------------------------------------------- (b)
class Steps:
    """Counts the backend's steps on disk (file writes, fsyncs, renames, unlinks) and dies
    at the ``at``-th."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        self.at: int | None = None
        self.log: list[str] = []
        for module, name in ((os, "replace"), (os, "unlink"), (os, "fsync"), (pq, "write_table")):
            monkeypatch.setattr(module, name, self._wrap(name, getattr(module, name)))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            self.n += 1
            self.log.append(name)
            if self.n == self.at:
                raise Crash(f"{name} #{self.n}")
            return real(*args, **kwargs)

        return step

    def arm(self, at: int | None) -> None:
        self.n, self.at, self.log = 0, at, []


# 8 flushes into two partitions with compact_at=3 leave two files of tier 1 and two of tier
# 0 in each (8 = 22 in base 3): the 9th merges all of them into one of tier 2, in both
CRASH_FANIN = 3
CRASH_PRE = 8


def crash_flushes() -> list[Flush]:
    return [
        [ticks(2 * i, 2 * i + 2), ticks(i, i + 1, symbol="ETHUSDT")] for i in range(CRASH_PRE + 3)
    ]


@pytest.mark.parametrize("durable", [False, True])
def test_a_crash_at_any_step_of_a_merge_is_recovered_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    flushes = crash_flushes()
    clean = sink_on(tmp_path / "clean", compact_at=CRASH_FANIN)
    for flush in flushes:
        write(clean, flush)
    want = visible(tmp_path / "clean")

    steps = Steps(monkeypatch)
    kw = {"compact_at": CRASH_FANIN, "durable": durable}

    def up_to_the_merge(root: Path) -> StorageSink:
        steps.arm(None)
        sink = sink_on(root, **kw)
        for flush in flushes[:CRASH_PRE]:
            write(sink, flush)
        return sink

    probe = up_to_the_merge(tmp_path / "probe")
    steps.arm(None)
    write(probe, flushes[CRASH_PRE])
    total = steps.n
    assert steps.log.count("unlink") == 2 * 4  # both partitions merged 4 files
    assert total > 10

    for k in range(1, total + 1):
        root = tmp_path / f"crash-{k}"
        sink = up_to_the_merge(root)
        steps.arm(k)
        with pytest.raises(Crash):
            write(sink, flushes[CRASH_PRE])
        del sink  # the process is gone; only the store survives
        # before any recovery no row is visible twice (some may wait in staging)
        seen = visible(root).select("producer_id", "seq")
        assert not seen.is_duplicated().any(), k
        # recovery itself may die, again and again: each try starts from what the last left
        attempt = 1
        while True:
            steps.arm(attempt)
            try:
                sink_on(root, **kw)
                break
            except Crash:
                attempt += 1
        steps.arm(None)
        restarted = assert_exactly_committed(root, **kw)
        for flush in flushes:  # producers re-send everything; the sink drops what it has
            write(restarted, flush)
        assert visible(root).equals(want), k
        for names in own_files(root).values():
            assert len(names) <= 2 * 2


def test_readers_never_see_a_row_twice_while_a_merge_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes = crash_flushes()
    sink = sink_on(tmp_path, compact_at=CRASH_FANIN)
    for flush in flushes[:CRASH_PRE]:
        write(sink, flush)
    before = visible(tmp_path).height
    views: list[pl.DataFrame] = []
    for name in ("replace", "unlink"):
        real = getattr(os, name)

        def spy(*args: Any, _real: Callable[..., Any] = real, **kwargs: Any) -> Any:
            if "ticks" in str(args[0]):  # a step of the publish: look at the store first
                views.append(visible(tmp_path).select("producer_id", "seq"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, spy)
    write(sink, flushes[CRASH_PRE])
    monkeypatch.undo()
    assert len(views) == 2 * (1 + 4 + 1)  # per partition: hidden move, 4 unlinks, rename
    for view in views:
        assert not view.is_duplicated().any()
    assert views[0].height == before
    assert visible(tmp_path).height == before + 3


def test_a_run_stopped_inside_a_merge_says_where_its_rows_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = sink_on(tmp_path, sink_id="run-1", compact_at=3)
    for i in range(2):
        write(sink, [ticks(3 * i, 3 * i + 3)])
    real = os.replace

    def dies_before_showing(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if str(src).endswith(".merging"):
            raise Crash
        real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", dies_before_showing)
    with pytest.raises(Crash):
        write(sink, [ticks(6, 9)])
    monkeypatch.undo()
    folder = tmp_path / "ticks/date=2024-03-18/symbol=BTCUSDT"
    assert [p.name for p in folder.iterdir()] == [".part-run-1-000000000003.parquet.merging"]

    with pytest.raises(IncompleteRunError, match=f"0 of the 9 rows .* wait in {folder} "):
        visible(tmp_path, "run-1")
    assert_exactly_committed(tmp_path, sink_id="run-1", compact_at=3)  # --resume shows them
    assert visible(tmp_path, "run-1")["seq"].to_list() == list(range(9))


def test_recovery_removes_what_a_shown_merge_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merged file in place with its sources still there (their removal lost, as a power
    cut may lose it): the manifest still lists them, and recovery removes them."""
    sink = sink_on(tmp_path, compact_at=3)
    for i in range(2):
        write(sink, [ticks(3 * i, 3 * i + 3)])
    real_replace = os.replace

    def lost(path: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def shows_then_dies(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_replace(src, dst, *args, **kwargs)
        if str(src).endswith(".merging"):
            raise Crash

    monkeypatch.setattr(os, "unlink", lost)
    monkeypatch.setattr(os, "replace", shows_then_dies)
    with pytest.raises(Crash):
        write(sink, [ticks(6, 9)])
    monkeypatch.undo()
    assert visible(tmp_path).height == 6 + 9  # each of the first 6 rows twice
    assert_exactly_committed(tmp_path, compact_at=3)
    assert own_files(tmp_path) == {
        "ticks/date=2024-03-18/symbol=BTCUSDT": ["part-sink0-000000000003.parquet"]
    }


# --------------------------------------------------------------------------- (c)
@pytest.mark.parametrize("b_merges", [False, True])
def test_two_sinks_on_one_root_each_merge_only_their_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, b_merges: bool
) -> None:
    removed: list[str] = []
    real = os.unlink

    def spy(path: Any, *args: Any, **kwargs: Any) -> None:
        removed.append(Path(path).name)
        real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", spy)
    a = sink_on(tmp_path, sink_id="a", compact_at=3)
    b = sink_on(tmp_path, sink_id="b", compact_at=3 if b_merges else None)
    for i in range(30):
        write(a, [ticks(2 * i, 2 * i + 2, run="a")])
        write(b, [ticks(i, i + 1, run="b"), ticks(i, i + 1, symbol="ETHUSDT", run="b")])
    parts = [n for n in removed if n.startswith("part-")]
    assert parts and all(n.startswith(("part-a-", "part-b-")) for n in parts)
    if not b_merges:
        assert all(n.startswith("part-a-") for n in parts)
        assert sum(len(v) for v in own_files(tmp_path, "b").values()) == 60  # all still there
    assert visible(tmp_path, "a")["seq"].to_list() == list(range(60))
    got_b = visible(tmp_path, "b")
    for producer in ("md-btc", "md-eth"):
        assert got_b.filter(pl.col("producer_id") == producer)["seq"].to_list() == list(range(30))
    for sink_id, merges in (("a", True), ("b", b_merges)):
        for names in own_files(tmp_path, sink_id).values():
            assert len(names) <= (2 * tiers(30, 3) if merges else 30)
    # restarted, each finds its own files again and keeps merging them
    a = sink_on(tmp_path, sink_id="a", compact_at=3)
    for i in range(30, 40):
        write(a, [ticks(2 * i, 2 * i + 2, run="a")])
    assert visible(tmp_path, "a")["seq"].to_list() == list(range(80))
    assert got_b.equals(visible(tmp_path, "b"))


# --------------------------------------------------------------------------- (d)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sizes=st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 3), st.booleans()), min_size=1, max_size=30
    ),
    fanin=st.integers(2, 5),
    compact_rows=st.integers(4, 40),
    crash_at=st.one_of(st.none(), st.integers(1, 200)),
)
def test_property_merging_and_a_crash_anywhere_read_back_what_was_written(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    sizes: list[tuple[int, int, bool]],
    fanin: int,
    compact_rows: int,
    crash_at: int | None,
) -> None:
    """Flushes of 0-6 BTC and 0-3 ETH rows, some on the next day; the process may die at
    any step on disk, and start again once. The store ends holding every row once, read
    in the order a store that never merges gives."""
    root = tmp_path_factory.mktemp("prop")
    flushes: list[Flush] = []
    btc = eth = day = 0
    for n_btc, n_eth, next_day in sizes:
        day = max(day, int(next_day))  # days only go forward, as a producer's clock
        flushes.append(
            [
                ticks(btc, btc + n_btc, day=day),
                ticks(eth, eth + n_eth, symbol="ETHUSDT", day=day),
            ]
        )
        btc, eth = btc + n_btc, eth + n_eth
    plain = sink_on(root / "plain", compact_at=None)
    for flush in flushes:
        write(plain, flush)

    with monkeypatch.context() as patch:
        steps = Steps(patch)
        kw = {"compact_at": fanin, "compact_rows": compact_rows}
        steps.arm(crash_at)
        store = root / "merged"
        sink = sink_on(store, **kw)
        try:
            for flush in flushes:
                write(sink, flush)
        except Crash:
            steps.arm(None)
            sink = assert_exactly_committed(store, **kw)
            for flush in flushes:
                write(sink, flush)
    assert visible(store).equals(visible(root / "plain"))
