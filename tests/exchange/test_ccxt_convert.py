"""ccxt structures -> instruments and reports; retry policy; credentials (no network)."""

from __future__ import annotations

import gzip
import json
import pickle
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.adapters.ccxt_credentials import ApiCredentials, CredentialsError
from sapphire.adapters.ccxt_gateway import CcxtExchange, CcxtGatewayConfig
from sapphire.adapters.ccxt_retry import Failure, RetryPolicy, classify, retry_after_s
from sapphire.adapters.ccxt_tracking import reject_reason
from sapphire.data.instruments import instruments_from_exchange_info
from sapphire.exchange import ccxt_convert as cv
from sapphire.model import Instrument, OrderStatus, RejectReason

BTC = Instrument(symbol="BTCUSDT", base="BTC", quote="USDT", tick_size="0.01", lot_size="0.00001")


@pytest.fixture(scope="module")
def spot_markets(shared_data: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = shared_data / "exchange" / "cryptofeed_binance_spot_exchangeInfo_2021-10-12.json.gz"
    with gzip.open(path, "rt") as handle:
        info = json.load(handle)
    # ccxt's own Binance parser, offline (it wants the margin-pair lists it would fetch).
    parser = ccxt.binance({"options": {"crossMarginPairsData": [], "isolatedMarginPairsData": []}})
    return info, [parser.parse_market(s) for s in info["symbols"]]


def test_instrument_from_market_with_real_exchange_info_matches_binance_filters(
    spot_markets: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    info, markets = spot_markets
    reference = instruments_from_exchange_info(info)
    assert len(markets) == len(reference) == 1695
    for market in markets:
        got = cv.instrument_from_market(market)
        ref = reference[market["id"]]
        assert (got.tick_size, got.lot_size, got.min_qty, got.max_qty, got.min_notional) == (
            ref.tick_size,
            ref.lot_size,
            ref.min_qty,
            ref.max_qty,
            ref.min_notional,
        ), market["id"]
        # ccxt's unified asset codes, the ones its balances and fees name (YOYO is YOYOW)
        assert (got.base, got.quote) == (market["base"], market["quote"])
        assert (market["baseId"], market["quoteId"]) == (ref.base, ref.quote)
        assert got.taker_fee_bps == "10"  # ccxt's default 0.1 % taker fee
        # the book's size grid is the base asset's precision where it is finer than LOT_SIZE
        base_step = Decimal(cv.decimal_text(market["precision"]["base"]))
        finer = base_step < Decimal(ref.lot_size)
        assert got.size_increment == (cv.decimal_text(base_step) if finer else ""), market["id"]


def test_instrument_from_market_without_filters_uses_ccxt_precision(
    spot_markets: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    info, markets = spot_markets
    reference = instruments_from_exchange_info(info)
    for market in markets[:200]:
        bare = {**market, "info": {}}
        got = cv.instrument_from_market(bare)
        ref = reference[market["id"]]
        assert Decimal(got.tick_size) == Decimal(ref.tick_size), market["id"]
        assert Decimal(got.lot_size) == Decimal(ref.lot_size), market["id"]
        assert Decimal(got.min_notional) == Decimal(ref.min_notional), market["id"]


EXCHANGE_INFOS = (
    "cryptofeed_binance_spot_exchangeInfo_2021-10-12.json.gz",
    "cryptofeed_binance_usdm_exchangeInfo_2021-07-22.json.gz",
    "cryptofeed_binance_coinm_exchangeInfo_2021-07-22.json.gz",
)


def test_live_instruments_equal_the_replayed_ones(shared_data: Path) -> None:
    """Binance spot, USDT-M and COIN-M metadata through ccxt's ``load_markets`` (its
    ``fetch_markets`` answering the recorded exchangeInfo, as the live venue would) and the
    live converter give the very Instruments the replay loader makes of the same file: grids,
    contract sizes, settlement, kinds, unified symbols, expiries, fees."""
    from sapphire.adapters.venue_instruments import load_venue_instruments

    compared: dict[str, int] = {}
    for name in EXCHANGE_INFOS:
        path = shared_data / "exchange" / name
        replay = load_venue_instruments(path)
        with gzip.open(path, "rt") as handle:
            info = json.load(handle)
        exchange = ccxt.binance({"options": {"fetchMarkets": {"types": [_TYPES[replay.venue]]}}})
        exchange.options["crossMarginPairsData"] = []
        exchange.options["isolatedMarginPairsData"] = []
        endpoint = _ENDPOINTS[replay.venue]
        setattr(exchange, endpoint, lambda params=None, body=info: body)
        live: dict[str, Instrument] = {}
        for market in exchange.load_markets().values():
            inst = cv.instrument_from_market(market, replay.venue)
            live[inst.symbol] = inst
        assert live == replay.instruments
        compared[replay.venue] = len(live)
        coinm = live.get("BTCUSD_PERP")
        if coinm is not None:  # the live gateway still refuses to book inverse contracts
            assert (coinm.contract_size, coinm.settle_asset) == ("100", "BTC")
            with pytest.raises(cv.ConversionError, match="inverse"):
                cv.check_live_tradeable(coinm)
    assert compared == {"BINANCE": 1_695, "BINANCE_USDM": 122, "BINANCE_COINM": 36}
    spot = load_venue_instruments(shared_data / "exchange" / EXCHANGE_INFOS[0]).instruments
    eth = spot["ETHUSDT"]
    assert (eth.lot_size, eth.size_increment, eth.lots_per_step) == ("0.0001", "0.00000001", 10_000)
    cv.check_live_tradeable(eth)


def test_the_gateway_counts_the_runs_quantity_unit() -> None:
    """A run's instrument file without ``size_increment`` counts order steps; the venue's
    instrument has the finer size grid: the gateway must count the run's unit, or an order
    of 100 lots (0.001 BTC) would leave as 0.000001 BTC."""
    venue = msgspec.structs.replace(BTC, size_increment="0.00000001")
    assert venue.lots_per_step == 1_000
    bare = cv.live_units(venue, None)
    assert bare.lots_to_qty(100) == Decimal("0.001")
    assert cv.live_units(venue, BTC) == bare
    assert cv.live_units(venue, venue).lots_to_qty(100_000) == Decimal("0.001")
    coarse = msgspec.structs.replace(BTC, lot_size="0.0001")
    with pytest.raises(cv.GridMismatch, match=r"BTCUSDT: lot_size 0\.00001 at the venue"):
        cv.live_units(venue, coarse)


_TYPES = {"BINANCE": "spot", "BINANCE_USDM": "linear", "BINANCE_COINM": "inverse"}
_ENDPOINTS = {
    "BINANCE": "publicGetExchangeInfo",
    "BINANCE_USDM": "fapiPublicGetExchangeInfo",
    "BINANCE_COINM": "dapiPublicGetExchangeInfo",
}


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=1, max_value=10**11))
def test_ticks_and_lots_survive_ccxt_floats(price_ticks: int, qty_lots: int) -> None:
    # ccxt carries prices as floats; repr() of the float must give back the exact ticks.
    assert cv.ticks(BTC, float(BTC.ticks_to_price(price_ticks))) == price_ticks
    assert cv.lots(BTC, float(BTC.lots_to_qty(qty_lots))) == qty_lots


def test_off_grid_price_is_an_error_not_a_rounding() -> None:
    with pytest.raises(cv.ConversionError):
        cv.ticks(BTC, 61837.625)
    with pytest.raises(cv.ConversionError):
        cv.lots(BTC, "0.000015")


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("open", 0, OrderStatus.ACCEPTED),
        ("open", 3, OrderStatus.PARTIALLY_FILLED),
        ("closed", 5, OrderStatus.FILLED),
        ("canceled", 2, OrderStatus.CANCELED),
        ("expired", 0, OrderStatus.EXPIRED),
        ("rejected", 0, OrderStatus.REJECTED),
        ("canceling", 0, None),
    ],
)
def test_order_status(status: str, filled: int, expected: OrderStatus | None) -> None:
    assert cv.order_status({"status": status}, filled) == expected


def test_fee_in_base_is_valued_at_the_trade_price_and_bnb_fee_is_flagged() -> None:
    price = 6_183_764
    quote_fee = {"fee": {"cost": 0.0618, "currency": "USDT"}}
    base_fee = {"fee": {"cost": 0.000001, "currency": "BTC"}}
    bnb_fee = {"fee": {"cost": 0.0001, "currency": "BNB"}}
    assert cv.fee_quote(quote_fee, BTC, price) == Decimal("0.0618")
    assert cv.fee_quote(base_fee, BTC, price) == Decimal("0.000001") * Decimal("61837.64")
    assert cv.fee_quote(bnb_fee, BTC, price) == 0
    assert cv.fee_in_other(bnb_fee, BTC) and not cv.fee_in_other(base_fee, BTC)


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (ccxt.DDoSProtection("429"), Failure.THROTTLED),
        (ccxt.RateLimitExceeded("-1003"), Failure.THROTTLED),
        (ccxt.InvalidNonce("-1021"), Failure.THROTTLED),
        (ccxt.RequestTimeout("timeout"), Failure.AMBIGUOUS),
        (ccxt.ExchangeNotAvailable("503"), Failure.AMBIGUOUS),
        (ccxt.NetworkError("reset"), Failure.AMBIGUOUS),
        (ccxt.OperationFailed("-1000"), Failure.AMBIGUOUS),
        (ccxt.InsufficientFunds("-2010"), Failure.FINAL),
        (ccxt.OrderNotFound("-2013"), Failure.FINAL),
        (ValueError("bug"), Failure.FINAL),
    ],
)
def test_classify(exc: BaseException, failure: Failure) -> None:
    assert classify(exc) is failure


def test_reject_reasons() -> None:
    assert reject_reason(ccxt.InsufficientFunds("x")) is RejectReason.INSUFFICIENT_BALANCE
    assert reject_reason(ccxt.OrderImmediatelyFillable("x")) is RejectReason.POST_ONLY_WOULD_TAKE
    assert reject_reason(ccxt.InvalidOrder("Filter failure: NOTIONAL")) is RejectReason.MIN_NOTIONAL
    assert reject_reason(ccxt.InvalidOrder("LOT_SIZE")) is RejectReason.INVALID_LOT
    assert reject_reason(ccxt.ExchangeError("?")) is RejectReason.EXCHANGE_ERROR
    # the same refusals as the paper venue's: spot's filter names and the futures' own words
    spot = {
        "MARKET_LOT_SIZE": RejectReason.MARKET_LOT_SIZE,  # not LOT_SIZE, which it contains
        "PRICE_FILTER": RejectReason.PRICE_FILTER,
        "PERCENT_PRICE_BY_SIDE": RejectReason.PERCENT_PRICE,
        "MAX_NUM_ORDERS": RejectReason.MAX_NUM_ORDERS,
    }
    for name, reason in spot.items():
        body = f'binance {{"code":-1013,"msg":"Filter failure: {name}"}}'
        assert reject_reason(ccxt.InvalidOrder(body)) is reason, name
    band = RejectReason.PERCENT_PRICE
    futures = {
        '{"code":-4016,"msg":"Limit price can\'t be higher than 70123.4."}': band,
        '{"code":-4017,"msg":"Limit price can\'t be lower than 50123.4."}': band,
        '{"code":-2025,"msg":"Reach max open order limit."}': RejectReason.MAX_NUM_ORDERS,
    }
    for body, reason in futures.items():
        assert reject_reason(ccxt.InvalidOrder(f"binanceusdm {body}")) is reason, body


@given(
    st.integers(min_value=1, max_value=30),
    st.integers(min_value=0, max_value=2**32),
    st.none() | st.floats(min_value=0, max_value=120),
)
def test_backoff_grows_with_jitter_and_respects_retry_after(
    retry: int, seed: int, after: float | None
) -> None:
    policy = RetryPolicy(base_s=0.25, cap_s=20.0)
    span = min(20.0, 0.25 * 2 ** (retry - 1))
    delay = policy.delay(retry, random.Random(seed), after)
    assert span / 2 <= delay or (after is not None and delay == after)
    assert delay <= max(span, after or 0.0)
    if after is not None:
        assert delay >= after


def test_retry_after_header() -> None:
    assert retry_after_s({"Retry-After": "3"}) == 3.0
    assert retry_after_s({"retry-after": "0.5"}) == 0.5
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_s({"Content-Type": "json"}) is None
    assert retry_after_s(None) is None


def test_credentials_from_env_and_files_are_never_shown(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t-value\n")
    creds = ApiCredentials.from_env(
        "X", {"X_API_KEY": "abcdefgh-key", "X_API_SECRET_FILE": str(secret_file)}
    )
    assert creds.ccxt_config() == {"apiKey": "abcdefgh-key", "secret": "s3cr3t-value"}
    for text in (repr(creds), str(creds), f"{creds}"):
        assert "s3cr3t" not in text and "abcdefgh-key" not in text
    with pytest.raises(TypeError):
        pickle.dumps(creds)
    gateway = CcxtExchange(CcxtGatewayConfig(), creds)
    assert "s3cr3t" not in repr(gateway) and "abcdefgh-key" not in repr(gateway)


def test_missing_credentials_name_the_variables_only(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="X_API_SECRET"):
        ApiCredentials.from_env("X", {"X_API_KEY": "k"})
    with pytest.raises(CredentialsError, match="cannot read"):
        ApiCredentials.from_env(
            "X", {"X_API_KEY": "k", "X_API_SECRET_FILE": str(tmp_path / "absent")}
        )
    with pytest.raises(CredentialsError):
        ApiCredentials("", "s")


def test_gateway_config_decodes_strictly() -> None:
    config = msgspec.convert(
        {"recv_window_ms": 3000, "retry": {"max_attempts": 3}}, CcxtGatewayConfig
    )
    assert config.recv_window_ms == 3000 and config.retry.max_attempts == 3
    assert config.options["fetchMarkets"] == {"types": ["spot"]}
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"apiKey": "k"}, CcxtGatewayConfig)  # secrets have no field
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"timeout_ms": 0}, CcxtGatewayConfig)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
