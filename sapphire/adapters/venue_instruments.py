"""Venue metadata files -> Instruments through ccxt's own market parsers, offline.

ccxt is the parser live trading uses (``load_markets``), so feeding it the recorded payloads
keeps replay and live on the same grids and unified symbols. Nothing here touches the
network: where ccxt parses inside ``fetch_markets`` only (Deribit, Kraken Futures), the
instance's endpoint method is replaced by one that returns the recorded body. Venues this ccxt
cannot parse (Bybit's legacy v2 API, BitMEX: no exchange class in this ccxt) go through the
pure parsers in :mod:`sapphire.data.venue_instruments`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ccxt

from sapphire.data.validation import DataFileError
from sapphire.data.venue_instruments import (
    MetadataFormat,
    Payload,
    VenueInstruments,
    VenueMetadata,
    bitmex_instrument,
    bybit_v2_instrument,
    deribit_payload,
    instrument_from_market,
    read_metadata,
)
from sapphire.model.instrument import Instrument, InstrumentError

_PARSE_ERRORS = (
    ccxt.BaseError,
    ArithmeticError,  # decimal.InvalidOperation from ccxt's number parsing
    AttributeError,
    IndexError,
    KeyError,
    TypeError,
    ValueError,
)


def _each(exchange: Any, markets: list[Payload]) -> list[Any]:
    """``parse_market`` per payload; a payload ccxt chokes on becomes its exception, which is
    counted as invalid instead of ending the file."""
    out: list[Any] = []
    for market in markets:
        try:
            out.append(exchange.parse_market(market))
        except _PARSE_ERRORS as exc:
            out.append(exc)
    return out


def _binance(markets: list[Payload]) -> list[Any]:
    exchange = ccxt.binance()
    # parse_market looks margin pairs up in lists load_markets fetches; none are recorded
    exchange.options["crossMarginPairsData"] = []
    exchange.options["isolatedMarginPairsData"] = []
    return _each(exchange, markets)


def _okx(markets: list[Payload]) -> list[Any]:
    return _each(ccxt.okx(), markets)


def _hyperliquid(markets: list[Payload]) -> list[Any]:
    return _each(ccxt.hyperliquid(), markets)


def _replayed(exchange: Any, endpoint: str, body: object) -> list[Any]:
    """ccxt's ``fetch_markets`` with ``endpoint`` answering the recorded ``body``."""
    setattr(exchange, endpoint, lambda params=None: body)
    return list(exchange.fetch_markets())


def _deribit(markets: list[Payload]) -> list[Any]:
    body = {"result": [deribit_payload(m) for m in markets]}
    return _replayed(ccxt.deribit(), "publicGetGetInstruments", body)


def _kraken_futures(markets: list[Payload]) -> list[Any]:
    body = {"result": "success", "instruments": markets}
    return _replayed(ccxt.krakenfutures(), "publicGetInstruments", body)


_CCXT: dict[MetadataFormat, Callable[[list[Payload]], list[Any]]] = {
    MetadataFormat.BINANCE_EXCHANGE_INFO: _binance,
    MetadataFormat.OKX_INSTRUMENTS: _okx,
    MetadataFormat.HYPERLIQUID_META: _hyperliquid,
    MetadataFormat.DERIBIT_INSTRUMENTS: _deribit,
    MetadataFormat.KRAKEN_FUTURES_INSTRUMENTS: _kraken_futures,
}


def _count(skipped: dict[str, int], reason: str) -> None:
    skipped[reason] = skipped.get(reason, 0) + 1


def instruments_from_metadata(meta: VenueMetadata, source: str = "") -> VenueInstruments:
    """Every tradeable market of ``meta``; the others are counted in ``skipped`` by reason
    ("not_tradeable" for indices, "invalid" for a grid an Instrument refuses)."""
    found: dict[str, Instrument] = {}
    skipped: dict[str, int] = {}

    def from_ccxt(market: Any) -> Instrument | None:
        if isinstance(market, Exception):
            raise market
        return None if market is None else instrument_from_market(market, meta.venue)

    parse = _CCXT.get(meta.fmt)
    items: list[Any]
    convert: Callable[[Any], Instrument | None]
    if parse is not None:
        try:
            items, convert = parse(meta.markets), from_ccxt
        except _PARSE_ERRORS as exc:
            raise DataFileError(
                f"{source or meta.venue}: ccxt cannot read the markets: {exc}"
            ) from exc
    elif meta.fmt is MetadataFormat.BITMEX_INSTRUMENTS:
        items, convert = meta.markets, bitmex_instrument
    else:
        items, convert = meta.markets, bybit_v2_instrument
    for item in items:
        try:
            inst = convert(item)
        except (InstrumentError, *_PARSE_ERRORS):
            _count(skipped, "invalid")
            continue
        if inst is None:
            _count(skipped, "not_tradeable")
        else:
            found[inst.symbol] = inst
    # ccxt drops payloads it cannot read (no base or quote) without a word
    missing = len(meta.markets) - sum(skipped.values()) - len(found)
    if missing > 0:
        skipped["unparsed"] = missing
    return VenueInstruments(venue=meta.venue, source=source, instruments=found, skipped=skipped)


def load_venue_instruments(path: str | Path) -> VenueInstruments:
    """Instruments of one venue metadata file (see :func:`read_metadata` for the formats)."""
    return instruments_from_metadata(read_metadata(path), source=str(path))
