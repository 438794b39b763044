"""Cuts a time-ordered market stream into the kernel's windows (one cutter for every runner).

A window starts at the earliest thing that is due: the next market event, or ``pending_ns``
(the earliest in-flight order, undelivered report or carried intent the coordinator knows
of), so quiet stretches cost no steps; it ends ``window_ns`` later, or earlier where
``max_events`` cuts it (never inside a group of events with one timestamp). The run's
horizon is when its last market event becomes visible (its time plus ``tail_ns``, the feed
latency; never past ``end_ns``): windows with no market event follow the data until then,
so agents and marks see every recorded event (a bar system's last close included) and the
window that reaches the horizon is the last one.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from sapphire.kernel.timing import Clock, Window
from sapphire.model.events import AnyMarketEvent, BookDeltas


def horizon_ns(last_t_ns: int, tail_ns: int, end_ns: int | None) -> int:
    """The run's end (exclusive): its last event visible (its time plus ``tail_ns``), within
    the data's ``end_ns`` (every event read is before it)."""
    horizon = last_t_ns + 1 + tail_ns
    return horizon if end_ns is None else min(horizon, end_ns)


class CutterState(msgspec.Struct, kw_only=True):
    consumed: int = 0  # events taken from the stream (its offset: where a restart reads on)
    rows: int = 0  # recorded rows they hold (a ``BookDeltas`` counts its levels)
    last_end_ns: int = 0
    last_t_ns: int = -(1 << 62)
    clamped: int = 0  # rows whose time ran backwards on the chosen clock (moved forward)
    exhausted: bool = False  # the horizon's window was cut: nothing more
    data_done: bool = False  # the stream ended; windows go on to the horizon


class WindowCutter:
    def __init__(
        self,
        events: Iterator[AnyMarketEvent],
        *,
        window_ns: int,
        clock: Clock = Clock.EXCHANGE,
        max_window_events: int = 1 << 62,
        max_events: int | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        tail_ns: int = 0,
        state: CutterState | None = None,
    ) -> None:
        if window_ns <= 0:
            raise ValueError("window_ns must be > 0")
        self._events = events
        self._window_ns = window_ns
        self._clock = clock
        self._max_window = max(1, max_window_events)
        self._max_events = max_events
        self._start_ns = start_ns
        self._end_ns = end_ns
        self._tail_ns = tail_ns
        self.state = state or CutterState()
        self._peeked: AnyMarketEvent | None = None
        # the peeked event's clamped rows: counted when it is taken, not when looked at, so
        # the count in a checkpoint is that of the events consumed (a cutter rebuilt from it
        # looks at that event again)
        self._peeked_clamp = 0
        # the first event at or after ``end_ns``, where the data reached it: a run whose
        # end_ns is before its data says so, not "the files hold none" (``no_events``)
        self.after_end_ns: int | None = None

    def _pull(self) -> AnyMarketEvent | None:
        """The next event on the run's clock, or None at the end (or the ``max_events`` cap)."""
        if self._peeked is not None:
            return self._peeked
        st = self.state
        cap = self._max_events
        if cap is not None and st.rows >= cap:
            return None
        event = next(self._events, None)
        if event is None:
            return None
        if cap is not None and type(event) is BookDeltas and len(event.levels) > cap - st.rows:
            event = event.head(cap - st.rows)  # the cap counts rows: it may cut a message
        t = self._clock.time_of(event)
        if t != event.ts_event_ns:
            event = msgspec.structs.replace(event, ts_event_ns=t)
        clamp = 0
        if event.ts_event_ns < st.last_t_ns:
            # Recorders interleave streams whose clocks disagree by a little; one clock
            # for the whole run means time never runs backwards (counted, not hidden).
            clamp = len(event.levels) if type(event) is BookDeltas else 1
            event = msgspec.structs.replace(event, ts_event_ns=st.last_t_ns)
        if self._end_ns is not None and event.ts_event_ns >= self._end_ns:
            if self.after_end_ns is None:
                self.after_end_ns = event.ts_event_ns
            return None  # the data's end: nothing from here on is read
        self._peeked = event
        self._peeked_clamp = clamp
        return event

    def _take(self) -> AnyMarketEvent:
        event = self._peeked
        assert event is not None
        self._peeked = None
        st = self.state
        st.clamped += self._peeked_clamp
        self._peeked_clamp = 0
        st.consumed += 1
        st.rows += len(event.levels) if type(event) is BookDeltas else 1
        st.last_t_ns = event.ts_event_ns
        return event

    def next_window(
        self, step: int, pending_ns: int | None
    ) -> tuple[list[AnyMarketEvent], Window] | None:
        """The events of the next window and the window; None once the stream is over."""
        st = self.state
        if st.exhausted:
            return None
        first = None if st.data_done else self._pull()
        if first is None:
            return self._tail_window(step, pending_ns)
        if self._start_ns is not None and first.ts_event_ns < self._start_ns:
            return self._warmup_window(step, self._start_ns)
        start = first.ts_event_ns
        if pending_ns is not None and pending_ns < start:
            start = pending_ns
        start = max(start, st.last_end_ns)
        end = start + self._window_ns
        batch: list[AnyMarketEvent] = []
        nxt: AnyMarketEvent | None = first
        if self._plain():
            nxt, end = self._fill_plain(batch, end)
        else:
            while nxt is not None and nxt.ts_event_ns < end:
                if len(batch) >= self._max_window and nxt.ts_event_ns > batch[-1].ts_event_ns:
                    end = nxt.ts_event_ns  # a shorter window: still exact, never mid-timestamp
                    break
                batch.append(self._take())
                nxt = self._pull()
        last = False
        if nxt is None:
            st.data_done = True
            horizon = self._horizon()
            if end >= horizon:
                end, last = horizon, True
                st.exhausted = True
        st.last_end_ns = end
        return batch, Window(step=step, start_ns=start, end_ns=end, last=last)

    def _horizon(self) -> int:
        return horizon_ns(self.state.last_t_ns, self._tail_ns, self._end_ns)

    def _tail_window(
        self, step: int, pending_ns: int | None
    ) -> tuple[list[AnyMarketEvent], Window] | None:
        """A window after the data's last event, up to the horizon (None: nothing was ever
        read, or the horizon is reached). It starts at the earliest thing due, so a quiet
        tail costs no steps; with nothing due, it is the one window ending at the horizon."""
        st = self.state
        st.data_done = True
        horizon = self._horizon()
        if st.consumed == 0 or st.last_end_ns >= horizon:
            st.exhausted = True
            return None
        due = horizon - self._window_ns if pending_ns is None else pending_ns
        start = max(st.last_end_ns, min(due, horizon - 1))
        end = min(start + self._window_ns, horizon)
        last = end == horizon
        st.exhausted = last
        st.last_end_ns = end
        return [], Window(step=step, start_ns=start, end_ns=end, last=last)

    def _plain(self) -> bool:
        """The common case :meth:`_fill_plain` serves: the exchange clock, no event cap."""
        return self._clock is not Clock.RECEIVE and self._max_events is None

    def _fill_plain(
        self, batch: list[AnyMarketEvent], end: int
    ) -> tuple[AnyMarketEvent | None, int]:
        """The general loop of :meth:`next_window` (:meth:`_take` then :meth:`_pull`, event
        by event: the window's end, its cap, clamping, the data's end) for the plain case,
        in one loop without two method calls per event. Returns the next event (left
        peeked) or None at the data's end, and the window's end."""
        st = self.state
        events = self._events
        data_end = self._end_ns
        cap = self._max_window
        last_t = st.last_t_ns
        consumed = st.consumed
        rows = st.rows
        deltas = BookDeltas
        event = self._peeked
        clamp = self._peeked_clamp  # counted as :meth:`_take` counts it
        assert event is not None
        try:
            while True:
                ts = event.ts_event_ns
                if ts >= end:
                    return event, end
                if len(batch) >= cap and ts > batch[-1].ts_event_ns:
                    return event, ts  # a shorter window: still exact, never mid-timestamp
                self._peeked = None
                batch.append(event)
                if clamp:
                    st.clamped += clamp
                    clamp = 0
                consumed += 1
                rows += len(event.levels) if type(event) is deltas else 1
                last_t = ts
                nxt = next(events, None)
                if nxt is None:
                    return None, end
                if nxt.ts_event_ns < last_t:
                    clamp = len(nxt.levels) if type(nxt) is deltas else 1  # never backwards
                    nxt = msgspec.structs.replace(nxt, ts_event_ns=last_t)
                if data_end is not None and nxt.ts_event_ns >= data_end:
                    return None, end  # the data's end: nothing from here on is read
                event = self._peeked = nxt
        finally:
            st.consumed = consumed
            st.rows = rows
            st.last_t_ns = last_t
            self._peeked_clamp = clamp if self._peeked is not None else 0

    def _warmup_window(self, step: int, start_ns: int) -> tuple[list[AnyMarketEvent], Window]:
        """Events before the data's start, for the venue's book only (no order can exist
        yet, so the event cap may cut anywhere)."""
        st = self.state
        batch: list[AnyMarketEvent] = []
        nxt = self._pull()
        while nxt is not None and nxt.ts_event_ns < start_ns and len(batch) < self._max_window:
            batch.append(self._take())
            nxt = self._pull()
        last = nxt is None
        if last:
            st.exhausted = True
        end = st.last_t_ns + 1
        st.last_end_ns = end
        window = Window(
            step=step, start_ns=batch[0].ts_event_ns, end_ns=end, last=last, warmup=True
        )
        return batch, window
