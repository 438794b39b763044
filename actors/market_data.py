"""MarketDataActor: replays recorded data (or streams live) in numbered batches."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import ray

from actors.checkpoint import make_store
from actors.codec import encode_events
from actors.stepper import Stepper
from sapphire.model.events import AnyMarketEvent


@ray.remote(max_restarts=-1, max_task_retries=-1)
class MarketDataActor:
    def __init__(
        self,
        open_stream: Callable[[], Iterator[AnyMarketEvent]],
        batch_events: int,
        checkpoint_location: str,
        max_events: int | None = None,
    ) -> None:
        self._open_stream = open_stream
        self._batch_events = batch_events
        self._max_events = max_events
        self._consumed = 0
        self._last_ns = 0
        self._stream: Iterator[AnyMarketEvent] | None = None
        self._feed: Any = None
        self._stepper: Stepper[tuple[bytes, int, int, bool]] = Stepper(
            make_store(checkpoint_location), "market-data", self._snapshot, self._restore
        )

    def _snapshot(self) -> bytes:
        return f"{self._consumed},{self._last_ns}".encode()

    def _restore(self, data: bytes) -> None:
        consumed, last_ns = data.decode().split(",")
        self._consumed, self._last_ns = int(consumed), int(last_ns)

    def _source(self) -> Any:
        if self._feed is None:
            self._feed = self._open_stream()
            if not hasattr(self._feed, "take"):
                # After a restart a replay is reopened and fast-forwarded: recorded streams
                # are deterministic, so the same events follow. A live feed (``take``) is
                # never fast-forwarded: it continues from now.
                if hasattr(self._feed, "skip"):
                    self._feed.skip(self._consumed)
                    self._stream = iter(self._feed)
                else:
                    self._stream = itertools.islice(iter(self._feed), self._consumed, None)
        return self._feed

    def get_batch(self, step: int) -> tuple[bytes, int, int, bool]:
        return self._stepper.run(step, self._next_batch)

    def _next_batch(self) -> tuple[bytes, int, int, bool]:
        limit = self._batch_events
        if self._max_events is not None:
            limit = max(0, min(limit, self._max_events - self._consumed))
        feed = self._source()
        live = hasattr(feed, "take")
        if live:
            events = feed.take(limit)
        else:
            assert self._stream is not None
            events = list(itertools.islice(self._stream, limit))
        self._consumed += len(events)
        if events:
            self._last_ns = max(self._last_ns, events[-1].ts_recv_ns or events[-1].ts_event_ns)
        capped = self._max_events is not None and self._consumed >= self._max_events
        done = capped or (not live and len(events) < self._batch_events)
        return encode_events(events), self._last_ns, len(events), done

    def stats(self) -> dict[str, Any]:
        return {
            "consumed": self._consumed,
            "last_step": self._stepper.last_step,
            "restored": self._stepper.restored,
            "rejected": self._feed.rejected() if hasattr(self._feed, "rejected") else {},
        }
