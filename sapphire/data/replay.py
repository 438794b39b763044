"""Time-ordered replay of several event streams, one recording session at a time.

Merging is a heapq k-way merge on an explicit key (``ts_event_ns`` or ``ts_recv_ns``); events
of different streams at the same time come in the order they were received (``ts_recv_ns``),
then by stream index, so the order of ``data.files`` changes nothing where the recorder told
the order (on a millisecond exchange clock a trade and a diff often share a time: in the
order of the files, reordering them changed the hftbacktest comparison's fills); one
stream's events keep their order. The key is made monotone per
stream (``max`` with the stream's previous key) because a REST snapshot can carry an
exchange time older than the diff received before it; it is replayed where it was received.
Streams are consumed lazily, so memory holds one pending event per stream. Several venues'
streams merge the same way, once :func:`qualified` has made their symbols distinct.

Events with no exchange time (Binance spot bookTicker rows and REST snapshots, some venues'
book and ticker channels: their loaders set ``ts_event_ns`` to the receive time) are put on
the exchange's clock before they are merged on it (:class:`RecorderClock`): a recorder whose
clock lags the exchange's (1.27 s on the 2024-08-08 spot recording) would otherwise replay
them that much before the trades and diffs received with them, a lookahead any agent reading
quotes could trade on.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec

from sapphire.data.convert import Tagged
from sapphire.data.replay_cache import Source
from sapphire.data.stream import EventStream
from sapphire.data.validation import DataFileError, RejectStats
from sapphire.model.events import AnyMarketEvent, BookDelta, group_levels

OrderKey = Literal["ts_event_ns", "ts_recv_ns"]


class Replayed(NamedTuple):
    key_ns: int  # the (monotone) ordering time
    session: str
    source: int  # index of the input stream
    event: AnyMarketEvent


class SessionGaps(NamedTuple):
    """The longest gap allowed between sessions replayed back to back (``max_ns``, 0: any)
    where the run trades on both sides of it: from ``start_ns``, before ``end_ns`` (the
    run's window on its clock; sessions before it only build the venue's book)."""

    max_ns: int = 0
    start_ns: int = -(2**63)
    end_ns: int = 2**63

    def check(self, before: str, before_ns: int, after: str, after_ns: int) -> None:
        """Raise :class:`SessionGapError` where session ``after`` (its first event at
        ``after_ns``) starts further after ``before`` (its last at ``before_ns``) than
        allowed, the run trading in both: within a venue's files and between venues. Or
        as far *before* it: a file listing a session earlier in time after a later one
        (its rows after the later session's) would replay it after that session, every
        event clamped to the later session's last time and its book over the later one's."""
        gap = after_ns - before_ns
        if (
            self.max_ns
            and abs(gap) > self.max_ns
            and before_ns >= self.start_ns  # the run traded in the earlier session
            and after_ns < self.end_ns  # and will in this one
        ):
            raise SessionGapError(before, after, gap, self.max_ns)


ANY_GAP = SessionGaps()  # no limit: sessions replay back to back whatever their distance


class RecorderClock:
    """How far a recorder's clock lags the exchange's, per session of one venue's files, so
    an event stamped only with its receive time (``ts_event_ns == ts_recv_ns``) replays on
    the exchange's clock no earlier than the exchange could have sent it.

    The lag is read from the first :attr:`SAMPLE` events of each of the session's streams
    when the session opens: the largest ``ts_event_ns - ts_recv_ns`` seen (the recorder
    received the event that long *before* the exchange stamped it: only its clock can say
    that), 0 where no event does. A receive-stamped event then replays at ``ts_recv_ns +
    lag``: a message received at ``r`` left the exchange at or before ``r + lag`` on its
    clock, since no message of the session arrived faster than the fastest sampled one. A
    recorder ahead of the exchange (every latency positive) leaves the event at ``r``: late
    by its network latency, never early. The same events give the same lag in every runner
    and after a restart (the merge starts over), whatever the run's windows.

    A stream's read-ahead stops at its first receive-stamped event (its key waits for the
    lag): a file carrying quotes among its trades and diffs (a raw feed, a cryptofeed log)
    gives only the events before its first quote, a smaller sample whose fastest message
    may be a few milliseconds slower than the session's fastest."""

    SAMPLE = 1_000
    # A sample further above the session's median than this is a damaged time, not a clock
    # (a recorder's clock does not jump a minute between two messages): left out, so one bad
    # row cannot move every quote of the session.
    OUTLIER_NS = 60 * 10**9

    __slots__ = ("fixed", "lag_ns", "lagging")

    def __init__(
        self, lagging: dict[str, int] | None = None, fixed: frozenset[int] = frozenset()
    ) -> None:
        self.lag_ns: dict[str, int] = {}  # session -> ns, once the session has opened
        # where the sessions with a lag are told (the run's summary); two venues' files
        # sharing a session label: the larger
        self.lagging = lagging
        # the sources whose receive time is the venue's own (a Bybit archive's push time, a
        # bare Coinbase file's last exchange time): an event there with both times equal
        # has an exchange time, and is never restamped
        self.fixed = fixed

    def learn(self, session: str, events: Iterable[AnyMarketEvent]) -> None:
        ahead = sorted(e.ts_event_ns - e.ts_recv_ns for e in events if e.ts_recv_ns)
        lag = 0
        if ahead:
            median = ahead[len(ahead) // 2]
            lag = max(0, max(a for a in ahead if a <= median + self.OUTLIER_NS))
        self.lag_ns[session] = lag
        if lag and self.lagging is not None:
            self.lagging[session] = max(lag, self.lagging.get(session, 0))


def _keyed(
    stream: Iterable[Tagged], key: OrderKey, source: int, clock: RecorderClock | None = None
) -> Iterator[Replayed]:
    """``stream``'s pairs keyed on ``key``, made monotone; with ``clock`` (the exchange's
    clock), receive-stamped events restamped by their session's lag, or keyed on their
    receive time until the session opens (:func:`_by_session` restamps them then)."""
    last = -(2**63)
    make = tuple.__new__  # a NamedTuple's own constructor is a Python call, twice the cost
    if clock is None:
        for session, event in stream:
            value = getattr(event, key) or event.ts_event_ns
            if value > last:
                last = value
            yield make(Replayed, (last, session, source, event))
        return
    lags = clock.lag_ns
    replace = msgspec.structs.replace
    for session, event in stream:
        value = event.ts_event_ns
        if value == event.ts_recv_ns and value:
            lag = lags.get(session)
            if lag is None:  # the session is not open yet: its lag is not known
                yield make(Replayed, (value if value > last else last, session, source, event))
                # resumed: the session opened and replayed this event restamped by its lag
                value += lags[session]
                if value > last:
                    last = value
                continue
            if lag:
                event = replace(event, ts_event_ns=value + lag)
            value += lag
        if value > last:
            last = value
        yield make(Replayed, (last, session, source, event))


def merge(
    streams: Iterable[Iterable[Tagged] | EventStream],
    key: OrderKey = "ts_event_ns",
    groups: Sequence[int] | None = None,
    gaps: SessionGaps = ANY_GAP,
    lags: dict[str, int] | None = None,
    fixed: Iterable[int] = (),
) -> Iterator[Replayed]:
    """All events of ``streams`` (``(session, event)`` iterables, e.g. ``EventStream.tagged()``)
    ordered by ``key`` within each session; sessions are replayed one after another, the one
    whose next event is earliest first, and never interleaved.

    ``groups`` (one id per stream; None: all one group): sessions are sequential only within
    a group, the files of one venue, whose sessions are days of the same books (a day's file
    may run a few seconds past midnight into the next day's: its tail must not mix with the
    next session's book). Different groups, different venues with their own session labels
    and their own symbols, interleave on ``key`` whatever their labels say.

    ``lags`` (merged on the exchange's clock): filled, as sessions open, with each session
    whose recorder's clock lagged the exchange's and by how much (ns), the time added to
    its receive-stamped events (:class:`RecorderClock`). ``fixed``: the indexes of the
    streams whose receive time is the venue's own, not a recorder's
    (:func:`sapphire.data.registry.has_recorder_clock`): never restamped."""
    listed = list(streams)
    ids = [0] * len(listed) if groups is None else list(groups)
    if len(ids) != len(listed):
        raise ValueError(f"{len(ids)} group ids for {len(listed)} streams")
    by_group: dict[int, list[int]] = {}
    for source, group in enumerate(ids):
        by_group.setdefault(group, []).append(source)
    parts = [
        _by_session([(i, listed[i]) for i in members], key, gaps, lags, frozenset(fixed))
        for members in by_group.values()
    ]
    if len(parts) == 1:
        return parts[0]
    merged = heapq.merge(*parts, key=_merge_key)
    return _across_venues(merged, gaps) if gaps.max_ns else merged


def _across_venues(merged: Iterator[Replayed], gaps: SessionGaps) -> Iterator[Replayed]:
    """The groups' merge, checked for a gap where it moves from one venue's session to
    another's: each group checks its own sessions, and venue A's 2023 day beside venue B's
    2024 one merged back to back unchecked (one run over both, 15 months apart)."""
    before: Replayed | None = None
    for item in merged:
        if before is not None and item.session != before.session:
            gaps.check(before.session, before.key_ns, item.session, item.key_ns)
        before = item
        yield item


def _merge_key(item: Replayed) -> tuple[int, int, int]:
    return item.key_ns, item.event.ts_recv_ns, item.source


class SessionGapError(DataFileError):
    """Two recording sessions replayed back to back are further apart than the run allows
    (``data.max_session_gap_s``): one run over both would carry its positions, marks and
    agents' state across the gap as if no time had passed."""

    def __init__(self, before: str, after: str, gap_ns: int, limit_ns: int) -> None:
        if gap_ns < 0:
            message = (
                f"data: session {after!r} starts {_span(-gap_ns)} before session {before!r} "
                f"ends, and is replayed after it (data.max_session_gap_s: {limit_ns / 1e9:g}):"
                " a file lists it after a later session; select the sessions with "
                "data.sessions and run them apart"
            )
        else:
            message = (
                f"data: session {after!r} starts {_span(gap_ns)} after session {before!r} "
                f"ends (data.max_session_gap_s: {limit_ns / 1e9:g}): one run over both would "
                "carry its positions, marks and agents' state across that gap; select the "
                "sessions with data.sessions and run them apart, or set "
                "data.max_session_gap_s: 0 to replay them as one"
            )
        super().__init__(message)
        self.before, self.after, self.gap_ns = before, after, gap_ns
        self._limit_ns = limit_ns

    def __reduce__(self) -> tuple[type[SessionGapError], tuple[str, str, int, int]]:
        # across processes (a Ray actor's error) it is built again from its fields: from
        # its message alone it could not be, and Ray said "Failed to deserialize exception"
        return type(self), (self.before, self.after, self.gap_ns, self._limit_ns)


def _span(ns: int) -> str:
    seconds = ns / 1e9
    for unit, size in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} s"


def _by_session(
    streams: Sequence[tuple[int, Iterable[Tagged] | EventStream]],
    key: OrderKey,
    gaps: SessionGaps = ANY_GAP,
    lags: dict[str, int] | None = None,
    fixed: frozenset[int] = frozenset(),
) -> Iterator[Replayed]:
    """:func:`merge` of one group: ``(source index, stream)`` pairs, sessions one by one;
    a session starting more than ``gaps.max_ns`` after the previous one's last event, the
    run trading in both, raises :class:`SessionGapError`. ``fixed``: the sources whose
    receive time is no recorder's (:attr:`RecorderClock.fixed`)."""
    clock = RecorderClock(lags, fixed) if key == "ts_event_ns" else None
    heads: list[tuple[Replayed, Iterator[Replayed]]] = []
    for source, stream in streams:
        tagged = stream.tagged() if isinstance(stream, EventStream) else stream
        it = _keyed(tagged, key, source, None if source in fixed else clock)
        first = next(it, None)
        if first is not None:
            heads.append((first, it))
    before: tuple[str, int] | None = None  # the previous session and its last event's time
    while heads:
        while True:
            opening = min(heads, key=lambda h: _merge_key(h[0]))[0]
            if clock is None or opening.session in clock.lag_ns:
                break
            # its lag first: restamped, its heads may sort after another session's start
            heads = _on_exchange_clock(heads, opening.session, clock)
        session = opening.session
        if before is not None:
            # the opening event's own time: its key, kept monotone per stream, hides a file
            # going back in time to an earlier session
            at = getattr(opening.event, key) or opening.event.ts_event_ns
            gaps.check(before[0], before[1], session, at)
        tail = opening.key_ns
        heap: list[tuple[int, int, int, Replayed]] = []  # key, received, source
        waiting: list[tuple[Replayed, Iterator[Replayed]]] = []
        iters: dict[int, Iterator[Replayed]] = {}
        for head, it in heads:
            if head.session == session:
                heap.append((head.key_ns, head.event.ts_recv_ns, head.source, head))
                iters[head.source] = it
            else:
                waiting.append((head, it))
        heapq.heapify(heap)
        while heap:
            tail, _, source, item = heapq.heappop(heap)
            yield item
            it = iters[source]
            # The source runs on alone while its next event sorts before every other head
            # (same order as pushing it back and popping again, without the heap per event:
            # recorders write runs, e.g. the levels of one depth message).
            bound_key, bound_recv, bound_source, _ = heap[0] if heap else (1 << 63, 0, 0, None)
            for nxt in it:
                if nxt.session != session:
                    waiting.append((nxt, it))
                    break
                key_ns = nxt.key_ns
                if key_ns < bound_key or (
                    key_ns == bound_key
                    and (nxt.event.ts_recv_ns, source) < (bound_recv, bound_source)
                ):
                    tail = key_ns
                    yield nxt
                    continue
                heapq.heappush(heap, (key_ns, nxt.event.ts_recv_ns, source, nxt))
                break
        before = (session, tail)
        heads = waiting


def _on_exchange_clock(
    heads: list[tuple[Replayed, Iterator[Replayed]]], session: str, clock: RecorderClock
) -> list[tuple[Replayed, Iterator[Replayed]]]:
    """``heads`` with ``session`` opened on the exchange's clock: its lag learnt from the
    first events of each of its streams (read ahead and kept, in order, before the rest of
    the stream), and its receive-stamped heads restamped by it. Read-ahead stops at a
    stream's first receive-stamped event: its keying waits for the lag."""
    sample: list[AnyMarketEvent] = []
    ahead: list[tuple[Replayed, list[Replayed], Iterator[Replayed]]] = []
    for head, it in heads:
        kept: list[Replayed] = []
        if head.session == session and not _waits(head, clock):
            sample.append(head.event)
            for item in itertools.islice(it, RecorderClock.SAMPLE - 1):
                kept.append(item)
                if item.session != session or _waits(item, clock):
                    break
                sample.append(item.event)
        ahead.append((head, kept, it))
    clock.learn(session, sample)
    lag = clock.lag_ns[session]
    out: list[tuple[Replayed, Iterator[Replayed]]] = []
    for head, kept, it in ahead:
        if head.session == session and _waits(head, clock):
            head = _restamped(head, lag)
        if not kept:
            out.append((head, it))
        elif not _waits(kept[-1], clock):
            out.append((head, itertools.chain(kept, it)))
        elif kept[-1].session == session:
            kept[-1] = _restamped(kept[-1], lag)
            out.append((head, itertools.chain(kept, it)))
        else:  # waits for a session not open yet, which may open before it is read
            out.append((head, _then_restamped(kept, it, clock)))
    return out


def _waits(item: Replayed, clock: RecorderClock) -> bool:
    """``item`` has no exchange time yet: keyed before its session's lag was known."""
    event = item.event
    return event.ts_event_ns == event.ts_recv_ns != 0 and item.source not in clock.fixed


def _then_restamped(
    kept: list[Replayed], it: Iterator[Replayed], clock: RecorderClock
) -> Iterator[Replayed]:
    """``kept`` then ``it``, ``kept``'s last item (receive-stamped, of a session not yet
    open when it was read ahead) restamped if its session has opened by the time it is
    read: it may open before, its heads restamped then, this one not among them."""
    yield from kept[:-1]
    last = kept[-1]
    lag = clock.lag_ns.get(last.session)
    yield last if lag is None else _restamped(last, lag)
    yield from it


def _restamped(item: Replayed, lag: int) -> Replayed:
    """A receive-stamped ``item`` keyed before its session's lag was known, on the
    exchange's clock now (the key stays monotone, as :func:`_keyed` made it)."""
    if not lag:
        return item
    t = item.event.ts_event_ns + lag
    event = msgspec.structs.replace(item.event, ts_event_ns=t)
    return Replayed(max(item.key_ns, t), item.session, item.source, event)


def qualified(stream: Iterable[Tagged], symbols: Mapping[str, str]) -> Iterator[Tagged]:
    """``stream`` with each event's venue symbol replaced by its run symbol (``symbols``:
    venue symbol -> run symbol, e.g. ``BTCUSD`` -> ``BYBIT:BTCUSD``), so that several venues'
    streams can be merged without two venues' instruments colliding. Symbols not in
    ``symbols`` pass unchanged (the loader already rejected those without an instrument)."""
    replace = msgspec.structs.replace
    for session, event in stream:
        run_symbol = symbols.get(event.symbol)
        yield session, event if run_symbol is None else replace(event, symbol=run_symbol)


def grouped(stream: Iterable[Tagged]) -> Iterator[Tagged]:
    """``stream`` with the consecutive levels of each depth message as one event
    (:func:`sapphire.model.events.group_levels`: a ``BookDeltas``, or a lone ``BookDelta``).
    A message is the levels with one session, symbol, pair of times and update ids, up to the
    one with ``last_in_batch``; anything else closes it (a message whose last level never
    came is still given, as it was recorded). The pair order is kept, so a merge of grouped
    streams gives the same levels in the same order (they share their ordering key)."""
    held: list[BookDelta] = []
    label = ""
    delta_type = BookDelta
    for session, event in stream:
        if type(event) is delta_type:
            d: BookDelta = event
            if held:
                h = held[0]
                if (
                    session == label
                    and d.final_update_id == h.final_update_id
                    and d.ts_event_ns == h.ts_event_ns
                    and d.ts_recv_ns == h.ts_recv_ns
                    and d.first_update_id == h.first_update_id
                    and d.prev_final_update_id == h.prev_final_update_id
                    and d.symbol == h.symbol
                ):
                    held.append(d)
                    if d.last_in_batch:
                        yield label, group_levels(held)
                        held = []
                    continue
                yield label, group_levels(held)
                held = []
            if d.last_in_batch:
                yield session, d
            else:
                held = [d]
                label = session
            continue
        if held:
            yield label, group_levels(held)
            held = []
        yield session, event
    if held:
        yield label, group_levels(held)


class GroupedStream:
    """A file's stream whose pairs are :func:`grouped` (what a replay reads and caches); its
    reported state is the stream's own."""

    def __init__(self, stream: Source) -> None:
        self._stream = stream

    @property
    def path(self) -> Path:
        return self._stream.path

    @property
    def stats(self) -> RejectStats:
        return self._stream.stats

    @property
    def sessions_seen(self) -> set[str]:
        return self._stream.sessions_seen

    def tagged(self) -> Iterator[Tagged]:
        return grouped(self._stream.tagged())


def merge_events(
    streams: Iterable[Iterable[Tagged] | EventStream], order_by: OrderKey = "ts_event_ns"
) -> Iterator[AnyMarketEvent]:
    """Just the events of :func:`merge` (session boundaries are kept by ordering only)."""
    tagged = [s.tagged() if isinstance(s, EventStream) else s for s in streams]
    for item in merge(tagged, key=order_by):
        yield item.event


def by_session(items: Iterator[Replayed]) -> Iterator[tuple[str, list[Replayed]]]:
    """Group a merged replay into ``(session, events)`` blocks (materializes one session)."""
    current: str | None = None
    block: list[Replayed] = []
    for item in items:
        if item.session != current and block:
            yield current or "", block
            block = []
        current = item.session
        block.append(item)
    if block:
        yield current or "", block


def pace(
    items: Iterable[Replayed],
    speed: float,
    sleep: Callable[[float], None],
    monotonic_ns: Callable[[], int],
) -> Iterator[Replayed]:
    """Release events at ``speed`` x recorded time (``speed <= 0`` or inf: as fast as possible).

    ``sleep`` and ``monotonic_ns`` are injected (no clock in ``sapphire``); the pacing anchor
    resets at every session boundary so gaps between sessions are not slept through.
    """
    fast = speed <= 0 or speed == float("inf")
    session: str | None = None
    anchor_event = anchor_wall = 0
    for item in items:
        if not fast:
            if item.session != session:
                session = item.session
                anchor_event, anchor_wall = item.key_ns, monotonic_ns()
            due = anchor_wall + (item.key_ns - anchor_event) / speed
            delay = (due - monotonic_ns()) / 1e9
            if delay > 0:
                sleep(delay)
        yield item
