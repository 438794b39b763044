"""The Binance double's own answers to raw HTTP (what ccxt never sends on purpose)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.exchange.ccxt_env import API_KEY, environment


def test_double_refuses_bad_requests_like_binance(shared_data: Path) -> None:
    async def main() -> list[tuple[int, Any]]:
        async with environment(shared_data) as env, aiohttp.ClientSession() as http:
            base = env.double.base_url + "/api/v3/"
            key = {"X-MBX-APIKEY": API_KEY}
            order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
            calls = [
                ("GET", "account", {}, {}),  # no API key
                ("GET", "account", {"X-MBX-APIKEY": "someone-else"}, {}),
                ("POST", "order", key, {**order, "symbol": "NOPE", "quantity": "1", "price": "1"}),
                ("POST", "order", key, {**order, "quantity": "0.000015", "price": "60000"}),
                ("POST", "order", key, {**order, "quantity": "0.001", "price": "60000.001"}),
                ("POST", "order", key, {**order, "type": "STOP", "quantity": "1", "price": "1"}),
                ("GET", "order", key, {"symbol": "BTCUSDT", "origClientOrderId": "nobody"}),
                ("GET", "myTrades", key, {"symbol": "BTCUSDT", "limit": "x"}),
                ("GET", "depthOfNothing", key, {}),
            ]
            out = []
            for method, path, headers, params in calls:
                body = params if method == "POST" else None
                query = None if method == "POST" else params
                async with http.request(
                    method, base + path, headers=headers, data=body, params=query
                ) as resp:
                    out.append((resp.status, (await resp.json()).get("code")))
            assert env.venue.orders == {}
            return out

    assert asyncio.run(main()) == [
        (401, -2014),
        (401, -2014),
        (400, -1121),
        (400, -1013),
        (400, -1013),
        (400, -1116),
        (400, -2013),
        (400, -1100),
        (404, -1),
    ]
