"""Instruments from every venue's metadata: reading the files and ccxt's market structures.

One path for every venue: a metadata file (Binance ``exchangeInfo``, OKX and Deribit
instrument logs, BitMEX ``instrument/active``, Kraken Futures ``instruments``, Hyperliquid
``meta``, Bybit v2 ``symbols``) is read into its raw market payloads (:func:`read_metadata`),
ccxt's own ``parse_market`` turns each payload into a unified market where ccxt parses that
venue (in :mod:`sapphire.adapters.venue_instruments`, since the pure core may not import
ccxt), and :func:`instrument_from_market` makes the :class:`Instrument`. Live trading loads
the same ccxt structures from the network, so live and replay agree on every grid.

Symbols: ``Instrument.symbol`` is the venue id the market-data loaders emit ("BTC-USD-SWAP",
"PI_XBTUSD", "DYDX"); ``Instrument.unified`` is ccxt's unified symbol ("BTC/USD:BTC").
Assets (``base``, ``quote``, ``settle``) are ccxt's unified codes (BTC, not XBT/XBt).

Grids: ``lot_size`` is the order step (ccxt ``precision.amount``); ``size_increment`` is the
grid of the sizes the venue reports, finer only where the venue says so (Binance spot sizes
carry the base asset's precision, 8 decimals, while orders step by LOT_SIZE).

Filters beyond the grids (:class:`FilterFields`): a limit price's range (ccxt
``limits.price``: Binance PRICE_FILTER, Bybit and BitMEX price limits, Deribit's tick) and a
market order's quantity range (``limits.market``: Binance MARKET_LOT_SIZE) wherever ccxt or the
venue gives them; Binance's percent-price band and open-order cap from its own ``filters``
(ccxt does not unify them).
"""

from __future__ import annotations

import enum
import gzip
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec

from sapphire.data.validation import DataFileError
from sapphire.model.instrument import (
    Instrument,
    InstrumentError,
    InstrumentKind,
    OptionType,
    PriceBandReference,
)

Payload = dict[str, Any]


class MetadataFormat(enum.StrEnum):
    BINANCE_EXCHANGE_INFO = "binance_exchange_info"
    BYBIT_V2_SYMBOLS = "bybit_v2_symbols"
    OKX_INSTRUMENTS = "okx_instruments"
    BITMEX_INSTRUMENTS = "bitmex_instruments"
    DERIBIT_INSTRUMENTS = "deribit_instruments"
    KRAKEN_FUTURES_INSTRUMENTS = "kraken_futures_instruments"
    HYPERLIQUID_META = "hyperliquid_meta"


class VenueMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """The raw market payloads of one metadata file, one per venue id (repeats removed)."""

    fmt: MetadataFormat
    venue: str
    markets: list[Payload]
    repeated: int = 0  # payloads of ids already seen (OKX logs repeat every request 5 times)


class VenueInstruments(msgspec.Struct, frozen=True, kw_only=True):
    """Instruments of one metadata file by venue id, and the payloads not made into one."""

    venue: str
    source: str
    instruments: dict[str, Instrument]
    skipped: dict[str, int] = msgspec.field(default_factory=dict)  # reason -> count

    def by_unified(self) -> dict[str, Instrument]:
        return {i.unified: i for i in self.instruments.values() if i.unified}


# -- reading --------------------------------------------------------------------------------
def _text(path: Path) -> str:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                return handle.read()
        return path.read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot read: {exc}") from exc


def _log_bodies(path: Path, text: str) -> list[tuple[str, Any]]:
    """``(url, json body)`` of a cryptofeed HTTP log (``<url> -> <ts>: <json>`` lines)."""
    out: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if " -> " not in line:
            continue  # the trailing "configuration: {...}" line is cryptofeed's, not a reply
        url, rest = line.split(" -> ", 1)
        try:
            out.append((url, json.loads(rest.split(": ", 1)[1])))
        except (IndexError, ValueError) as exc:
            raise DataFileError(f"{path}:{number}: not '<url> -> <ts>: <json>': {exc}") from exc
    return out


def _binance_venue(symbols: list[Payload]) -> str:
    if any("contractSize" in s for s in symbols):
        return "BINANCE_COINM"
    if any("contractType" in s for s in symbols):
        return "BINANCE_USDM"
    return "BINANCE"


def _dedupe(
    path: Path, fmt: MetadataFormat, venue: str, items: list[Any], key: str
) -> VenueMetadata:
    markets: dict[str, Payload] = {}
    repeated = 0
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get(key), str | int):
            raise DataFileError(f"{path}: a market without '{key}': {str(item)[:80]}")
        if str(item[key]) in markets:
            repeated += 1
            continue
        markets[str(item[key])] = item
    return VenueMetadata(fmt=fmt, venue=venue, markets=list(markets.values()), repeated=repeated)


def read_metadata(path: str | Path) -> VenueMetadata:
    """The market payloads of a venue metadata file, its format told by its content."""
    path = Path(path)
    text = _text(path)
    if " -> " in text.split("\n", 1)[0]:
        bodies = _log_bodies(path, text)
        urls = " ".join(u for u, _ in bodies)
        if "okx.com" in urls:
            items = [d for _, b in bodies for d in (b.get("data") or [])]
            return _dedupe(path, MetadataFormat.OKX_INSTRUMENTS, "OKX", items, "instId")
        if "deribit.com" in urls:
            items = [d for _, b in bodies for d in (b.get("result") or [])]
            fmt = MetadataFormat.DERIBIT_INSTRUMENTS
            return _dedupe(path, fmt, "DERIBIT", items, "instrument_name")
        raise DataFileError(f"{path}: an HTTP log of no known instrument endpoint")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise DataFileError(f"{path}: cannot read JSON: {exc}") from exc
    if isinstance(body, list) and body and isinstance(body[0], dict) and "isInverse" in body[0]:
        return _dedupe(path, MetadataFormat.BITMEX_INSTRUMENTS, "BITMEX", body, "symbol")
    if isinstance(body, dict):
        if isinstance(body.get("symbols"), list):
            fmt, venue = MetadataFormat.BINANCE_EXCHANGE_INFO, _binance_venue(body["symbols"])
            return _dedupe(path, fmt, venue, body["symbols"], "symbol")
        if isinstance(body.get("instruments"), list):
            fmt = MetadataFormat.KRAKEN_FUTURES_INSTRUMENTS
            return _dedupe(path, fmt, "KRAKEN_FUTURES", body["instruments"], "symbol")
        if isinstance(body.get("universe"), list):
            # the position in the universe is the asset index ccxt uses as the market id
            items = [{**u, "baseId": i} for i, u in enumerate(body["universe"])]
            fmt = MetadataFormat.HYPERLIQUID_META
            return _dedupe(path, fmt, "HYPERLIQUID", items, "name")
        result = body.get("result")
        if isinstance(result, list) and result and "lot_size_filter" in result[0]:
            return _dedupe(path, MetadataFormat.BYBIT_V2_SYMBOLS, "BYBIT", result, "name")
    raise DataFileError(f"{path}: not a venue instrument metadata file Sapphire knows")


# the words venue metadata files are named with (market-data files are not): only these are
# parsed to decide, so detecting a large recording costs nothing
_NAME_HINTS = ("exchangeinfo", "instrument", "symbols", "_meta")


def sniff_metadata(path: str | Path) -> MetadataFormat | None:
    """The metadata format of a file whose name suggests one and whose content is one."""
    path = Path(path)
    if not any(hint in path.name.lower() for hint in _NAME_HINTS):
        return None
    try:
        return read_metadata(path).fmt
    except DataFileError:
        return None


# -- numbers --------------------------------------------------------------------------------
def dec_text(value: object) -> str:
    """Canonical decimal string of a ccxt float or a venue string ("1e-08" -> "0.00000001")."""
    if value is None or value == "":
        return "0"
    try:
        dec = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation as exc:
        raise InstrumentError(f"not a number: {value!r}") from exc
    if not dec.is_finite():
        raise InstrumentError(f"not a finite number: {value!r}")
    return format(dec.normalize(), "f")


def _bps(fraction: object) -> str:
    return "0" if fraction is None else dec_text(Decimal(dec_text(fraction)) * 10_000)


def _ms_to_ns(ms: object) -> int:
    return int(ms) * 1_000_000 if isinstance(ms, int | float) else 0


# ccxt gives Deribit perpetuals this far-future "expiry"; a perpetual has none
_NO_EXPIRY_MS = 32503708800000


def _kind(market: Mapping[str, Any]) -> InstrumentKind | None:
    inverse = bool(market.get("inverse"))
    if market.get("option"):
        return InstrumentKind.OPTION
    if market.get("swap"):
        return InstrumentKind.INVERSE_PERPETUAL if inverse else InstrumentKind.PERPETUAL
    if market.get("future"):
        return InstrumentKind.INVERSE_FUTURE if inverse else InstrumentKind.FUTURE
    if market.get("spot"):
        return InstrumentKind.SPOT
    return None  # indices and other non-tradeable entries


class FilterFields(msgspec.Struct, frozen=True, kw_only=True):
    """The exchange filters beyond the grids, as the :class:`Instrument` fields of the same
    names; every default is the Instrument's "no limit"."""

    min_price: str = "0"
    max_price: str = "0"
    market_min_qty: str = "0"
    market_max_qty: str = "0"
    bid_multiplier_up: str = "0"
    bid_multiplier_down: str = "0"
    ask_multiplier_up: str = "0"
    ask_multiplier_down: str = "0"
    price_band_reference: PriceBandReference = PriceBandReference.AVERAGE
    avg_price_mins: int = 0
    max_num_orders: int = 0


def _count(value: object) -> int:
    """A venue's whole number ("5", 200), 0 for none; a fraction or a negative one is an
    error naming it (the Instrument refuses a negative one too)."""
    if value is None or value == "":
        return 0
    number = Decimal(dec_text(value))
    if number != number.to_integral_value():
        raise InstrumentError(f"not a whole number: {value!r}")
    return int(number)


def binance_filters(
    filters: object, *, derivative: bool, base: FilterFields | None = None
) -> FilterFields:
    """``base`` completed with a Binance symbol's ``filters`` (exchangeInfo): PRICE_FILTER
    and MARKET_LOT_SIZE bounds, PERCENT_PRICE_BY_SIDE / PERCENT_PRICE, MAX_NUM_ORDERS.

    PERCENT_PRICE means two things: on spot a two-sided band around the average trade
    price of ``avgPriceMins`` (PERCENT_PRICE_BY_SIDE is its per-side successor); on USD-M
    and COIN-M futures "BUY: price <= markPrice x multiplierUp, SELL: price >= markPrice x
    multiplierDown", a buy with no floor and a sell with no ceiling (``derivative``)."""
    out = base or FilterFields()
    if not isinstance(filters, list):
        return out
    by_type = {f.get("filterType"): f for f in filters if isinstance(f, dict)}
    fields: dict[str, object] = {}
    price = by_type.get("PRICE_FILTER")
    if price is not None:
        fields.update(min_price=dec_text(price.get("minPrice")))
        fields.update(max_price=dec_text(price.get("maxPrice")))
    market = by_type.get("MARKET_LOT_SIZE")
    if market is not None:
        fields.update(market_min_qty=dec_text(market.get("minQty")))
        fields.update(market_max_qty=dec_text(market.get("maxQty")))
    by_side = by_type.get("PERCENT_PRICE_BY_SIDE")
    percent = by_type.get("PERCENT_PRICE")
    if by_side is not None:
        fields.update(
            bid_multiplier_up=dec_text(by_side.get("bidMultiplierUp")),
            bid_multiplier_down=dec_text(by_side.get("bidMultiplierDown")),
            ask_multiplier_up=dec_text(by_side.get("askMultiplierUp")),
            ask_multiplier_down=dec_text(by_side.get("askMultiplierDown")),
            price_band_reference=PriceBandReference.AVERAGE,
            avg_price_mins=_count(by_side.get("avgPriceMins")),
        )
    elif percent is not None and derivative:
        fields.update(
            bid_multiplier_up=dec_text(percent.get("multiplierUp")),
            ask_multiplier_down=dec_text(percent.get("multiplierDown")),
            price_band_reference=PriceBandReference.MARK,
        )
    elif percent is not None:
        up, down = dec_text(percent.get("multiplierUp")), dec_text(percent.get("multiplierDown"))
        fields.update(
            bid_multiplier_up=up,
            bid_multiplier_down=down,
            ask_multiplier_up=up,
            ask_multiplier_down=down,
            price_band_reference=PriceBandReference.AVERAGE,
            avg_price_mins=_count(percent.get("avgPriceMins")),
        )
    orders = by_type.get("MAX_NUM_ORDERS")
    if orders is not None:
        # spot names the cap maxNumOrders, futures limit
        fields.update(max_num_orders=_count(orders.get("maxNumOrders", orders.get("limit"))))
    return msgspec.structs.replace(out, **fields)


def market_filters(market: Mapping[str, Any], kind: InstrumentKind) -> FilterFields:
    """The filters of a ccxt unified market: ``limits.price`` and ``limits.market`` where
    ccxt gives them (any venue), then Binance's own ``info.filters`` where present."""
    limits: Mapping[str, Any] = market.get("limits") or {}
    price: Mapping[str, Any] = limits.get("price") or {}
    orders: Mapping[str, Any] = limits.get("market") or {}
    base = FilterFields(
        min_price=dec_text(price.get("min")),
        max_price=dec_text(price.get("max")),
        market_min_qty=dec_text(orders.get("min")),
        market_max_qty=dec_text(orders.get("max")),
    )
    info: Mapping[str, Any] = market.get("info") or {}
    return binance_filters(
        info.get("filters"), derivative=kind is not InstrumentKind.SPOT, base=base
    )


class MarginFields(msgspec.Struct, frozen=True, kw_only=True):
    """The :class:`Instrument` margin fields of the same names; "" = the venue states none
    (the paper venue's configured default applies)."""

    maint_margin_rate: str = ""
    liquidation_fee_rate: str = ""


def margin_fields(info: Mapping[str, Any], venue: str) -> MarginFields:
    """The maintenance margin rate and liquidation fee rate a venue's own market payload
    states. Binance: ``liquidationFee`` (its ``maintMarginPercent`` is documented "ignore":
    2.5 on every symbol); Kraken Futures: the first of ``marginLevels``
    (``retailMarginLevels`` bind retail clients only); Hyperliquid: half the initial margin
    at ``maxLeverage``, its documented rule."""
    if venue.startswith("BINANCE") and info.get("liquidationFee") is not None:
        return MarginFields(liquidation_fee_rate=dec_text(info["liquidationFee"]))
    if venue == "KRAKEN_FUTURES":
        levels = info.get("marginLevels")
        if isinstance(levels, list) and levels and isinstance(levels[0], dict):
            rate = levels[0].get("maintenanceMargin")
            if rate is not None:
                return MarginFields(maint_margin_rate=dec_text(rate))
    if venue == "HYPERLIQUID" and info.get("maxLeverage"):
        rate = 1 / (2 * Decimal(dec_text(info["maxLeverage"])))
        return MarginFields(maint_margin_rate=dec_text(rate))
    return MarginFields()


def instrument_from_market(market: Mapping[str, Any], venue: str) -> Instrument | None:
    """A ccxt unified market (TICK_SIZE precision) as an Instrument; None for a market with
    no tradeable kind (an index). Raises :class:`InstrumentError` for invalid grids."""
    kind = _kind(market)
    if kind is None:
        return None
    info: Mapping[str, Any] = market.get("info") or {}
    precision: Mapping[str, Any] = market.get("precision") or {}
    limits: Mapping[str, Any] = market.get("limits") or {}
    amount: Mapping[str, Any] = limits.get("amount") or {}
    cost: Mapping[str, Any] = limits.get("cost") or {}
    symbol = str(market["id"])
    lot = precision.get("amount")
    tick = precision.get("price")
    size_increment = ""
    # no contractSize (spot) is one unit; a zero one is a broken listing the Instrument refuses
    size = market.get("contractSize")
    contract = dec_text(1 if size is None else size)
    if venue == "BINANCE" and kind is InstrumentKind.SPOT:
        # Binance spot depth and trade sizes carry the base asset's precision (8 decimals):
        # levels aggregate orders placed under older, finer LOT_SIZE steps.
        base_step = precision.get("base")
        if base_step is not None and Decimal(dec_text(base_step)) < Decimal(dec_text(lot)):
            size_increment = dec_text(base_step)
    elif venue == "OKX" and kind is not InstrumentKind.SPOT:
        # OKX's contract value is ctVal x ctMult (BTC options: 1 x 0.1 BTC); ccxt's
        # contractSize is ctVal alone.
        contract = dec_text(
            Decimal(dec_text(info.get("ctVal"))) * Decimal(dec_text(info.get("ctMult") or 1))
        )
    elif venue == "DERIBIT" and kind is not InstrumentKind.OPTION:
        # Deribit sizes inverse futures in USD (BTC-PERPETUAL amounts are multiples of the
        # 10-USD contract) and linear ones in the base coin (SOL_USDC-PERPETUAL in SOL), so
        # one unit of quantity is worth 1 USD or 1 coin. ccxt's contractSize of a linear one
        # is its minimum trade (0.1 SOL, 0.001 BTC): notional, fees and margin were 10-1000x
        # too small.
        contract = "1"
    elif venue == "KRAKEN_FUTURES":
        # 2021 instruments carry no contractValueTradePrecision: whole contracts only. The
        # websocket feeds name products in upper case ("PI_XBTUSD"), the REST list in lower.
        lot = lot if lot is not None else 1
        symbol = symbol.upper()
    elif venue == "HYPERLIQUID":
        # ccxt ids Hyperliquid perps by asset index; the feeds name the coin ("DYDX")
        symbol = str(market.get("baseName") or info.get("name") or symbol)
        # The venue's price grid: 6 decimals less szDecimals for perps (8 for spot), at most
        # 5 significant figures (below). ccxt derives it from the mark price, which a meta
        # file lacks: kPEPE (szDecimals 0) came out 0.00001, and all 24 of its recorded
        # candles (0.001604 ...) were off that grid.
        sz = info.get("szDecimals")
        if sz is not None:
            decimals = (8 if kind is InstrumentKind.SPOT else 6) - int(sz)
            tick = dec_text(Decimal(1).scaleb(-decimals))
    # Hyperliquid's price rule is 5 significant figures within its decimals grid
    sig_figs = 5 if venue == "HYPERLIQUID" else 0
    expiry = market.get("expiry")
    option_type = market.get("optionType")
    filters = market_filters(market, kind)
    margin = margin_fields(info, venue)
    return Instrument(
        symbol=symbol,
        venue=venue,
        kind=kind,
        base=str(market.get("base") or ""),
        quote=str(market.get("quote") or ""),
        tick_size=dec_text(tick),
        lot_size=dec_text(lot),
        size_increment=size_increment,
        min_qty=dec_text(amount.get("min")),
        max_qty=dec_text(amount.get("max")),
        min_notional=dec_text(cost.get("min")),
        maker_fee_bps=_bps(market.get("maker")),
        taker_fee_bps=_bps(market.get("taker")),
        fee_tier="base",
        contract_size=contract if kind is not InstrumentKind.SPOT else "1",
        settle=str(market.get("settle") or ""),
        unified=str(market.get("symbol") or ""),
        expiry_ns=0 if expiry in (None, _NO_EXPIRY_MS) else _ms_to_ns(expiry),
        strike=dec_text(market["strike"]) if market.get("strike") is not None else "",
        option_type=OptionType(option_type) if option_type in ("call", "put") else None,
        price_sig_figs=sig_figs,
        **msgspec.structs.asdict(filters),
        **msgspec.structs.asdict(margin),
    )


def deribit_payload(raw: Payload) -> Payload:
    """A Deribit instrument in the field set today's ccxt reads.

    Deribit added ``counter_currency`` and ``settlement_currency`` in 2022; before that
    every BTC and ETH instrument was priced against USD and settled in its base coin, and
    ccxt skips payloads without them.
    """
    out = dict(raw)
    out.setdefault("counter_currency", "USD")
    out.setdefault("settlement_currency", raw.get("base_currency"))
    return out


# -- venues ccxt does not parse -------------------------------------------------------------
_CODES = {"XBT": "BTC", "XBt": "BTC", "USDt": "USDT"}
# BitMEX settles in minor units: value = multiplier x ... in satoshi (XBt) or micro-USDT
_SETTLE_SCALE = {"XBt": Decimal(100_000_000), "USDt": Decimal(1_000_000)}


def _code(venue_code: str) -> str:
    return _CODES.get(venue_code, venue_code.upper())


def _iso_ns(text: object) -> int:
    if not isinstance(text, str) or not text:
        return 0
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)


def _yymmdd(expiry_ns: int) -> str:
    return datetime.fromtimestamp(expiry_ns / 1e9, tz=UTC).strftime("%y%m%d")


def bitmex_instrument(raw: Payload) -> Instrument | None:
    """A BitMEX ``instrument/active`` entry (the ccxt installed here ships no BitMEX class).

    Contracts are sized in contracts. Inverse (XBTUSD): ``|multiplier|`` satoshi per USD, so
    ``contract_size`` is that many USD per contract over 1e8. Quanto (ETHUSD, *USDT) and
    linear (XRPU21) are worth ``price x multiplier`` settlement minor units per contract, the
    linear formula with ``contract_size = multiplier / 1e8`` BTC per price unit.
    """
    typ = str(raw.get("typ", ""))
    if typ not in ("FFWCSX", "FFCCSX"):
        return None  # indices and spreads
    settl = str(raw.get("settlCurrency") or "")
    scale = _SETTLE_SCALE.get(settl)
    if scale is None:
        raise InstrumentError(f"{raw.get('symbol')}: unknown settlement currency {settl!r}")
    inverse = bool(raw.get("isInverse"))
    perpetual = typ == "FFWCSX"
    expiry_ns = 0 if perpetual else _iso_ns(raw.get("expiry"))
    if inverse:
        kind = InstrumentKind.INVERSE_PERPETUAL if perpetual else InstrumentKind.INVERSE_FUTURE
    else:
        kind = InstrumentKind.PERPETUAL if perpetual else InstrumentKind.FUTURE
    base, quote, settle = (
        _code(str(raw.get("underlying") or "")),
        _code(str(raw.get("quoteCurrency") or "")),
        _code(settl),
    )
    contract = Decimal(abs(int(raw["multiplier"]))) / scale
    unified = f"{base}/{quote}:{settle}" + ("" if perpetual else f"-{_yymmdd(expiry_ns)}")
    return Instrument(
        symbol=str(raw["symbol"]),
        venue="BITMEX",
        kind=kind,
        base=base,
        quote=quote,
        tick_size=dec_text(raw.get("tickSize")),
        lot_size=dec_text(raw.get("lotSize")),
        min_qty=dec_text(raw.get("lotSize")),
        max_qty=dec_text(raw.get("maxOrderQty")),
        # BitMEX refuses an order priced above the instrument's maxPrice
        max_price=dec_text(raw.get("maxPrice")),
        # the first risk limit's (a position past ``riskLimit`` needs ``riskStep`` more)
        maint_margin_rate=dec_text(raw["maintMargin"]) if raw.get("maintMargin") else "",
        maker_fee_bps=_bps(raw.get("makerFee")),
        taker_fee_bps=_bps(raw.get("takerFee")),
        fee_tier="base",
        contract_size=dec_text(contract),
        settle=settle,
        unified=unified,
        expiry_ns=expiry_ns,
    )


_BYBIT_MONTHS = "FGHJKMNQUVXZ"


def bybit_v2_instrument(raw: Payload) -> Instrument:
    """A Bybit legacy v2 ``/v2/public/symbols`` entry (ccxt reads only v5 ``instruments-info``).

    v2 has no linear/inverse flag: a USD quote is inverse (1-USD contracts), USDT linear
    (base coin). Dated futures are named ``BTCUSDM21`` with alias ``BTCUSD0625``: month code
    and year from the name, day from the alias; Bybit delivered at 08:00 UTC.
    """
    name = str(raw["name"])
    base, quote = str(raw["base_currency"]), str(raw["quote_currency"])
    inverse = quote == "USD"
    alias = str(raw.get("alias") or name)
    expiry_ns = 0
    if alias != name:
        month = _BYBIT_MONTHS.index(name[-3]) + 1
        year = 2000 + int(name[-2:])
        day = int(alias[-2:])
        if int(alias[-4:-2]) != month:
            raise InstrumentError(f"{name}: alias {alias} disagrees with the month code")
        expiry_ns = int(datetime(year, month, day, 8, tzinfo=UTC).timestamp() * 1e9)
    if inverse:
        kind = InstrumentKind.INVERSE_FUTURE if expiry_ns else InstrumentKind.INVERSE_PERPETUAL
        settle = base
    else:
        kind = InstrumentKind.FUTURE if expiry_ns else InstrumentKind.PERPETUAL
        settle = quote
    price, lot = raw.get("price_filter") or {}, raw.get("lot_size_filter") or {}
    unified = f"{base}/{quote}:{settle}" + (f"-{_yymmdd(expiry_ns)}" if expiry_ns else "")
    return Instrument(
        symbol=name,
        venue="BYBIT",
        kind=kind,
        base=base,
        quote=quote,
        tick_size=dec_text(price.get("tick_size")),
        lot_size=dec_text(lot.get("qty_step")),
        min_qty=dec_text(lot.get("min_trading_qty")),
        max_qty=dec_text(lot.get("max_trading_qty")),
        min_price=dec_text(price.get("min_price")),
        max_price=dec_text(price.get("max_price")),
        maker_fee_bps=_bps(raw.get("maker_fee")),
        taker_fee_bps=_bps(raw.get("taker_fee")),
        fee_tier="base",
        contract_size="1",
        settle=settle,
        unified=unified,
        expiry_ns=expiry_ns,
    )
