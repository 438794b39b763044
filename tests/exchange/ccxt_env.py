"""Real ccxt against the local Binance double: shared set-up and the ledger check."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import msgspec

from sapphire.adapters.binance_double import BinanceDouble
from sapphire.adapters.binance_venue import BinanceVenue
from sapphire.adapters.ccxt_credentials import ApiCredentials
from sapphire.adapters.ccxt_gateway import CcxtExchange, CcxtGatewayConfig
from sapphire.adapters.ccxt_retry import RetryPolicy
from sapphire.adapters.ccxt_tracking import venue_fill_id
from sapphire.adapters.venue_instruments import load_venue_instruments
from sapphire.data.instruments import load_exchange_info
from sapphire.data.venue_instruments import FilterFields
from sapphire.exchange.config import PaperExchangeBuilder
from sapphire.exchange.gateway import ExecutionReport
from sapphire.model.events import AnyMarketEvent, Side
from sapphire.model.orders import (
    OrderFilled,
    OrderStatus,
    OrderType,
    OrderUpdate,
    SubmitOrder,
    TimeInForce,
)
from tests.exchange.spot_slice import EXCHANGE_INFO, SYMBOL, load_spot_events

API_KEY = "test-key-0123456789"
SECRET = "test-secret-must-never-be-printed"
# Client timeout < stall < recvWindow: a stalled order executes after the client gave up.
TIMEOUT_MS = 100
RECV_WINDOW_MS = 200


class RecordingSleep:
    """Records every wait; really sleeps the short ones (settling must take real time,
    Retry-After seconds need not)."""

    def __init__(self, max_real_s: float = 0.5) -> None:
        self.calls: list[float] = []
        self._max_real = max_real_s

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(seconds if seconds <= self._max_real else 0.0)


@dataclass
class Env:
    double: BinanceDouble
    gateway: CcxtExchange
    sleep: RecordingSleep
    events: tuple[AnyMarketEvent, ...]
    reports: list[ExecutionReport] = field(default_factory=list)
    fed: int = 0

    @property
    def venue(self) -> BinanceVenue:
        return self.double.venue

    def feed_until(self, done: Callable[[], bool], limit: int | None = None) -> None:
        """Feed recorded events one by one until ``done()`` holds (or all are used)."""
        end = len(self.events) if limit is None else min(len(self.events), self.fed + limit)
        while self.fed < end and not done():
            self.venue.feed([self.events[self.fed]])
            self.fed += 1

    def best(self) -> tuple[int, int]:
        book = self.venue.paper.book(SYMBOL)
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None
        return bid[0], ask[0]

    async def submit(self, order: SubmitOrder) -> Sequence[ExecutionReport]:
        out = await self.gateway.submit(order)
        self.reports.extend(out)
        return out

    async def run(self, coro: Awaitable[Sequence[ExecutionReport]]) -> Sequence[ExecutionReport]:
        out = await coro
        self.reports.extend(out)
        return out


def order(
    seq: int, side: Side, price: int | None, lots: int, tif: TimeInForce = TimeInForce.GTC
) -> SubmitOrder:
    return SubmitOrder(
        ts_event_ns=1,
        client_order_id=f"agent-{seq}",
        agent_id="agent",
        symbol=SYMBOL,
        side=side,
        qty_lots=lots,
        limit_ticks=price,
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        tif=tif,
    )


def trade_fill_id(trade: dict[str, object]) -> str:
    """The fill id the gateway reports for one of the double's trades."""
    side = Side.BUY if trade["isBuyer"] else Side.SELL
    return venue_fill_id(str(trade["symbol"]), trade["id"], side)


@asynccontextmanager
async def environment(
    data: Path,
    *,
    seconds: float = 12.0,
    base_commission: bool = False,
    clock_offset_ms: int | None = None,
) -> AsyncIterator[Env]:
    info_path = data / EXCHANGE_INFO
    # the filters the double publishes (PRICE_FILTER bounds, MARKET_LOT_SIZE, the percent
    # price band, MAX_NUM_ORDERS), enforced by its paper venue: read as ccxt reads them
    published = load_venue_instruments(info_path).instruments["BTCUSDT"]
    filters = {name: getattr(published, name) for name in FilterFields.__struct_fields__}
    inst = msgspec.structs.replace(
        load_exchange_info(info_path)["BTCUSDT"], maker_fee_bps="10", taker_fee_bps="10", **filters
    )
    config = (
        PaperExchangeBuilder()
        .instrument(inst)
        .balance("USDT", "100000")
        .balance("BTC", "1")
        .config()
    )
    events = load_spot_events(data, seconds)
    venue = BinanceVenue(config, json.loads(info_path.read_text()), base_commission=base_commission)
    venue.feed(events[:1])  # the snapshot: a market to trade against
    sleep = RecordingSleep()
    async with BinanceDouble(venue, api_key=API_KEY, clock_offset_ms=clock_offset_ms) as double:
        gw_config = CcxtGatewayConfig(
            timeout_ms=TIMEOUT_MS,
            recv_window_ms=RECV_WINDOW_MS,
            settle_margin_ms=50,
            rate_limit_ms=1,
            retry=RetryPolicy(max_attempts=4, base_s=0.01, cap_s=0.05),
        )
        gateway = CcxtExchange(
            gw_config, ApiCredentials(API_KEY, SECRET), sleep=sleep, rng=random.Random(7)
        )
        gateway.exchange.urls["api"] = double.ccxt_urls(gateway.exchange.urls["api"])
        gateway.exchange.timeout_on_exit = 0  # ccxt's grace for TLS shutdown: plain HTTP here
        try:
            await gateway.connect()
            yield Env(double, gateway, sleep, events, fed=1)
        finally:
            await gateway.close()


def check_ledger(env: Env) -> dict[str, OrderUpdate]:
    """Every order the gateway reported: exactly one final state, the venue's; its fills are
    exactly the venue's trades of that order, each once. Returns final updates by id."""
    venue = env.venue
    finals: dict[str, OrderUpdate] = {}
    fills: dict[str, list[OrderFilled]] = {}
    for report in env.reports:
        if isinstance(report, OrderFilled):
            fills.setdefault(report.client_order_id, []).append(report)
        elif report.status.is_final and not report.message.startswith("cancel"):
            assert report.client_order_id not in finals, f"second final state: {report}"
            finals[report.client_order_id] = report
    ids = Counter(f.fill_id for fs in fills.values() for f in fs)
    assert all(n == 1 for n in ids.values()), f"duplicated fills: {ids}"
    assert venue.duplicate_submits == 0, "an order was sent twice"
    for cid, final in finals.items():
        # An order the venue never received can only have been reported as rejected.
        expected = venue.final_status(cid) or OrderStatus.REJECTED
        assert expected == final.status, (cid, final, venue.final_status(cid))
        placed = venue.orders.get(cid)
        venue_trades = (
            {}
            if placed is None
            else {trade_fill_id(t): t for t in venue.trades if t["orderId"] == placed.order_id}
        )
        got = {f.fill_id: f for f in fills.get(cid, [])}
        assert set(got) == set(venue_trades), (cid, set(got), set(venue_trades))
        inst = venue.paper.instruments[SYMBOL]
        for fid, fill in got.items():
            trade = venue_trades[fid]
            assert inst.ticks_to_price(fill.price_ticks) == Decimal(trade["price"])
            assert inst.lots_to_qty(fill.qty_lots) == Decimal(trade["qty"])
            assert fill.fee_quote == Decimal(trade["commission"]).normalize()
        view = venue.paper.order_state(cid)
        if placed is not None:
            assert view is not None
            assert final.filled_lots == view.filled_lots == sum(f.qty_lots for f in got.values())
    return finals
