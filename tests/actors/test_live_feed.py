"""Live market data through real ccxt.pro websockets from the local Binance double: every
published trade arrives once and in order; a slow consumer gets the newest ticks and a
count of the conflated ones."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.live_feed import LiveFeed
from sapphire.adapters.binance_venue import BinanceVenue
from sapphire.config.system import LiveDataConfig
from sapphire.data import sample
from sapphire.data.instruments import load_exchange_info
from sapphire.data.registry import open_stream
from sapphire.exchange.config import PaperExchangeBuilder
from sapphire.model import Instrument, Trade
from tests.actors.double_thread import DoubleThread

pytestmark = pytest.mark.slow


@pytest.fixture
def venue_and_trades(shared_data: Path) -> Iterator[tuple[DoubleThread, Instrument, list[Trade]]]:
    info_path = shared_data / "exchange" / "basana_binance_exchangeInfo_BTCUSDT.json"
    inst = load_exchange_info(info_path)["BTCUSDT"]
    config = PaperExchangeBuilder().instrument(inst).balance("USDT", "1000").config()
    double = DoubleThread(BinanceVenue(config, json.loads(info_path.read_text())))
    trades = [e for e in open_stream(sample.sample_paths().trades, inst) if isinstance(e, Trade)]
    yield double, inst, trades[:200]
    double.stop()


def _live_config(double: DoubleThread, queue_size: int) -> LiveDataConfig:
    import ccxt.pro

    urls: dict[str, Any] = ccxt.pro.binance().urls["api"]  # REST and websocket hosts
    return LiveDataConfig(
        api_urls=double.double.ccxt_urls(urls), queue_size=queue_size, max_wait_s=0.2
    )


def _wait(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_every_published_trade_arrives_once_in_order(
    venue_and_trades: tuple[DoubleThread, Instrument, list[Trade]],
) -> None:
    double, inst, trades = venue_and_trades
    feed = LiveFeed(_live_config(double, 10_000), {inst.symbol: inst})
    _wait(lambda: double.subscribers("btcusdt@trade") > 0)
    double.publish_trades(inst, trades)
    got: list[Any] = []
    _wait(lambda: bool(got.extend(feed.take(1000))) or len(got) >= len(trades))
    assert [t.trade_id for t in got] == [t.trade_id for t in trades]
    assert [t.price_ticks for t in got] == [t.price_ticks for t in trades]
    assert all(t.ts_recv_ns > 0 for t in got)
    assert feed.rejected() == {"conflated": 0, "stream_errors": 0}
    feed.close()


def test_a_slow_consumer_gets_the_newest_ticks_and_a_conflation_count(
    venue_and_trades: tuple[DoubleThread, Instrument, list[Trade]],
) -> None:
    double, inst, trades = venue_and_trades
    feed = LiveFeed(_live_config(double, 20), {inst.symbol: inst})
    _wait(lambda: double.subscribers("btcusdt@trade") > 0)
    double.publish_trades(inst, trades[:100])
    _wait(lambda: feed.received >= 100)
    got = feed.take(1000)
    assert [t.trade_id for t in got] == [t.trade_id for t in trades[80:100]]
    assert feed.conflated == 80
    feed.close()


def test_a_failure_at_start_is_retried_and_an_unlisted_symbol_stops_it_saying_why(
    venue_and_trades: tuple[DoubleThread, Instrument, list[Trade]],
) -> None:
    # one 503 while the markets load ended the feed for good: the run stepped on empty
    # windows while its orders rested at the venue
    from sapphire.adapters.binance_double import Fault, FaultKind

    double, inst, trades = venue_and_trades
    double.double.inject("GET", "exchangeInfo", Fault(kind=FaultKind.UNAVAILABLE))
    feed = LiveFeed(_live_config(double, 10_000), {inst.symbol: inst})
    _wait(lambda: double.subscribers("btcusdt@trade") > 0)
    double.publish_trades(inst, trades[:50])
    got: list[Any] = []
    _wait(lambda: bool(got.extend(feed.take(1000))) or len(got) >= 50)
    assert [t.trade_id for t in got] == [t.trade_id for t in trades[:50]]
    assert feed.rejected() == {"conflated": 0, "stream_errors": 1, "stream_reconnects": 1}
    feed.close()
    other = msgspec.structs.replace(inst, symbol="NOPEUSDT")
    dead = LiveFeed(_live_config(double, 10_000), {other.symbol: other})
    _wait(lambda: bool(dead.failed))
    assert "NOPEUSDT" in dead.failed and dead.rejected()["stream_stopped"] == 1
    assert dead.reconnects == 0  # no reconnect makes a symbol appear
    dead.close()


def test_a_silent_symbol_is_named_once_past_its_limit(
    venue_and_trades: tuple[DoubleThread, Instrument, list[Trade]], tmp_path: Path
) -> None:
    # a connected socket that went quiet gave empty windows and nothing else: the agents
    # traded on the last book for as long as it lasted
    from actors.market_data import MarketDataActor

    double, inst, trades = venue_and_trades
    config = msgspec.structs.replace(_live_config(double, 10_000), max_silence_s=0.5)
    feed = LiveFeed(config, {inst.symbol: inst})
    _wait(lambda: double.subscribers("btcusdt@trade") > 0)
    double.publish_trades(inst, trades[:5])
    _wait(lambda: feed.received >= 5)
    assert feed.silent() == {}
    _wait(lambda: bool(feed.silent()), timeout_s=5)
    assert list(feed.silent()) == [inst.symbol]
    actor: Any = MarketDataActor.__ray_metadata__.modified_class(lambda: feed, 100, str(tmp_path))
    actor._feed = feed
    assert actor.feed_health().startswith("market data silent: no event for BTCUSDT")
    double.publish_trades(inst, trades[5:10])  # it speaks again
    _wait(lambda: feed.received >= 10)
    assert feed.silent() == {} and actor.feed_health() == ""
    off = LiveFeed(msgspec.structs.replace(config, max_silence_s=0), {inst.symbol: inst})
    assert off.silent(now=time.monotonic() + 3600) == {}  # 0: never
    off.close()
    feed.close()


def test_a_throttled_feed_waits_the_venues_retry_after_before_reconnecting(
    venue_and_trades: tuple[DoubleThread, Instrument, list[Trade]],
) -> None:
    # a 429 on the markets was retried at the feed's own backoff (six requests in 8 s for a
    # Retry-After of 120 s): from the IP the orders leave from, towards the same ban
    from sapphire.adapters.binance_double import Fault, FaultKind

    double, inst, _ = venue_and_trades
    double.double.inject("GET", "exchangeInfo", Fault(kind=FaultKind.RATE_LIMIT, retry_after_s=3))
    started = time.monotonic()
    feed = LiveFeed(_live_config(double, 10_000), {inst.symbol: inst})
    _wait(lambda: double.subscribers("btcusdt@trade") > 0)
    assert time.monotonic() - started >= 3.0
    assert double.double.count("GET", "exchangeInfo") == 2  # the refused one, then one more
    feed.close()
