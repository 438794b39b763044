"""Reading the Parquet store while its sink merges files (sapphire.storage.query.read_table):
a merge removes the files it replaces, then shows the merged one, so a reader that listed
the files before may find one gone, and one that listed inside that gap misses its rows.
Every read still gets each committed row once."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sapphire.storage import query
from sapphire.storage.query import IncompleteRunError, Listing, read_table
from tests.storage.test_parquet_compaction import sink_on, ticks, write

RUN = "live"
SYMBOLS = ("BTCUSDT", "ETHUSDT")  # one producer each (md-btc, md-eth), one partition each


def flush(i: int, rows: int = 3) -> list[pl.DataFrame]:
    return [ticks(i * rows, (i + 1) * rows, symbol=s, run=RUN) for s in SYMBOLS]


def committed(root: Path) -> dict[str, int]:
    """Producer -> rows its sink's manifest commits now (the manifest is replaced whole)."""
    try:
        marks = json.loads((root / "_sapphire" / f"manifest-{RUN}.json").read_bytes())
    except FileNotFoundError:
        return {}
    return {p: int(m) + 1 for p, m in marks["watermarks"].get("ticks", {}).items()}


def per_producer(frame: pl.DataFrame) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for producer, seq in frame.select("producer_id", "seq").iter_rows():
        out.setdefault(producer, []).append(seq)
    return out


def test_reads_while_a_sink_merges_get_each_committed_row_once(tmp_path: Path) -> None:
    """A real sink commits (and merges, every 8 flushes of a partition) on a thread while
    reads of the run and of every run loop. Each read of the run holds each producer's rows
    0..n-1 once, n between what the manifest committed before and after it; no read (of the
    run or of every run) holds fewer rows of a producer than an earlier one did (a read
    inside a merge's gap would)."""
    sink = sink_on(tmp_path, sink_id=RUN, compact_at=8)
    for i in range(40):  # a store with merged files already, so a read has several to open
        write(sink, flush(i))
    done = threading.Event()
    failed: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(40, 640):
                write(sink, flush(i))
        except BaseException as exc:  # the reader's assertions must see it
            failed.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = {kind: dict.fromkeys(committed(tmp_path), 0) for kind in ("run", "all")}
    reads = 0
    try:
        while not done.is_set():
            before = committed(tmp_path)
            got = read_table(tmp_path, "ticks", RUN).select("producer_id", "seq").collect()
            after = committed(tmp_path)
            everything = read_table(tmp_path, "ticks").select("producer_id", "seq").collect()
            for kind, frame in (("run", got), ("all", everything)):
                for producer, seqs in per_producer(frame).items():
                    assert sorted(seqs) == list(range(len(seqs))), (kind, producer)
                    assert len(seqs) >= seen[kind][producer], (kind, producer)
                    seen[kind][producer] = len(seqs)
            for producer, seqs in per_producer(got).items():
                assert before[producer] <= len(seqs) <= after[producer], producer
            reads += 1
    finally:
        done.wait()
        thread.join()
    assert not failed
    assert reads >= 5  # the reads overlapped the writes
    final = read_table(tmp_path, "ticks", RUN).collect()
    assert {p: len(s) for p, s in per_producer(final).items()} == committed(tmp_path)
    assert final.height == 640 * 3 * len(SYMBOLS)


def listing_then(action: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> list[Listing]:
    """Make the next read list the files, then run ``action`` (before it opens them)."""
    real = query.list_parts
    listings: list[Listing] = []

    def listed(base: Path, pattern: str) -> Listing:
        listing = real(base, pattern)
        listings.append(listing)
        if len(listings) == 1:
            action()
        return listing

    monkeypatch.setattr(query, "list_parts", listed)
    return listings


@pytest.mark.parametrize("run", [RUN, None])
def test_a_file_a_merge_removes_after_the_listing_is_read_from_the_merged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: str | None
) -> None:
    sink = sink_on(tmp_path, sink_id=RUN, compact_at=4)
    for i in range(3):
        write(sink, flush(i))
    before = sorted(p.name for p in tmp_path.rglob("part-*.parquet"))
    # the 4th flush of a partition merges its 3 files with it: they go between list and open
    listings = listing_then(lambda: write(sink, flush(3)), monkeypatch)
    got = read_table(tmp_path, "ticks", run).sort("producer_id", "seq").collect()
    assert len(listings) == 2  # listed again once its scan found a file gone
    assert sorted(Path(f).name for f in listings[0].files) == before
    assert all(not Path(f).exists() for f in listings[0].files)
    # the store as it stands after the merge, when the read listed again: all 4 flushes
    assert per_producer(got) == {p: list(range(12)) for p in ("md-btc", "md-eth")}


def test_a_file_gone_for_good_is_missing_rows_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = sink_on(tmp_path, sink_id=RUN, compact_at=None)
    for i in range(3):
        write(sink, flush(i))
    victim = sorted(tmp_path.rglob("part-*.parquet"))[0]
    listings = listing_then(victim.unlink, monkeypatch)
    with pytest.raises(IncompleteRunError, match=f"15 of the 18 rows run {RUN} committed"):
        read_table(tmp_path, "ticks", RUN).collect()
    assert victim.as_posix() in listings[0].files
    assert all(victim.as_posix() not in listing.files for listing in listings[1:])


@pytest.mark.parametrize("run", [RUN, None])
def test_a_read_listing_inside_a_merges_gap_waits_for_the_merged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: str | None
) -> None:
    """The sink stops inside a merge's gap (its sources removed, the merged file still
    hidden) until a read has listed the folder, then shows it: the read gets every row,
    never the partition without the merged rows."""
    sink = sink_on(tmp_path, sink_id=RUN, compact_at=4)
    for i in range(3):
        write(sink, flush(i))
    real_list, real_replace = query.list_parts, os.replace
    listed_in_gap = threading.Event()
    in_gap = threading.Event()
    listings: list[Listing] = []

    def listed(base: Path, pattern: str) -> Listing:
        listing = real_list(base, pattern)
        listings.append(listing)
        if in_gap.is_set():
            listed_in_gap.set()
        return listing

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if str(src).endswith(".merging") and not in_gap.is_set():
            in_gap.set()  # every source of this partition is gone: the gap
            assert listed_in_gap.wait(10)
            time.sleep(0.01)  # the read goes on with what it listed meanwhile
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(query, "list_parts", listed)
    monkeypatch.setattr("os.replace", replace)
    out: list[pl.DataFrame] = []

    def reader() -> None:
        assert in_gap.wait(10)
        out.append(read_table(tmp_path, "ticks", run).select("producer_id", "seq").collect())

    thread = threading.Thread(target=reader)
    thread.start()
    write(sink, flush(3))
    thread.join()
    monkeypatch.undo()
    assert len(listings) >= 2 and listings[0].merging  # the first listing was in the gap
    assert per_producer(out[0]) == {p: list(range(12)) for p in ("md-btc", "md-eth")}
