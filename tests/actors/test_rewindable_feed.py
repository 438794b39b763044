"""A replay feed rewound to the coordinator's last barrier gives the same events again from
memory; a rewind past what it kept says so, and the coordinator reopens the feed instead."""

from __future__ import annotations

import itertools
from typing import Any

from actors.coordinator import RewindableFeed
from sapphire.model.events import BookDeltas


class Counting(RewindableFeed):
    MAX_ROWS = 50  # an int is one row

    def __init__(self, given: int = 0) -> None:
        super().__init__(given)
        self._source = itertools.count(given)

    def _next_new(self) -> Any:
        return next(self._source)


def test_a_rewind_gives_the_events_since_the_barrier_again_in_order() -> None:
    feed = Counting(given=100)  # a feed opened at event 100 (a restored coordinator's)
    assert list(itertools.islice(feed, 10)) == list(range(100, 110))
    feed.forget_before(104)  # a barrier after event 103
    assert list(itertools.islice(feed, 5)) == list(range(110, 115))
    assert feed.rewind_to(104)
    # again from the barrier, then on past where it was, each event once
    assert list(itertools.islice(feed, 20)) == list(range(104, 124))
    # rewound twice over the same stretch (a second failure before the next barrier)
    assert feed.rewind_to(104) and feed.rewind_to(104)
    assert next(feed) == 104
    assert feed.rewinds == 3
    # before the barrier, or beyond what was given: not kept, the caller reopens
    assert not feed.rewind_to(103)
    assert not feed.rewind_to(200)


def test_a_feed_keeps_a_bounded_number_of_events() -> None:
    feed = Counting()
    assert list(itertools.islice(feed, 80)) == list(range(80))
    # 80 given since the last barrier, 50 kept: a rewind to 0 would need what was dropped
    assert not feed.rewind_to(0)
    assert feed.rewind_to(30)
    assert list(itertools.islice(feed, 55)) == list(range(30, 85))


class Messages(RewindableFeed):
    MAX_ROWS = 50

    def __init__(self) -> None:
        super().__init__(0)
        self._ts = itertools.count(1)

    def _next_new(self) -> Any:
        levels = tuple((1, 100 + i, 1) for i in range(20))
        return BookDeltas(ts_event_ns=next(self._ts), symbol="X", levels=levels)


def test_a_depth_message_counts_its_levels_towards_the_bound() -> None:
    feed = Messages()
    given = list(itertools.islice(feed, 3))  # 60 rows: the first message is dropped
    assert not feed.rewind_to(0)
    assert feed.rewind_to(1)
    assert list(itertools.islice(feed, 2)) == given[1:]
