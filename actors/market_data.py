"""MarketDataActor: cuts the replay (or the live stream) into the kernel's windows."""

from __future__ import annotations

import itertools
import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray

from actors.checkpoint import make_store
from actors.codec import encode_events
from actors.stepper import Stepper
from sapphire.kernel.timing import Clock, Window
from sapphire.kernel.windows import CutterState, WindowCutter
from sapphire.model.events import AnyMarketEvent

# (events as msgpack, the window, how many events); None once the data is over
Batch = tuple[bytes, Window, int] | None


@ray.remote(max_restarts=-1, max_task_retries=-1)
class MarketDataActor:
    def __init__(
        self,
        open_stream: Callable[[], Any],
        window_ns: int,
        clock: str,
        batch_events: int,
        checkpoint_location: str,
        max_events: int | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> None:
        self._open_stream = open_stream
        self._window_ns = window_ns
        self._clock = Clock(clock)
        self._batch_events = batch_events
        self._max_events = max_events
        self._start_ns = start_ns
        self._end_ns = end_ns
        self._state = CutterState()
        self._cutter: WindowCutter | None = None
        self._feed: Any = None
        self._raw: Iterator[AnyMarketEvent] | None = None  # a replay served by offset
        self._raw_at = 0
        self._stepper: Stepper[Batch] = Stepper(
            make_store(checkpoint_location), "market-data", self._snapshot, self._restore
        )

    def _snapshot(self) -> bytes:
        return pickle.dumps(self._state)

    def _restore(self, data: bytes) -> None:
        self._state = pickle.loads(data)

    def _source(self) -> Any:
        if self._feed is None:
            self._feed = self._open_stream()
            if not hasattr(self._feed, "take"):
                # After a restart a replay is reopened and fast-forwarded: recorded streams
                # are deterministic, so the same events follow. A live feed (``take``) is
                # never fast-forwarded: it continues from now.
                consumed = self._state.consumed
                if hasattr(self._feed, "skip"):
                    self._feed.skip(consumed)
                    events: Iterator[AnyMarketEvent] = iter(self._feed)
                else:
                    events = itertools.islice(iter(self._feed), consumed, None)
                self._cutter = WindowCutter(
                    events,
                    window_ns=self._window_ns,
                    clock=self._clock,
                    max_window_events=self._batch_events,
                    max_events=self._max_events,
                    start_ns=self._start_ns,
                    end_ns=self._end_ns,
                    state=self._state,
                )
        return self._feed

    def get_events(self, offset: int, count: int) -> tuple[bytes, int]:
        """A replay's events ``offset`` .. ``offset + count - 1`` as recorded (the coordinator
        cuts them into windows on the run's clock). Any offset can be asked for again (a
        rewound coordinator): the recording is reopened and fast-forwarded, deterministically."""
        if self._raw is None or self._raw_at != offset:
            self._feed = self._open_stream()
            if hasattr(self._feed, "skip"):
                self._feed.skip(offset)
                self._raw = iter(self._feed)
            else:
                self._raw = itertools.islice(iter(self._feed), offset, None)
        events = list(itertools.islice(self._raw, count))
        self._raw_at = offset + len(events)
        return encode_events(events), len(events)

    def get_window(self, step: int, pending_ns: int | None, barrier: bool = True) -> Batch:
        return self._stepper.run(step, lambda: self._next_window(step, pending_ns), barrier=barrier)

    def rewind(self, step: int) -> int:
        """Back to barrier ``step``: the replay reopens and fast-forwards to that position."""
        self._stepper.rewind(step)
        if self._cutter is not None:  # a live feed (no cutter) just continues
            self._feed = None
            self._cutter = None
        return self._stepper.last_step

    def _next_window(self, step: int, pending_ns: int | None) -> Batch:
        feed = self._source()
        if self._cutter is None:
            return self._live_window(feed, step)
        got = self._cutter.next_window(step, pending_ns)
        if got is None:
            return None
        events, window = got
        return encode_events(events), window, len(events)

    def _live_window(self, feed: Any, step: int) -> Batch:
        """Live: a window is what arrived since the last one (up to ``batch_events``)."""
        st = self._state
        limit = self._batch_events
        if self._max_events is not None:
            limit = max(0, min(limit, self._max_events - st.consumed))
        events = feed.take(limit)
        st.consumed += len(events)
        start = st.last_end_ns
        end = max(start + 1, time.time_ns())
        if events:
            end = max(end, max(e.ts_event_ns for e in events) + 1)
        st.last_end_ns = end
        last = self._max_events is not None and st.consumed >= self._max_events
        return (
            encode_events(events),
            Window(step=step, start_ns=start, end_ns=end, last=last),
            len(events),
        )

    def stats(self) -> dict[str, Any]:
        return {
            "consumed": self._state.consumed,
            "clamped": self._state.clamped,
            "last_step": self._stepper.last_step,
            "checkpoint_s": self._stepper.checkpoint_s,
            "restored": self._stepper.restored,
            "rejected": self._feed.rejected() if hasattr(self._feed, "rejected") else {},
        }
