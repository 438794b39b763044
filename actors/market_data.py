"""MarketDataActor: serves a replay by offset, or cuts a live stream into the kernel's windows."""

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
from sapphire.data.replay import SessionGapError
from sapphire.kernel.assembly import replay_changed
from sapphire.kernel.timing import Window
from sapphire.kernel.windows import CutterState
from sapphire.model.events import AnyMarketEvent

# (events as msgpack, the window, how many events); None once the data is over
Batch = tuple[bytes, Window, int] | None


@ray.remote(max_restarts=-1, max_task_retries=-1)
class MarketDataActor:
    """Three roles. A replay: it serves the recording by event offset (``get_events``) and the
    coordinator cuts the windows, where ``pending_ns`` is known. A shard's replay: it serves
    its shard's recorded sources, each by its own offset (``get_source_events``), and the
    coordinator merges every shard's. A live feed: it cuts each window itself
    (``get_window``: what arrived since the last one), stepped and checkpointed like every
    peer of the coordinator."""

    def __init__(
        self,
        open_stream: Callable[[], Any],
        batch_events: int,
        checkpoint_location: str,
        max_events: int | None = None,
        name: str = "market-data",  # its checkpoint's key (a shard's reader: its own)
    ) -> None:
        self._open_stream = open_stream
        self._batch_events = batch_events
        self._max_events = max_events
        self._state = CutterState()
        self._feed: Any = None
        self._raw: Iterator[AnyMarketEvent] | None = None  # a replay served by offset
        self._raw_at = 0
        # the replay's session gap (``SessionGapError``) and the offset of the event after
        # which it stands: raised when the run asks past it, not with the chunk it ends
        self._gap: tuple[int, SessionGapError] | None = None
        self._stepper: Stepper[Batch] = Stepper(
            make_store(checkpoint_location), name, self._snapshot, self._restore
        )

    def _snapshot(self) -> bytes:
        return pickle.dumps(self._state)

    def _restore(self, data: bytes) -> None:
        self._state = pickle.loads(data)

    def get_events(self, offset: int, count: int) -> tuple[bytes, int]:
        """A replay's events ``offset`` .. ``offset + count - 1`` as recorded (the coordinator
        cuts them into windows on the run's clock). Any offset can be asked for again (a
        rewound coordinator): the recording is reopened and fast-forwarded, deterministically."""
        if self._gap is not None and offset >= self._gap[0]:
            raise self._gap[1]
        if self._raw is None or self._raw_at != offset:
            self._feed = self._open_stream()
            if hasattr(self._feed, "skip"):
                self._feed.skip(offset)
                if len(self._feed.log) < offset:
                    # the run consumed more than the replay now holds (a --resume after
                    # data.files or data.sessions changed): an error, never a short "done"
                    raise replay_changed(offset, len(self._feed.log))
                self._raw = iter(self._feed)
            else:
                self._raw = itertools.islice(iter(self._feed), offset, None)
        events: list[AnyMarketEvent] = []
        try:
            for event in itertools.islice(self._raw, count):
                events.append(event)
        except SessionGapError as gap:
            # the events before the gap go out, as one process's replay gives them one by
            # one: raised with the whole chunk, a run on Ray stopped up to a chunk earlier
            # than `sapphire backtest`, and failed where a cap inside that chunk let it end
            if not events:
                raise
            self._gap = (offset + len(events), gap)
        self._raw_at = offset + len(events)
        return encode_events(events), len(events)

    def get_source_events(
        self, source: int, offset: int, count: int
    ) -> tuple[bytes, list[tuple[str, int]], int]:
        """A shard's replay: source ``source``'s events ``offset`` .. ``offset + count - 1``
        as recorded, with their sessions as runs of ``(session, events)``
        (``ReplaySources.read``: any offset can be asked for again)."""
        if self._feed is None:
            self._feed = self._open_stream()
        pairs = self._feed.read(source, offset, count)
        sessions = itertools.groupby(p[0] for p in pairs)
        runs = [(session, sum(1 for _ in group)) for session, group in sessions]
        return encode_events([p[1] for p in pairs]), runs, len(pairs)

    def close(self) -> None:
        """The run is over: a replay's cache keeps what the recording gave so far (the next
        run of the same files reads that prefix converted)."""
        if hasattr(self._feed, "cache_stats"):  # a replay (``ReplayFeed``), not a live feed
            self._feed.close()

    def get_window(self, step: int, pending_ns: int | None, barrier: bool = True) -> Batch:
        """A live window (``pending_ns`` does not move live time: it is for the signature
        the coordinator's peers share)."""
        if self._feed is None:
            # never fast-forwarded after a restart: a live feed continues from now
            self._feed = self._open_stream()
        feed = self._feed
        return self._stepper.run(step, lambda: self._live_window(feed, step), barrier=barrier)

    def rewind(self, step: int) -> int:
        """Back to barrier ``step`` (a live feed itself just continues)."""
        self._stepper.rewind(step)
        return self._stepper.last_step

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

    def feed_health(self) -> str:
        """Why the live feed cannot be traded on ("" while it streams): stopped for good,
        or a symbol silent past ``data.live.max_silence_s``."""
        feed = self._feed
        if feed is None or not hasattr(feed, "silent"):
            return ""
        if feed.failed:
            return f"market data stopped: {feed.failed}"
        silent = feed.silent()
        if silent:
            worst = ", ".join(f"{s} {age:.0f} s" for s, age in silent.items())
            return f"market data silent: no event for {worst}"
        return ""

    def stats(self, consumed: int | dict[int, int] | None = None) -> dict[str, Any]:
        """``consumed``: what the run consumed of a replay (events of the merged replay; a
        shard's reader: events of each of its sources), for the rejections and sessions it
        reports, as of there whatever was read ahead; None: everything read so far."""
        if self._feed is None and consumed is not None:  # a replay this process never read
            self._feed = self._open_stream()
        feed = self._feed
        if hasattr(feed, "report"):  # a replay (ReplayFeed, or a shard's ReplaySources)
            rejected, missing = feed.report(consumed)
            if hasattr(feed, "log"):  # the merged replay may have read on: where it is now
                self._raw_at = len(feed.log)
        else:  # a live feed (never opened: nothing read yet)
            rejected = feed.rejected() if hasattr(feed, "rejected") else {}
            missing = []
        return {
            "consumed": self._state.consumed,
            "clamped": self._state.clamped,
            "last_step": self._stepper.last_step,
            "checkpoint_s": self._stepper.checkpoint_s,
            "restored": self._stepper.restored,
            "rejected": rejected,
            "sessions_missing": missing,
            # sessions whose receive-stamped rows were put on the exchange's clock (a merged
            # replay: ``ReplayFeed.lags``), and by how much their recorder lagged
            "recorder_lags": dict(getattr(feed, "lags", None) or {}),
            "replay_cache": (
                self._feed.cache_stats() if hasattr(self._feed, "cache_stats") else {}
            ),
        }
