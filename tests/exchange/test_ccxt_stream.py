"""ccxt.pro's own Binance parsing of real recorded messages -> Sapphire events."""

from __future__ import annotations

import asyncio
import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.pro as ccxtpro
import pytest

from sapphire.adapters.ccxt_stream import CcxtMarketStream, book_event, trade_event
from sapphire.data.instruments import load_exchange_info
from sapphire.exchange import ccxt_convert as cv
from sapphire.model import Instrument, Side, Trade
from tests.exchange.ccxt_env import environment
from tests.exchange.spot_slice import SYMBOL

SPOT_INFO = Path("exchange") / "cryptofeed_binance_spot_exchangeInfo_2021-10-12.json.gz"


@pytest.fixture(scope="module")
def pro(shared_data: Path) -> tuple[Any, dict[str, Instrument]]:
    with gzip.open(shared_data / SPOT_INFO, "rt") as handle:
        info = json.load(handle)
    exchange = ccxtpro.binance(
        {"options": {"crossMarginPairsData": [], "isolatedMarginPairsData": []}}
    )
    exchange.set_markets([exchange.parse_market(s) for s in info["symbols"]])
    return exchange, load_exchange_info(shared_data / SPOT_INFO)


def _ws_messages(shared_data: Path, kind: str) -> list[dict[str, Any]]:
    path = shared_data / "book" / "cryptofeed_binance_spot_ws_2021-10-12.log.gz"
    out = []
    with gzip.open(path, "rt") as handle:
        next(handle)  # the websocket URL
        for line in handle:
            _, _, body = line.partition(": ")
            if not body.strip():
                continue
            msg = json.loads(body)
            if msg["data"].get("e") == kind:
                out.append(msg["data"])
    return out


def test_recorded_agg_trades_become_exact_trades(
    shared_data: Path, pro: tuple[Any, dict[str, Instrument]]
) -> None:
    exchange, instruments = pro
    messages = _ws_messages(shared_data, "aggTrade")
    assert messages
    for msg in messages:
        inst = instruments[msg["s"]]
        parsed = exchange.parse_ws_trade(msg, exchange.markets_by_id[msg["s"]][0])
        event = trade_event(parsed, inst, recv_ns=7)
        assert inst.ticks_to_price(event.price_ticks) == Decimal(msg["p"])
        assert abs(inst.lots_to_qty(event.qty_lots) - Decimal(msg["q"])) <= inst.lot / 2
        # "m": buyer is maker -> the seller took liquidity.
        assert event.taker_side is (Side.SELL if msg["m"] else Side.BUY)
        assert event.ts_event_ns == msg["T"] * 1_000_000 and event.ts_recv_ns == 7
        assert event.trade_id == msg["a"]


def test_recorded_rest_depth_becomes_an_exact_snapshot(
    shared_data: Path, pro: tuple[Any, dict[str, Instrument]]
) -> None:
    exchange, instruments = pro
    path = shared_data / "exchange" / "cryptofeed_binance_spot_rest_depth1000_2021-10-12.log.gz"
    with gzip.open(path, "rt") as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    assert len(lines) == 4
    off_grid = dropped = 0
    for line in lines:
        url, _, rest = line.partition(" -> ")
        body = json.loads(rest.partition(": ")[2])
        symbol = url.split("symbol=")[1].split("&")[0]
        inst = instruments[symbol]
        book = exchange.parse_order_book(body, exchange.markets_by_id[symbol][0]["symbol"])
        book["nonce"] = body["lastUpdateId"]
        snap = book_event(book, inst, recv_ns=11)
        assert snap.update_id == body["lastUpdateId"]
        on_grid = [(px, q) for px, q in body["bids"] if Decimal(px) % inst.tick == 0]
        dropped += len(body["bids"]) - len(on_grid)
        assert len(snap.bids) == len(on_grid) and len(snap.asks) <= len(body["asks"])
        for (px, qty), (raw_px, raw_qty) in zip(snap.bids, on_grid, strict=True):
            assert inst.ticks_to_price(px) == Decimal(raw_px)
            # Real books hold sizes off today's lot grid (NKNUSDT: 11979.3 with a lot of 1).
            assert abs(inst.lots_to_qty(qty) - Decimal(raw_qty)) <= inst.lot / 2
            off_grid += inst.lots_to_qty(qty) != Decimal(raw_qty)
        assert snap.bids[0][0] < snap.asks[0][0]
    # The recording does hold both: the rounding and the dropping are exercised.
    assert off_grid > 0 and dropped > 0


def test_off_grid_or_sideless_trade_is_refused() -> None:
    inst = Instrument(symbol="X", base="A", quote="B", tick_size="0.01", lot_size="1")
    good = {"id": "1", "timestamp": 1, "price": 1.25, "amount": 3.0, "side": "sell"}
    assert trade_event(good, inst).taker_side is Side.SELL
    with pytest.raises(cv.ConversionError):
        trade_event({**good, "price": 1.255}, inst)
    with pytest.raises(cv.ConversionError):
        trade_event({**good, "side": None}, inst)
    assert trade_event({**good, "amount": 0.2}, inst).qty_lots == 1  # never a 0-size print


class TradeWatch:
    """A ``CcxtMarketStream`` on the double's websocket whose trades are gathered in ``got``
    until there are as many as the first ``n`` recorded ones (``task``)."""

    def __init__(self, env: Any, n: int) -> None:
        ticks = iter(range(1_000, 10**9, 1_000))
        template = ccxtpro.binance().urls["api"]
        self.env = env
        self.stream = CcxtMarketStream.from_gateway(
            env.gateway, lambda: next(ticks), env.double.ccxt_urls(template)
        )
        self.inst = env.gateway.instruments[SYMBOL]
        self.recorded = [e for e in env.events if isinstance(e, Trade)][:n]
        self.got: list[Trade] = []
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for trade in self.stream.trades(SYMBOL):
            self.got.append(trade)
            if len(self.got) == len(self.recorded):
                return

    async def subscribed(self) -> None:
        """Until ccxt.pro has subscribed to the trades stream."""
        for _ in range(500):
            if self.env.double.streams.subscribers("btcusdt@trade"):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("ccxt.pro never subscribed")

    async def close(self) -> None:
        self.task.cancel()
        await self.stream.close()


def test_watch_trades_over_a_real_websocket_yields_recorded_trades_once(
    shared_data: Path,
) -> None:
    async def main() -> None:
        async with environment(shared_data) as env:
            watch = TradeWatch(env, 40)
            streams, inst, recorded = env.double.streams, watch.inst, watch.recorded
            try:
                await watch.subscribed()
                await streams.publish_trades(inst, recorded[:25])
                # A replayed batch (reconnect) and an off-grid print must not get through.
                await streams.publish_trades(inst, recorded[20:25])
                await streams.publish(
                    "btcusdt@trade",
                    {
                        "e": "trade",
                        "E": 1,
                        "s": SYMBOL,
                        "t": 1,
                        "p": "1.001",
                        "q": "1",
                        "T": 1,
                        "m": False,
                        "M": True,
                    },
                )
                await streams.publish_trades(inst, recorded[25:])
                await asyncio.wait_for(watch.task, 5)
            finally:
                await watch.close()
            got = watch.got
            key = [(t.trade_id, t.price_ticks, t.qty_lots, t.taker_side) for t in recorded]
            assert [(t.trade_id, t.price_ticks, t.qty_lots, t.taker_side) for t in got] == key
            assert [t.ts_event_ns for t in got] == [
                t.ts_event_ns // 1_000_000 * 1_000_000 for t in recorded
            ]
            assert all(t.ts_recv_ns > 0 for t in got)
            assert watch.stream.rejected == 1

    asyncio.run(main())


def test_a_dropped_websocket_is_watched_again_and_no_trade_is_lost(shared_data: Path) -> None:
    # the venue closes the connection between two batches (Binance does every 24 h):
    # ccxt.pro's watch fails with a network error, the stream watches again, ccxt.pro
    # connects and subscribes anew, and the trades published after that arrive
    async def main() -> None:
        async with environment(shared_data) as env:
            watch = TradeWatch(env, 30)
            streams, inst, recorded = env.double.streams, watch.inst, watch.recorded
            try:
                await watch.subscribed()
                await streams.publish_trades(inst, recorded[:10])
                for _ in range(200):
                    if len(watch.got) == 10:
                        break
                    await asyncio.sleep(0.01)
                assert await streams.drop_connections() == 1
                await watch.subscribed()  # connected and subscribed again
                await streams.publish_trades(inst, recorded[10:])
                await asyncio.wait_for(watch.task, 10)
            finally:
                await watch.close()
            assert [t.trade_id for t in watch.got] == [t.trade_id for t in recorded]
            assert watch.stream.reconnects >= 1

    asyncio.run(main())
