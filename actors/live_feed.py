"""Live market data through ccxt.pro for the MarketDataActor.

A background thread runs the websocket streams on its own event loop and appends events to
a bounded buffer. When consumers fall behind, the oldest *ticks* are conflated away (and
counted) so the live edge never blocks the venue connection or grows memory without bound;
orders never pass through here, so none can be lost this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from sapphire.config.system import LiveDataConfig
from sapphire.model.events import AnyMarketEvent
from sapphire.model.instrument import Instrument

log = logging.getLogger(__name__)


class LiveFeed:
    def __init__(self, config: LiveDataConfig, instruments: Mapping[str, Instrument]) -> None:
        self._config = config
        self._instruments = dict(instruments)
        self._buffer: deque[AnyMarketEvent] = deque()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.conflated = 0
        self.received = 0
        self.errors = 0
        self._loop = asyncio.new_event_loop()
        # created before the loop runs in its thread, so ``close`` can always cancel it
        self._main = self._loop.create_task(self._stream_all())
        self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
        self._thread.start()

    # -- the websocket side (its own thread and loop) --------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._main)

    async def _stream_all(self) -> None:
        import ccxt.pro as ccxtpro

        from sapphire.adapters.ccxt_stream import CcxtMarketStream

        exchange = getattr(ccxtpro, self._config.exchange_id)(
            {"enableRateLimit": True, "options": dict(self._config.options)}
        )
        if self._config.api_urls:
            exchange.urls["api"] = {**exchange.urls["api"], **self._config.api_urls}
        try:
            await exchange.load_markets()
            symbols = {s: exchange.markets_by_id[s][0]["symbol"] for s in self._instruments}
            stream = CcxtMarketStream(exchange, self._instruments, symbols, time.time_ns)
            tasks = [self._pump(stream.trades(s)) for s in self._instruments]
            if self._config.books:
                tasks += [self._pump(stream.books(s, self._config.book_depth)) for s in symbols]
            await asyncio.gather(*tasks)
        except Exception:
            self.errors += 1
            log.exception("live feed stopped")
        finally:
            await exchange.close()

    async def _pump(self, events: Any) -> None:
        async for event in events:
            with self._lock:
                if len(self._buffer) >= self._config.queue_size:
                    self._buffer.popleft()
                    self.conflated += 1
                self._buffer.append(event)
                self.received += 1
                self._arrived.notify()

    # -- the actor side ----------------------------------------------------------------------
    def take(self, limit: int) -> list[AnyMarketEvent]:
        """Up to ``limit`` buffered events; waits up to ``max_wait_s`` for the first one."""
        with self._arrived:
            if not self._buffer:
                self._arrived.wait(self._config.max_wait_s)
            n = min(limit, len(self._buffer))
            return [self._buffer.popleft() for _ in range(n)]

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the streams and close the venue connection."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._main.cancel)
            self._thread.join(timeout_s)

    def rejected(self) -> dict[str, int]:
        return {"conflated": self.conflated, "stream_errors": self.errors}
