"""The Binance double on its own event loop in a thread, as a remote venue would be."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sapphire.adapters.binance_double import BinanceDouble
from sapphire.adapters.binance_venue import BinanceVenue
from sapphire.model import Instrument, Trade

API_KEY = "live-test-key-42"


class DoubleThread:
    """The venue double on its own event loop in a thread (as a remote venue would be)."""

    def __init__(self, venue: BinanceVenue) -> None:
        self.venue = venue
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.double = self._run(BinanceDouble(venue, api_key=API_KEY).start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def feed(self, events: list[Any]) -> None:
        async def apply() -> None:
            self.venue.feed(events)

        self._run(apply())

    def stop(self) -> None:
        self._run(self.double.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def publish_trades(self, inst: Instrument, trades: list[Trade]) -> int:
        sent: int = self._run(self.double.streams.publish_trades(inst, trades))
        return sent

    def subscribers(self, stream: str) -> int:
        async def count() -> int:
            return int(self.double.streams.subscribers(stream))

        n: int = self._run(count())
        return n
