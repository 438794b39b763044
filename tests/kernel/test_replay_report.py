"""What a replay reports of its data (rejected rows, selected sessions met) is the state as of
the last pair the run consumed from each source, not of how far a loader or a Ray reader read
ahead: every runner reports the same."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.data import sample
from sapphire.data.convert import Tagged
from sapphire.data.validation import RejectStats, RowReject
from sapphire.kernel.assembly import MergeLog, ReplayFeed, SourceReport, merged_report
from sapphire.model.events import Side, Trade


class CheckedFile:
    """A source that checks rows a frame at a time, as the loaders do: a frame's rejections
    are counted before its first pair is given."""

    path = Path("frames.csv")

    def __init__(self, frames: list[tuple[int, int, str]]) -> None:
        self.stats = RejectStats(source="frames.csv")
        self.sessions_seen: set[str] = set()
        self._frames = frames  # (rejected rows, pairs, session)

    def tagged(self) -> Iterator[Tagged]:
        t = 0
        for rejected, pairs, session in self._frames:
            if rejected:
                self.stats.reject(RowReject.MALFORMED, 0, rows=rejected)
            if pairs:
                self.sessions_seen.add(session)
            for _ in range(pairs):
                t += 1
                yield (
                    session,
                    Trade(
                        ts_event_ns=t, symbol="X", price_ticks=1, qty_lots=1, taker_side=Side.BUY
                    ),
                )


def test_the_state_is_the_one_as_of_the_last_pair_consumed() -> None:
    # frames: 1 bad row then 5 pairs; 2 bad rows then 5 pairs (session b); 1 bad row, no pair
    source = CheckedFile([(1, 5, "a"), (2, 5, "b"), (1, 0, "b")])
    report = SourceReport(source)
    pairs = report.track(source.tagged())
    assert report.state(0) == ({}, frozenset())
    taken = [next(pairs) for _ in range(6)]  # the first pair of the second frame too
    assert len(taken) == 6
    assert report.state(0) == ({}, frozenset())
    assert report.state(5) == ({"malformed": 1}, {"a"})
    # read ahead into the second frame: a run that consumed 5 pairs still reports 1
    assert report.state(6) == ({"malformed": 3}, {"a", "b"})
    assert report.state(None) == ({"malformed": 3}, {"a", "b"})
    rest = list(pairs)
    assert len(rest) == 4
    # rows rejected after the last pair count once the whole source was consumed
    assert report.state(9) == ({"malformed": 3}, {"a", "b"})
    assert report.state(10) == ({"malformed": 4}, {"a", "b"})
    counts, missing = merged_report([report.state(10), ({"off_grid": 2}, frozenset())], "abc")
    assert counts == {"malformed": 4, "off_grid": 2}
    assert missing == ["c"]


def test_the_merge_log_counts_each_sources_events_in_a_prefix() -> None:
    log = MergeLog(3)
    items = [(0, "s", source, None) for source in (2, 0, 0, 2, 1, 2)]
    assert [i[2] for i in log.track(iter(items))] == [2, 0, 0, 2, 1, 2]  # type: ignore[arg-type]
    assert log.taken(0) == [0, 0, 0]
    assert log.taken(4) == [2, 0, 2]
    assert log.taken(6) == log.taken(100) == [2, 1, 3]
    assert MergeLog(2).taken(5) == [0, 0]


# -- bounded: a replay of any length keeps the recent part of its log and report ------------
@settings(max_examples=60, deadline=None)
@given(
    sources=st.lists(st.integers(0, 3), max_size=300),
    keep=st.integers(1, 40),
)
def test_the_merge_log_stays_bounded_and_answers_every_count_it_keeps(
    sources: list[int], keep: int
) -> None:
    floors: list[list[int]] = []
    log = MergeLog(4, keep, floors.append)
    items = [(0, "s", source, None) for source in sources]
    seen = []
    for item in log.track(iter(items)):  # type: ignore[arg-type]
        seen.append(item[2])
        assert len(log._ids) <= 2 * keep  # never more than twice what it keeps
    assert seen == sources and len(log) == len(sources)
    assert log.floor >= max(0, len(sources) - 2 * keep)
    for n in range(log.floor, len(sources) + 2):
        assert log.taken(n) == [sources[:n].count(s) for s in range(4)]
    if log.floor:
        with pytest.raises(LookupError):
            log.taken(log.floor - 1)
        # each move of the floor was told with each source's count below it
        assert floors[-1] == [sources[: log.floor].count(s) for s in range(4)]


def test_a_report_forgets_states_only_below_its_floor() -> None:
    frames = [(1, 3, "a"), (2, 3, "a"), (1, 3, "b"), (4, 3, "b"), (1, 0, "b")]
    kept, whole = CheckedFile(frames), CheckedFile(frames)
    bounded, full = SourceReport(kept), SourceReport(whole)
    assert len(list(bounded.track(kept.tagged()))) == len(list(full.track(whole.tagged()))) == 12
    bounded.forget_before(7)
    assert len(bounded._states) < len(full._states)
    for taken in [*range(7, 14), None]:
        assert bounded.state(taken) == full.state(taken)
    with pytest.raises(LookupError):
        bounded.state(6)


def _with_bad_rows(tmp_path: Path) -> list[Path]:
    """The bundled sample's files, every 997th row of its depth broken: rejections in each
    of the loader's chunks, so what a report counts depends on how far the run consumed."""
    files = sample.event_files()
    lines = gzip.decompress(files[0].read_bytes()).decode().splitlines()
    broken = [line if i % 997 else "2024-08-08,not-a-row" for i, line in enumerate(lines)]
    broken[0] = lines[0]
    depth = tmp_path / files[0].name
    depth.write_bytes(gzip.compress(("\n".join(broken) + "\n").encode()))
    return [depth, *files[1:]]


def test_a_replay_far_ahead_of_its_run_reports_what_the_run_consumed(tmp_path: Path) -> None:
    # a log keeping 500 events: a report further back than its floor is merged again (0,
    # 1,000 and total - 3,000 are below it), one nearer is answered from the log
    files = _with_bad_rows(tmp_path)
    inst = sample.sample_instrument()
    instruments = {inst.symbol: inst}

    def feed(keep: int) -> ReplayFeed:
        return ReplayFeed(files, instruments, "ts_recv_ns", merge_log_keep=keep)

    bounded, full = feed(500), feed(MergeLog.KEEP)
    total = sum(1 for _ in full)
    assert sum(1 for _ in bounded) == total > 4_000
    assert bounded.log.floor >= total - 1_000 and full.log.floor == 0
    assert len(bounded.log._ids) <= 1_000
    for consumed in (0, 1_000, total - 3_000, total - 400, total, None):
        assert bounded.report(consumed) == full.report(consumed), consumed
    assert full.report(None)[0]["malformed"] > 100  # the broken rows are in what it reports
