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
import random
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
        self.reconnects = 0
        # why the feed stopped for good (a refused key, a symbol the venue does not list):
        # no reconnect can help; "" while it streams or reconnects
        self.failed = ""
        # per symbol, when (monotonic) its last event arrived; the start counts as one
        started = time.monotonic()
        self._last_event = dict.fromkeys(self._instruments, started)
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
        """Stream until closed, reconnecting after any transient failure (a 503 while the
        markets load, a dropped websocket) with the venue calls' backoff; a failure no
        reconnect can help (a refused key, an unlisted symbol) stops it and says why."""
        import ccxt.pro as ccxtpro

        from sapphire.adapters.ccxt_retry import RetryPolicy, retry_after_s

        policy, rng, failures = RetryPolicy(), random.Random(), 0
        while True:
            exchange = getattr(ccxtpro, self._config.exchange_id)(
                {"enableRateLimit": True, "options": dict(self._config.options)}
            )
            if self._config.api_urls:
                exchange.urls["api"] = {**exchange.urls["api"], **self._config.api_urls}
            received = self.received
            asked: float | None = None
            try:
                await self._stream(exchange)
                return  # every stream ended: the venue closed them for good
            except (ccxtpro.AuthenticationError, ccxtpro.PermissionDenied, _Unlisted) as exc:
                self.errors += 1
                self.failed = f"{type(exc).__name__}: {exc}"[:300]
                log.error("live feed stopped: %s", self.failed)
                return
            except Exception as exc:
                self.errors += 1
                self.reconnects += 1
                # a feed that streamed since its last start begins its backoff again
                failures = 1 if self.received > received else failures + 1
                # the venue's Retry-After (a 429 on the markets): reconnecting sooner counts
                # towards the ban of the IP the orders leave from too
                asked = retry_after_s(getattr(exchange, "last_response_headers", None))
                log.warning("live feed failed (%s); reconnecting", str(exc)[:200])
            finally:
                await exchange.close()
            wait = policy.delay(min(failures, policy.max_attempts), rng)
            await asyncio.sleep(max(wait, asked or 0.0))

    async def _stream(self, exchange: Any) -> None:
        from sapphire.adapters.ccxt_stream import CcxtMarketStream

        await exchange.load_markets()
        unlisted = sorted(s for s in self._instruments if s not in exchange.markets_by_id)
        if unlisted:
            raise _Unlisted(f"{exchange.id} lists no {unlisted}")
        symbols = {s: exchange.markets_by_id[s][0]["symbol"] for s in self._instruments}
        stream = CcxtMarketStream(exchange, self._instruments, symbols, time.time_ns)
        tasks = [self._pump(stream.trades(s)) for s in self._instruments]
        if self._config.books:
            tasks += [self._pump(stream.books(s, self._config.book_depth)) for s in symbols]
        await asyncio.gather(*tasks)

    async def _pump(self, events: Any) -> None:
        async for event in events:
            with self._lock:
                if len(self._buffer) >= self._config.queue_size:
                    self._buffer.popleft()
                    self.conflated += 1
                self._buffer.append(event)
                self.received += 1
                self._last_event[event.symbol] = time.monotonic()
                self._arrived.notify()

    # -- the actor side ----------------------------------------------------------------------
    def take(self, limit: int) -> list[AnyMarketEvent]:
        """Up to ``limit`` buffered events; waits up to ``max_wait_s`` for the first one."""
        with self._arrived:
            if not self._buffer:
                self._arrived.wait(self._config.max_wait_s)
            n = min(limit, len(self._buffer))
            return [self._buffer.popleft() for _ in range(n)]

    def silent(self, now: float | None = None) -> dict[str, float]:
        """Symbols with no event for more than ``max_silence_s`` (0: never), and for how
        long (s). A connected socket that goes quiet gave empty windows and nothing else."""
        limit = self._config.max_silence_s
        if limit <= 0:
            return {}
        now = time.monotonic() if now is None else now
        with self._lock:
            ages = {s: now - t for s, t in self._last_event.items()}
        return {s: age for s, age in sorted(ages.items()) if age > limit}

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the streams and close the venue connection."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._main.cancel)
            self._thread.join(timeout_s)

    def rejected(self) -> dict[str, int]:
        out = {"conflated": self.conflated, "stream_errors": self.errors}
        if self.reconnects:
            out["stream_reconnects"] = self.reconnects
        if self.failed:  # the reason is in the log; the summary counts that it happened
            out["stream_stopped"] = 1
        return out


class _Unlisted(LookupError):
    """A configured symbol the venue does not list: no reconnect makes it appear."""
