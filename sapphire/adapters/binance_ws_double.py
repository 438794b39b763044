"""The websocket side of the Binance double: market streams fed by the test.

ccxt.pro subscribes with ``{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": n}``;
the hub acknowledges and then pushes what the test publishes, in Binance's raw stream
format, to every socket subscribed to that stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiohttp import WSMsgType, web

from sapphire.model.events import Side, Trade
from sapphire.model.instrument import Instrument


class BinanceStreamHub:
    def __init__(self) -> None:
        self._subs: dict[web.WebSocketResponse, set[str]] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._subs[ws] = set()
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    await ws.send_json({"code": 3, "msg": "Invalid JSON"})
                    continue
                if data.get("method") == "SUBSCRIBE":
                    self._subs[ws].update(str(p) for p in data.get("params", []))
                elif data.get("method") == "UNSUBSCRIBE":
                    self._subs[ws].difference_update(str(p) for p in data.get("params", []))
                await ws.send_json({"result": None, "id": data.get("id")})
        finally:
            self._subs.pop(ws, None)
        return ws

    async def drop_connections(self) -> int:
        """Close every client's websocket, as Binance does to each connection after 24 h;
        returns how many were closed."""
        sockets = list(self._subs)
        for ws in sockets:
            await ws.close()
        return len(sockets)

    def subscribers(self, stream: str) -> int:
        return sum(1 for streams in self._subs.values() if stream in streams)

    async def publish(self, stream: str, payload: dict[str, Any]) -> int:
        """Send one raw message to the subscribers of ``stream``; returns how many got it."""
        sent = 0
        for ws, streams in list(self._subs.items()):
            if stream in streams and not ws.closed:
                await ws.send_json(payload)
                sent += 1
        return sent

    async def publish_trades(self, inst: Instrument, trades: Iterable[Trade]) -> int:
        """Recorded trades as Binance ``<symbol>@trade`` messages."""
        stream = f"{inst.symbol.lower()}@trade"
        count = 0
        for trade in trades:
            ms = trade.ts_event_ns // 1_000_000
            await self.publish(
                stream,
                {
                    "e": "trade",
                    "E": ms,
                    "s": inst.symbol,
                    "t": trade.trade_id,
                    "p": str(inst.ticks_to_price(trade.price_ticks)),
                    "q": str(inst.lots_to_qty(trade.qty_lots)),
                    "T": ms,
                    "m": trade.taker_side is Side.SELL,  # buyer is maker <=> seller took
                    "M": True,
                },
            )
            count += 1
        return count
