"""A local Binance spot REST double: real HTTP on 127.0.0.1 for testing live gateways.

Unpatched ccxt talks to it once its ``urls['api']`` point here (:meth:`BinanceDouble.ccxt_urls`);
ccxt.pro's market streams are served by :attr:`BinanceDouble.streams`.
Orders match on the paper engine (:class:`~sapphire.adapters.binance_venue.BinanceVenue`);
the market moves only when the test feeds recorded events. This module is I/O (an aiohttp
server) and lives beside the gateway it tests, in the adapters package (the I/O edge).

Faults are injected per endpoint and consumed one per request, in order:

* ``RATE_LIMIT``: 429 with ``Retry-After``; the request is not executed.
* ``SERVER_ERROR`` / ``UNAVAILABLE``: 500 / 503 before execution.
* ``STALL``: the request waits ``delay_s`` before it reaches the engine (a client timeout).
  As on Binance, a request that arrives later than its ``recvWindow`` is refused (-1021),
  so a stalled order is either executed within its window or never.
* ``SLOW_RESPONSE``: executed at once, the answer is sent ``delay_s`` later.
* ``LOST_RESPONSE``: executed, then the connection is dropped without an answer.
* ``GATEWAY_TIMEOUT``: executed, then 504 (a proxy lost the backend's answer).
* ``CUT_RESPONSE``: executed, then 200 and the start of the answer, and the connection drops
  (aiohttp's ClientPayloadError, which ccxt raises as a bare ExchangeError).

``clock_offset_ms`` (not None) gives the double a wall clock of its own, the host's plus the
offset, and Binance's timestamp rule on signed requests: one stamped more than 1 s ahead of
the server's clock, or older than its ``recvWindow``, is refused (-1021), and ``/time``
answers that clock. A host clock off by more than a second is then every order refused.

Exchange filters: ``exchangeInfo`` serves the venue's body (a recorded one, or
:func:`exchange_info`, which publishes exactly the filters the paper venue enforces for its
instruments), and an order a filter refuses is answered as Binance answers it: -1013
"Filter failure: <the symbol's filter>".
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import msgspec
from aiohttp import web

from sapphire.adapters.binance_venue import BinanceVenue, Json, VenueError
from sapphire.adapters.binance_ws_double import BinanceStreamHub
from sapphire.model.instrument import Instrument, InstrumentKind, PriceBandReference

API_PREFIX = "/api/v3"
_LATE = "Timestamp for this request is outside of the recvWindow."
_SIGNED = frozenset({"order", "openOrders", "allOrders", "myTrades", "account"})

Handler = Callable[[Mapping[str, str]], Json | list[Json]]


class FaultKind(enum.StrEnum):
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    UNAVAILABLE = "unavailable"
    STALL = "stall"
    SLOW_RESPONSE = "slow_response"
    LOST_RESPONSE = "lost_response"
    GATEWAY_TIMEOUT = "gateway_timeout"
    CUT_RESPONSE = "cut_response"


_BEFORE = frozenset({FaultKind.RATE_LIMIT, FaultKind.SERVER_ERROR, FaultKind.UNAVAILABLE})


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    kind: FaultKind
    retry_after_s: int = 1
    delay_s: float = 0.0


class RequestLog(msgspec.Struct, frozen=True, kw_only=True):
    """One request as the double saw it (``params`` without the signature)."""

    method: str
    path: str
    params: dict[str, str]
    fault: FaultKind | None
    status: int


class BinanceDouble:
    """``async with BinanceDouble(venue) as double:`` serves on a free port of 127.0.0.1."""

    def __init__(
        self,
        venue: BinanceVenue,
        *,
        api_key: str | None = None,
        clock_offset_ms: int | None = None,
    ) -> None:
        self.venue = venue
        self.clock_offset_ms = clock_offset_ms
        self.requests: list[RequestLog] = []
        self.streams = BinanceStreamHub()
        self._api_key = api_key
        self._faults: dict[tuple[str, str], deque[Fault]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "ping"): lambda p: {},
            ("GET", "time"): lambda p: {"serverTime": self._server_ms()},
            ("GET", "exchangeInfo"): lambda p: venue.exchange_info,
            ("POST", "order"): venue.new_order,
            ("GET", "order"): venue.query_order,
            ("DELETE", "order"): venue.cancel_order,
            ("GET", "openOrders"): venue.open_orders,
            ("GET", "allOrders"): venue.all_orders,
            ("GET", "myTrades"): venue.my_trades,
            ("GET", "account"): lambda p: venue.account(),
        }

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> BinanceDouble:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Keep executing a request whose client hung up: that is what a venue does.
        self._runner = web.AppRunner(app, handler_cancellation=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BinanceDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ccxt_urls(self, api_urls: Mapping[str, Any]) -> dict[str, Any]:
        """ccxt's ``urls['api']`` with every host replaced by this double (paths kept), so
        spot calls land here and nothing a test triggers can reach the real venue."""
        out: dict[str, Any] = {}
        for name, url in api_urls.items():
            if isinstance(url, str):
                scheme, _, rest = url.partition("://")
                host, _, path = rest.partition("/")
                if scheme.startswith("ws"):
                    # ccxt.pro tells spot streams by "/stream" in the URL: keep the host label.
                    label = host.split(".", 1)[0]
                    out[name] = f"ws://127.0.0.1:{self.port}/{label}/{path}"
                else:
                    out[name] = f"{self.base_url}/{path}"
            elif isinstance(url, Mapping):
                out[name] = self.ccxt_urls(url)
        return out

    # -- faults -----------------------------------------------------------------------------
    def inject(self, method: str, endpoint: str, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests of ``method`` ``endpoint``
        (``endpoint`` like "order" or "openOrders")."""
        queue = self._faults.setdefault((method.upper(), endpoint), deque())
        queue.extend([fault] * times)

    def _server_ms(self) -> int:
        """The venue's clock: its own wall clock when it has one, else the market's."""
        if self.clock_offset_ms is None:
            return self.venue.now_ns // 1_000_000
        return int(time.time() * 1000) + self.clock_offset_ms

    def _stamp_refused(self, endpoint: str, params: Mapping[str, str]) -> bool:
        """Binance's rule: ``timestamp < serverTime + 1000`` and ``serverTime - timestamp
        <= recvWindow``, on signed requests, where the double keeps a clock of its own."""
        if self.clock_offset_ms is None or endpoint not in _SIGNED:
            return False
        try:
            stamp = int(params.get("timestamp", ""))
        except ValueError:
            return True
        now = self._server_ms()
        return stamp >= now + 1000 or now - stamp > int(params.get("recvWindow", "5000"))

    def pending_faults(self) -> int:
        return sum(len(q) for q in self._faults.values())

    def count(self, method: str, endpoint: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.path == endpoint)

    # -- request handling -------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.streams.handle(request)
        method = request.method
        path = request.path
        endpoint = path[len(API_PREFIX) + 1 :] if path.startswith(API_PREFIX + "/") else path
        params: dict[str, str] = dict(request.query)
        if request.can_read_body:
            params.update({k: str(v) for k, v in (await request.post()).items()})
        params.pop("signature", None)
        queue = self._faults.get((method, endpoint))
        fault = queue.popleft() if queue else None

        def log(status: int) -> None:
            self.requests.append(
                RequestLog(
                    method=method,
                    path=endpoint,
                    params=params,
                    fault=None if fault is None else fault.kind,
                    status=status,
                )
            )

        route = self._routes.get((method, endpoint))
        if route is None:
            log(404)
            return web.json_response({"code": -1, "msg": f"no route {method} {path}"}, status=404)
        if fault is not None and fault.kind in _BEFORE:
            return self._before(fault, log)
        if self._stamp_refused(endpoint, params):
            log(400)
            return _error(VenueError(400, -1021, _LATE))
        if fault is not None and fault.kind is FaultKind.STALL:
            await asyncio.sleep(fault.delay_s)
            window_ms = int(params.get("recvWindow", "5000"))
            if endpoint in _SIGNED and fault.delay_s * 1000 > window_ms:
                log(400)
                return _error(
                    VenueError(
                        400, -1021, "Timestamp for this request is outside of the recvWindow."
                    )
                )
        status, body = self._execute(route, endpoint, request, params)
        log(status)
        if fault is None or fault.kind is FaultKind.STALL:
            return web.json_response(body, status=status)
        return await self._after(fault, request, body, status)

    def _execute(
        self,
        route: Handler,
        endpoint: str,
        request: web.Request,
        params: Mapping[str, str],
    ) -> tuple[int, Any]:
        if endpoint in _SIGNED:
            key = request.headers.get("X-MBX-APIKEY")
            if not key or (self._api_key is not None and key != self._api_key):
                return 401, {"code": -2014, "msg": "API-key format invalid."}
        try:
            return 200, route(params)
        except VenueError as exc:
            return exc.status, exc.body()
        except (ValueError, KeyError) as exc:
            return 400, {"code": -1100, "msg": f"Illegal parameter: {exc}"}

    @staticmethod
    def _before(fault: Fault, log: Callable[[int], None]) -> web.StreamResponse:
        if fault.kind is FaultKind.RATE_LIMIT:
            log(429)
            return web.json_response(
                {"code": -1003, "msg": "Too many requests; current limit is 1200 per minute."},
                status=429,
                headers={"Retry-After": str(fault.retry_after_s)},
            )
        status = 500 if fault.kind is FaultKind.SERVER_ERROR else 503
        log(status)
        # A body without "code" leaves the mapping to the HTTP status (ExchangeNotAvailable).
        return web.Response(text="Service temporarily unavailable", status=status)

    @staticmethod
    async def _after(
        fault: Fault, request: web.Request, body: Any, status: int
    ) -> web.StreamResponse:
        if fault.kind is FaultKind.SLOW_RESPONSE:
            await asyncio.sleep(fault.delay_s)
            return web.json_response(body, status=status)
        if fault.kind is FaultKind.GATEWAY_TIMEOUT:
            return web.Response(text="Gateway Time-out", status=504)
        if fault.kind is FaultKind.CUT_RESPONSE:
            text = msgspec.json.encode(body)
            response = web.StreamResponse(
                status=status,
                headers={"Content-Type": "application/json", "Content-Length": str(len(text))},
            )
            await response.prepare(request)
            await response.write(text[: len(text) // 2])
        # LOST_RESPONSE (and the cut one's end): the order is in the book; the client never
        # hears about it.
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError


def _error(exc: VenueError) -> web.StreamResponse:
    return web.json_response(exc.body(), status=exc.status)


def exchange_info(instruments: Iterable[Instrument], server_ms: int = 0) -> Json:
    """A Binance spot ``exchangeInfo`` body publishing, for each spot instrument, the filters
    the paper venue enforces for it (what ccxt's ``load_markets`` reads back into the same
    limits): PRICE_FILTER, LOT_SIZE, NOTIONAL, and where set MARKET_LOT_SIZE,
    PERCENT_PRICE_BY_SIDE and MAX_NUM_ORDERS. Raises ValueError for what Binance spot cannot
    publish (a derivative, a band around the mark)."""
    return {
        "timezone": "UTC",
        "serverTime": server_ms,
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": [_symbol_info(inst) for inst in instruments],
    }


def _symbol_info(inst: Instrument) -> Json:
    if inst.kind is not InstrumentKind.SPOT:
        raise ValueError(f"{inst.symbol}: the Binance double is spot; {inst.kind.value} is not")
    filters: list[Json] = [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": _eight(inst.min_price),
            "maxPrice": _eight(inst.max_price),
            "tickSize": _eight(inst.tick_size),
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": _eight(inst.min_qty),
            "maxQty": _eight(inst.max_qty),
            "stepSize": _eight(inst.lot_size),
        },
        {
            "filterType": "NOTIONAL",
            "minNotional": _eight(inst.min_notional),
            "applyMinToMarket": True,
            "maxNotional": "9000000.00000000",
            "applyMaxToMarket": False,
            "avgPriceMins": 5,
        },
    ]
    if Decimal(inst.market_min_qty) or Decimal(inst.market_max_qty):
        filters.append(
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": _eight(inst.market_min_qty),
                "maxQty": _eight(inst.market_max_qty),
                "stepSize": "0.00000000",
            }
        )
    if inst.has_price_band:
        if inst.price_band_reference is not PriceBandReference.AVERAGE:
            raise ValueError(f"{inst.symbol}: Binance spot draws its price band around the average")
        filters.append(
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": inst.bid_multiplier_up,
                "bidMultiplierDown": inst.bid_multiplier_down,
                "askMultiplierUp": inst.ask_multiplier_up,
                "askMultiplierDown": inst.ask_multiplier_down,
                "avgPriceMins": inst.avg_price_mins,
            }
        )
    if inst.max_num_orders:
        filters.append({"filterType": "MAX_NUM_ORDERS", "maxNumOrders": inst.max_num_orders})
    return {
        "symbol": inst.symbol,
        "status": "TRADING",
        "baseAsset": inst.base,
        "baseAssetPrecision": 8,
        "quoteAsset": inst.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "quoteOrderQtyMarketAllowed": False,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": filters,
        "permissions": ["SPOT"],
    }


def _eight(text: str) -> str:
    """Binance prints its filters with eight decimals ("0.01000000")."""
    return f"{Decimal(text):.8f}"
