"""The Binance double's exchange filters through real ccxt: what its exchangeInfo publishes is
what its paper venue enforces, and a refusal is Binance's -1013 "Filter failure: <filter>"."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async
import msgspec
import pytest

from sapphire.adapters.binance_double import BinanceDouble, exchange_info
from sapphire.adapters.binance_venue import BinanceVenue
from sapphire.adapters.venue_instruments import instruments_from_metadata
from sapphire.data.venue_instruments import FilterFields, MetadataFormat, VenueMetadata
from sapphire.exchange import ccxt_convert as cv
from sapphire.exchange.config import PaperExchangeBuilder
from sapphire.model.events import Side
from sapphire.model.instrument import Instrument, InstrumentKind
from sapphire.model.orders import OrderStatus, OrderUpdate, RejectReason
from tests.exchange.ccxt_env import API_KEY, Env, environment, order

UNIFIED = "BTC/USDT"


def _published(env: Env, name: str) -> dict[str, Any]:
    entry = env.venue.exchange_info["symbols"][0]
    return next(f for f in entry["filters"] if f["filterType"] == name)


async def _refusal(env: Env, *args: Any) -> BaseException:
    """What ccxt raises for ``create_order(*args)`` against the double."""
    refusal: BaseException | None = None
    try:
        await env.gateway.exchange.create_order(UNIFIED, *args)
    except ccxt_async.BaseError as exc:
        refusal = exc
    assert refusal is not None, f"placed: {args}"
    return refusal


def test_out_of_range_orders_get_binance_filter_failures_through_ccxt(shared_data: Path) -> None:
    async def main() -> None:
        async with environment(shared_data) as env:
            price_filter = _published(env, "PRICE_FILTER")
            max_price = Decimal(price_filter["maxPrice"])
            # one tick over maxPrice (1000000.01): ccxt sends it, the venue refuses it
            over = await _refusal(env, "limit", "buy", 0.001, float(max_price + Decimal("0.01")))
            # ccxt reads a PRICE_FILTER body as an order it must not place again as is
            assert isinstance(over, ccxt.InvalidOrder)
            assert '{"code": -1013, "msg": "Filter failure: PRICE_FILTER"}' in str(over)
            # MARKET_LOT_SIZE: a market order just over the published maxQty
            market_max = Decimal(_published(env, "MARKET_LOT_SIZE")["maxQty"])
            big = await _refusal(env, "market", "sell", float(market_max + Decimal("0.00001")))
            assert isinstance(big, ccxt.InvalidOrder)  # ccxt's "LOT_SIZE" body rule
            assert '"msg": "Filter failure: MARKET_LOT_SIZE"' in str(big)
            # PERCENT_PRICE_BY_SIDE: a buy under bidMultiplierDown x the average price
            bid, _ = env.best()
            down = Decimal(_published(env, "PERCENT_PRICE_BY_SIDE")["bidMultiplierDown"])
            # 0.9 x the floor the best bid would give: under it whatever the recent average
            # (the recorded seconds move the price by far less than 10 %)
            low = env.venue.paper.instruments["BTCUSDT"].ticks_to_price(
                int(bid * down * Decimal("0.9"))
            )
            cheap = await _refusal(env, "limit", "buy", 0.001, float(low))
            assert str(cheap) == "binance Filter failure: PERCENT_PRICE_BY_SIDE"
            assert isinstance(cheap, ccxt.InvalidOrder)  # ccxt's broad message table
            assert env.venue.orders == {}
            # inside every bound (at maxPrice the band refuses it: 5 x the average is far
            # under 1000000), the same shape rests
            _, ask = env.best()
            inst = env.venue.paper.instruments["BTCUSDT"]
            inside = await env.gateway.exchange.create_order(
                UNIFIED, "limit", "sell", 0.001, float(inst.ticks_to_price(2 * ask))
            )
            assert inside["status"] == "open"

    asyncio.run(main())


def test_the_gateway_reports_a_filter_failure_as_a_final_rejection(shared_data: Path) -> None:
    async def main() -> None:
        async with environment(shared_data) as env:
            inst = env.venue.paper.instruments["BTCUSDT"]
            over = inst.max_price_ticks + 1
            reports = await env.submit(order(1, Side.SELL, over, 100))
            finals = [r for r in reports if isinstance(r, OrderUpdate)]
            assert [u.status for u in finals] == [OrderStatus.REJECTED]
            assert "Filter failure: PRICE_FILTER" in finals[0].message
            assert env.venue.final_status("agent-1") is OrderStatus.REJECTED
            assert env.venue.orders == {}
            # each filter reaches the agent with the paper venue's reason: PRICE_FILTER read
            # INVALID_TICK, MARKET_LOT_SIZE matched "LOT_SIZE" (INVALID_LOT), and the band
            # and the order cap were an EXCHANGE_ERROR
            assert finals[0].reason is RejectReason.PRICE_FILTER
            big = inst.market_max_qty_lots + inst.lots_per_step
            reports = await env.submit(order(2, Side.SELL, None, big))
            assert [u.reason for u in reports if isinstance(u, OrderUpdate)] == [
                RejectReason.MARKET_LOT_SIZE
            ]
            bid, _ = env.best()
            low, _ = inst.price_band_ticks(True, Fraction(bid))
            reports = await env.submit(order(3, Side.BUY, int(low * 0.9), 100))
            assert [u.reason for u in reports if isinstance(u, OrderUpdate)] == [
                RejectReason.PERCENT_PRICE
            ]

    asyncio.run(main())


def test_a_resent_refused_order_gets_the_same_filter_failure(shared_data: Path) -> None:
    async def main() -> list[tuple[int, Any]]:
        async with environment(shared_data) as env, aiohttp.ClientSession() as http:
            params = {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.001",
                "price": "1000000.01",
                "newClientOrderId": "again",
            }
            out = []
            for _ in range(2):
                async with http.post(
                    env.double.base_url + "/api/v3/order",
                    headers={"X-MBX-APIKEY": API_KEY},
                    data=params,
                ) as resp:
                    out.append((resp.status, await resp.json()))
            return out

    answer = (400, {"code": -1013, "msg": "Filter failure: PRICE_FILTER"})
    assert asyncio.run(main()) == [answer, answer]


def test_the_double_refuses_an_order_over_max_num_orders_with_1013() -> None:
    capped = msgspec.structs.replace(FILTERED, max_num_orders=2)

    async def main() -> list[tuple[int, Any]]:
        config = PaperExchangeBuilder().instrument(capped).balance("USDT", "1000").config()
        venue = BinanceVenue(config, exchange_info([capped]))
        async with BinanceDouble(venue) as double, aiohttp.ClientSession() as http:
            out = []
            for i in range(3):
                params = {
                    "symbol": "BTCUSDT",
                    "side": "BUY",
                    "type": "LIMIT",
                    "timeInForce": "GTC",
                    "quantity": "0.001",
                    "price": str(10_000 - i),
                    "newClientOrderId": f"o{i}",
                }
                async with http.post(
                    double.base_url + "/api/v3/order", headers={"X-MBX-APIKEY": "k"}, data=params
                ) as resp:
                    out.append((resp.status, (await resp.json()).get("code", 0)))
            return out

    # two rest; the third finds two open: Binance's filter failure, not the engine's -2010
    assert asyncio.run(main()) == [(200, 0), (200, 0), (400, -1013)]


FILTERED = Instrument(
    symbol="BTCUSDT",
    kind=InstrumentKind.SPOT,
    base="BTC",
    quote="USDT",
    tick_size="0.01",
    lot_size="0.00001",
    min_qty="0.00001",
    max_qty="9000",
    min_notional="5",
    min_price="0.01",
    max_price="1000000",
    market_max_qty="120.5",
    bid_multiplier_up="5",
    bid_multiplier_down="0.2",
    ask_multiplier_up="4",
    ask_multiplier_down="0.25",
    avg_price_mins=5,
    max_num_orders=200,
)


def _filters(inst: Instrument) -> dict[str, object]:
    return {name: getattr(inst, name) for name in FilterFields.__struct_fields__}


def test_exchange_info_publishes_what_the_venue_enforces_as_ccxt_reads_it() -> None:
    body = exchange_info([FILTERED])
    meta = VenueMetadata(
        fmt=MetadataFormat.BINANCE_EXCHANGE_INFO, venue="BINANCE", markets=body["symbols"]
    )
    back = instruments_from_metadata(meta).instruments["BTCUSDT"]
    assert _filters(back) == _filters(FILTERED)
    assert (back.min_qty, back.max_qty, back.min_notional) == ("0.00001", "9000", "5")
    # an instrument with no such filters publishes none that would limit
    plain = msgspec.structs.replace(
        FILTERED,
        **{
            name: getattr(Instrument(symbol="X", tick_size="1", lot_size="1"), name)
            for name in _filters(FILTERED)
        },
    )
    back = instruments_from_metadata(
        VenueMetadata(
            fmt=MetadataFormat.BINANCE_EXCHANGE_INFO,
            venue="BINANCE",
            markets=exchange_info([plain])["symbols"],
        )
    ).instruments["BTCUSDT"]
    assert _filters(back) == _filters(plain)
    with pytest.raises(ValueError, match="spot"):
        exchange_info([msgspec.structs.replace(FILTERED, kind=InstrumentKind.PERPETUAL)])


def test_ccxt_load_markets_from_the_double_gives_back_the_instruments_filters() -> None:
    async def main() -> Instrument:
        config = PaperExchangeBuilder().instrument(FILTERED).balance("USDT", "1000").config()
        venue = BinanceVenue(config, exchange_info([FILTERED]))
        async with BinanceDouble(venue) as double:
            exchange = ccxt_async.binance({"options": {"fetchMarkets": ["spot"]}})
            exchange.urls["api"] = double.ccxt_urls(exchange.urls["api"])
            try:
                markets = await exchange.load_markets()
            finally:
                await exchange.close()
        return cv.instrument_from_market(markets[UNIFIED])

    assert _filters(asyncio.run(main())) == _filters(FILTERED)
