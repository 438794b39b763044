"""Live market data from ccxt.pro websockets as Sapphire events (the live edge of the feed).

``watch_trades`` and ``watch_order_book`` give ccxt's unified structures; they become
:class:`Trade` and :class:`BookSnapshot` in the instrument's ticks and lots. A trade priced off the
tick grid is counted in ``rejected`` and skipped, a book level so priced in ``dropped_levels``;
prices are never rounded into the book. Sizes go to the nearest lot (displayed sizes may
predate today's LOT_SIZE filter).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import ccxt
import ccxt.pro as ccxtpro

from sapphire.adapters.ccxt_gateway import CcxtExchange, UnknownExchangeError, check_exchange_id
from sapphire.exchange import ccxt_convert as cv
from sapphire.model.events import BookSnapshot, Side, Trade
from sapphire.model.instrument import Instrument

log = logging.getLogger(__name__)


def check_stream_exchange_id(exchange_id: str, field: str) -> None:
    """Refuses a live feed's ``exchange_id`` that ccxt.pro cannot stream, naming ``field``:
    it was an AttributeError in the market-data actor, after Ray had started. A REST-only
    ccxt exchange is told apart from a typo."""
    if exchange_id in ccxt.exchanges and exchange_id not in ccxtpro.exchanges:
        raise UnknownExchangeError(
            f"{field}: ccxt exchange {exchange_id!r} has no websocket streams (ccxt.pro)"
        )
    check_exchange_id(exchange_id, field, ccxtpro.exchanges, "ccxt.pro.exchanges")


def trade_event(trade: cv.CcxtDict, inst: Instrument, recv_ns: int = 0) -> Trade:
    """A ccxt trade (public) as a :class:`Trade`; ccxt's ``side`` is the taker's."""
    side = trade.get("side")
    if side not in ("buy", "sell"):
        raise cv.ConversionError(f"trade {trade.get('id')}: no taker side")
    raw_id = str(trade.get("id") or "0")
    return Trade(
        ts_event_ns=cv.ts_ns(trade.get("timestamp")),
        ts_recv_ns=recv_ns,
        symbol=inst.symbol,
        price_ticks=cv.ticks(inst, trade["price"]),
        qty_lots=cv.display_lots(inst, trade["amount"]),
        taker_side=Side.BUY if side == "buy" else Side.SELL,
        trade_id=int(raw_id) if raw_id.isdigit() else 0,
    )


def book_event(book: cv.CcxtDict, inst: Instrument, recv_ns: int = 0) -> BookSnapshot:
    """A ccxt order book (best first) as a :class:`BookSnapshot`. Levels priced off the tick
    grid (deep orders older than a tick-size change) cannot be expressed and are left out."""

    def levels(rows: Any) -> tuple[tuple[int, int], ...]:
        out = []
        for row in rows or ():
            try:
                out.append((cv.ticks(inst, row[0]), cv.display_lots(inst, row[1])))
            except cv.ConversionError:
                continue
        return tuple(out)

    nonce = book.get("nonce")
    return BookSnapshot(
        ts_event_ns=cv.ts_ns(book.get("timestamp")) or recv_ns,
        ts_recv_ns=recv_ns,
        symbol=inst.symbol,
        bids=levels(book.get("bids")),
        asks=levels(book.get("asks")),
        update_id=int(nonce) if isinstance(nonce, int) else 0,
    )


RECONNECT_MAX_S = 5.0  # the longest wait between two watches after a dropped connection


class CcxtMarketStream:
    """Async iterators of events over a ccxt.pro exchange (markets already loaded).

    ``symbols`` maps Sapphire symbols to ccxt's; ``recv_clock`` gives the local receive time
    in ns (the live edge is the one place a clock is read; it is injected).
    """

    def __init__(
        self,
        exchange: Any,
        instruments: Mapping[str, Instrument],
        symbols: Mapping[str, str],
        recv_clock: Callable[[], int],
    ) -> None:
        self.exchange = exchange
        self._instruments = dict(instruments)
        self._symbols = dict(symbols)
        self._clock = recv_clock
        self.rejected = 0
        self.dropped_levels = 0
        self.reconnects = 0  # watches retried after the connection dropped

    @classmethod
    def from_gateway(
        cls,
        gateway: CcxtExchange,
        recv_clock: Callable[[], int],
        api_urls: Mapping[str, Any] | None = None,
    ) -> CcxtMarketStream:
        """A ccxt.pro twin of a connected gateway's exchange: same markets and instruments,
        no credentials (public streams need none). ``api_urls`` replace ``urls['api']``."""
        exchange = getattr(ccxtpro, gateway.config.exchange_id)(
            {"options": dict(gateway.config.options), "enableRateLimit": True}
        )
        urls = api_urls if api_urls is not None else gateway.config.api_urls
        if urls:
            exchange.urls["api"] = {**exchange.urls["api"], **urls}
        exchange.set_markets(list(gateway.exchange.markets.values()))
        return cls(exchange, gateway.instruments, gateway.ccxt_symbols, recv_clock)

    async def trades(self, symbol: str) -> AsyncIterator[Trade]:
        inst, ccxt_symbol = self._instruments[symbol], self._symbols[symbol]
        last_id = -1
        while True:
            batch = await self._watch(lambda: self.exchange.watch_trades(ccxt_symbol))
            recv = self._clock()
            for raw in batch:
                try:
                    event = trade_event(raw, inst, recv)
                except (cv.ConversionError, KeyError, ValueError) as exc:
                    self._reject(exc)
                    continue
                # ccxt.pro may hand back trades already delivered (its cache): skip them.
                if event.trade_id and event.trade_id <= last_id:
                    continue
                last_id = max(last_id, event.trade_id)
                yield event

    async def books(self, symbol: str, depth: int = 20) -> AsyncIterator[BookSnapshot]:
        inst, ccxt_symbol = self._instruments[symbol], self._symbols[symbol]
        while True:
            book = await self._watch(lambda: self.exchange.watch_order_book(ccxt_symbol, depth))
            top = {**book, "bids": book["bids"][:depth], "asks": book["asks"][:depth]}
            try:
                event = book_event(top, inst, self._clock())
            except (cv.ConversionError, KeyError, ValueError, TypeError) as exc:
                self._reject(exc)
                continue
            self.dropped_levels += len(top["bids"]) + len(top["asks"])
            self.dropped_levels -= len(event.bids) + len(event.asks)
            yield event

    async def _watch(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """One watch, again after a network error: a venue drops its websockets (Binance
        every 24 h, any venue on a network blip) and ccxt.pro connects and subscribes anew
        on the next watch. Backs off 0.1 s doubling to 5 s; other errors end the stream."""
        delay = 0.1
        while True:
            try:
                return await call()
            except ccxt.NetworkError as exc:
                self.reconnects += 1
                log.warning("market stream dropped (%s); watching again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RECONNECT_MAX_S)

    async def close(self) -> None:
        await self.exchange.close()

    def _reject(self, exc: Exception) -> None:
        self.rejected += 1
        log.warning("market data rejected: %s", exc)
