"""What a replay reports of its data (rejected rows, selected sessions met) is the state as of
the last pair the run consumed from each source, not of how far a loader or a Ray reader read
ahead: every runner reports the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sapphire.data.convert import Tagged
from sapphire.data.validation import RejectStats, RowReject
from sapphire.kernel.assembly import MergeLog, SourceReport, merged_report
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
