"""Live-gateway overhead: CcxtExchange vs bare ccxt against the local Binance double.

Run: ``.venv/bin/python benchmarks/ccxt_gateway.py [--orders N]``

Both sides use real, unpatched ccxt over HTTP on 127.0.0.1 with the same venue (paper engine
behind Binance's REST); the difference is what the gateway adds: ticks/lots conversion,
client-id tracking, report de-duplication. Figures: per round trip (submit a resting limit
order, then cancel it) p50/p95 in ms, and one ``reconcile()`` over N open orders.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import msgspec

from sapphire.adapters.binance_double import BinanceDouble
from sapphire.adapters.binance_venue import BinanceVenue
from sapphire.adapters.ccxt_credentials import ApiCredentials
from sapphire.adapters.ccxt_gateway import CcxtExchange, CcxtGatewayConfig
from sapphire.data.instruments import load_exchange_info
from sapphire.exchange.config import PaperExchangeBuilder
from sapphire.model import BookSnapshot, CancelOrder, Side, SubmitOrder

ROOT = Path(__file__).resolve().parents[1]
INFO = ROOT.parent / "shared" / "data" / "exchange" / "basana_binance_exchangeInfo_BTCUSDT.json"
BID, ASK = 6_160_000, 6_160_001


def _venue() -> BinanceVenue:
    inst = msgspec.structs.replace(load_exchange_info(INFO)["BTCUSDT"], maker_fee_bps="10")
    config = (
        PaperExchangeBuilder()
        .instrument(inst)
        .balance("USDT", "10000000")
        .balance("BTC", "100")
        .config()
    )
    venue = BinanceVenue(config, json.loads(INFO.read_text()))
    snap = BookSnapshot(
        ts_event_ns=1_723_161_000_000_000_000,
        symbol="BTCUSDT",
        bids=((BID, 10**6),),
        asks=((ASK, 10**6),),
    )
    venue.feed([snap])
    return venue


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


async def main(orders: int) -> None:
    async with BinanceDouble(_venue()) as double:
        gateway = CcxtExchange(
            CcxtGatewayConfig(rate_limit_ms=1), ApiCredentials("bench-key", "bench-secret")
        )
        gateway.exchange.urls["api"] = double.ccxt_urls(gateway.exchange.urls["api"])
        gateway.exchange.timeout_on_exit = 0
        await gateway.connect()
        raw = gateway.exchange  # the same ccxt instance, called directly
        bare: list[float] = []
        wrapped: list[float] = []
        for i in range(orders):
            start = time.perf_counter()
            await raw.create_order(
                "BTC/USDT", "limit", "buy", 0.001, 61500.0, {"newClientOrderId": f"raw-{i}"}
            )
            await raw.cancel_order(None, "BTC/USDT", {"clientOrderId": f"raw-{i}"})
            bare.append(time.perf_counter() - start)
            order = SubmitOrder(
                ts_event_ns=1,
                client_order_id=f"gw-{i}",
                agent_id="gw",
                symbol="BTCUSDT",
                side=Side.BUY,
                qty_lots=100,
                limit_ticks=BID - 1000,
            )
            start = time.perf_counter()
            await gateway.submit(order)
            await gateway.cancel(
                CancelOrder(ts_event_ns=2, client_order_id=f"gw-{i}", symbol="BTCUSDT")
            )
            wrapped.append(time.perf_counter() - start)
        for i in range(orders):
            await gateway.submit(
                SubmitOrder(
                    ts_event_ns=1,
                    client_order_id=f"open-{i}",
                    agent_id="gw",
                    symbol="BTCUSDT",
                    side=Side.BUY,
                    qty_lots=100,
                    limit_ticks=BID - 1000 - i,
                )
            )
        start = time.perf_counter()
        reports = await gateway.reconcile()
        reconcile_s = time.perf_counter() - start
        await gateway.close()
    print(f"round trips (submit + cancel), {orders} each, ms:")
    for name, values in (("bare ccxt", bare), ("CcxtExchange", wrapped)):
        print(
            f"  {name:13s} p50 {_pct(values, 0.5):6.2f}  p95 {_pct(values, 0.95):6.2f}"
            f"  mean {statistics.fmean(values) * 1e3:6.2f}"
        )
    ratio = statistics.median(wrapped) / statistics.median(bare)
    print(f"  gateway / bare p50 ratio: {ratio:.2f}")
    print(
        f"reconcile over {orders} open orders: {reconcile_s * 1e3:.1f} ms "
        f"({len(reports)} new reports, expected 0)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=200)
    asyncio.run(main(parser.parse_args().orders))
