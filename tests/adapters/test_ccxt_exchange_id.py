"""A ccxt exchange id ccxt does not have is a config error naming the field, never an
AttributeError from ``getattr(ccxt, exchange_id)`` inside an actor."""

from __future__ import annotations

import ccxt
import ccxt.pro
import msgspec
import pytest

from sapphire.adapters.ccxt_gateway import (
    CcxtGatewayConfig,
    UnknownExchangeError,
    check_exchange_id,
)
from sapphire.adapters.ccxt_stream import check_stream_exchange_id


def test_every_ccxt_exchange_passes_and_a_typo_names_the_nearest() -> None:
    for exchange_id in ccxt.exchanges:
        check_exchange_id(exchange_id, "exchange.params.exchange_id")
    with pytest.raises(UnknownExchangeError) as info:
        check_exchange_id("binanse", "exchange.params.exchange_id")
    assert str(info.value) == (
        "exchange.params.exchange_id: unknown ccxt exchange 'binanse'; did you mean 'binance'?"
    )
    with pytest.raises(UnknownExchangeError, match=r"'qqqqqqqq'; the ids are in ccxt\.exchanges"):
        check_exchange_id("qqqqqqqq", "x")


def test_the_gateway_config_refuses_an_unknown_exchange() -> None:
    # what actors.wiring converts exchange.params with: refused there too, by name
    with pytest.raises(msgspec.ValidationError, match="exchange_id: unknown ccxt exchange"):
        msgspec.convert({"exchange_id": "binanse"}, CcxtGatewayConfig)
    assert msgspec.convert({"exchange_id": "bybit"}, CcxtGatewayConfig).exchange_id == "bybit"


def test_a_live_feed_needs_an_exchange_ccxt_pro_streams() -> None:
    check_stream_exchange_id("binance", "data.live.exchange_id")
    rest_only = sorted(set(ccxt.exchanges) - set(ccxt.pro.exchanges))
    assert rest_only  # else this test checks nothing
    with pytest.raises(UnknownExchangeError, match="has no websocket streams"):
        check_stream_exchange_id(rest_only[0], "data.live.exchange_id")
    with pytest.raises(UnknownExchangeError, match=r"data\.live\.exchange_id: unknown .*'binance'"):
        check_stream_exchange_id("binanse", "data.live.exchange_id")
