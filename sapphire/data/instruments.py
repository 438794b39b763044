"""Instruments from Binance ``exchangeInfo`` JSON, known defaults, inference, and tick columns."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
import polars as pl

from sapphire.data.schemas import TICK_COLUMNS, kind_of
from sapphire.data.validation import DataFileError
from sapphire.data.venue_instruments import binance_filters, margin_fields, read_metadata
from sapphire.model import Instrument, InstrumentKind, infer_increment

# The recordings in shared/data are from 2023-2024: by then Binance USDT-M BTCUSDT traded on a
# 0.1 tick (the 2021 usdm exchangeInfo still says 0.01), so the recording grid wins here.
KNOWN_INSTRUMENTS: Final[dict[tuple[str, str], Instrument]] = {
    ("binance-usdm", "BTCUSDT"): Instrument(
        symbol="BTCUSDT",
        venue="BINANCE_USDM",
        kind=InstrumentKind.PERPETUAL,
        base="BTC",
        quote="USDT",
        tick_size="0.1",
        lot_size="0.001",
        min_qty="0.001",
        max_qty="1000",
        min_notional="100",
        maker_fee_bps="2",
        taker_fee_bps="5",
    ),
    ("binance-spot", "BTCUSDT"): Instrument(
        symbol="BTCUSDT",
        venue="BINANCE",
        kind=InstrumentKind.SPOT,
        base="BTC",
        quote="USDT",
        tick_size="0.01",
        lot_size="0.00001",
        # Binance spot sizes carry the base asset's 8 decimals: far levels aggregate orders
        # of older, finer steps (4690.343896 BTC at 12000 in the 2023 recording)
        size_increment="0.00000001",
        min_qty="0.00001",
        max_qty="9000",
        min_notional="10",
        maker_fee_bps="10",
        taker_fee_bps="10",
    ),
}


def known_instrument(market: str, symbol: str) -> Instrument | None:
    """The instrument of a recording, ``market`` like "binance-usdm" or "binance-spot"."""
    return KNOWN_INSTRUMENTS.get((market, symbol))


def _decimal_text(value: str) -> str:
    """Exchange filters pad with zeros ("0.01000000"); keep the canonical short form."""
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value or "0"


def _read_json(path: Path) -> Any:
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError, EOFError) as exc:
        raise DataFileError(f"{path}: cannot read JSON: {exc}") from exc


def instruments_from_exchange_info(
    info: Mapping[str, Any], venue: str = "BINANCE"
) -> dict[str, Instrument]:
    """Spot symbols and perpetual futures of an ``exchangeInfo`` body, by symbol.

    Delivery futures (``CURRENT_QUARTER`` ...) have no ``InstrumentKind`` and are skipped, as
    are symbols whose filters are missing or invalid.
    """
    result: dict[str, Instrument] = {}
    for entry in info.get("symbols", []):
        contract = entry.get("contractType")
        if contract not in (None, "PERPETUAL"):
            continue
        filters = {f.get("filterType"): f for f in entry.get("filters", [])}
        price, lot = filters.get("PRICE_FILTER"), filters.get("LOT_SIZE")
        if price is None or lot is None:
            continue
        notional = filters.get("MIN_NOTIONAL") or filters.get("NOTIONAL") or {}
        min_notional = notional.get("minNotional", notional.get("notional", "0"))
        kind = InstrumentKind.PERPETUAL if contract else InstrumentKind.SPOT
        # COIN-M (dapi): contracts of ``contractSize`` USD, margined and settled in the base
        # coin (``marginAsset`` BTC for BTCUSD_PERP). Loaded as a linear USD perpetual, a
        # contract was worth one BTC: notional, PnL, fees and margin 40,000x off at 40,000.
        coin_margined = bool(contract) and "contractSize" in entry
        coin_margined &= entry.get("marginAsset", "") == entry.get("baseAsset", "")
        contract_size = "1"
        if coin_margined:
            kind = InstrumentKind.INVERSE_PERPETUAL
            contract_size = _decimal_text(str(entry["contractSize"]))
        try:
            # the venue's other filters (price range, market lot size, percent-price band,
            # order cap), read as live trading reads them: what the paper venue enforces
            limits = binance_filters(entry.get("filters"), derivative=bool(contract))
            result[entry["symbol"]] = Instrument(
                symbol=entry["symbol"],
                venue=venue,
                kind=kind,
                contract_size=contract_size,
                base=entry.get("baseAsset", ""),
                quote=entry.get("quoteAsset", ""),
                tick_size=_decimal_text(str(price["tickSize"])),
                lot_size=_decimal_text(str(lot["stepSize"])),
                min_qty=_decimal_text(str(lot.get("minQty", "0"))),
                max_qty=_decimal_text(str(lot.get("maxQty", "0"))),
                min_notional=_decimal_text(str(min_notional)),
                **msgspec.structs.asdict(limits),
                **msgspec.structs.asdict(margin_fields(entry, venue)),  # liquidationFee
            )
        except (ValueError, KeyError, TypeError):
            continue  # e.g. a zero tickSize on a halted symbol
    return result


def load_exchange_info(path: str | Path, venue: str | None = None) -> dict[str, Instrument]:
    """Read a Binance ``exchangeInfo`` JSON (optionally gzipped) into instruments by symbol."""
    path = Path(path)
    info = _read_json(path)
    if not isinstance(info, dict) or "symbols" not in info:
        raise DataFileError(f"{path}: not a Binance exchangeInfo body")
    if venue is None:
        name = path.name.lower()
        venue = (
            "BINANCE_USDM" if "usdm" in name else "BINANCE_COINM" if "coinm" in name else "BINANCE"
        )
    return instruments_from_exchange_info(info, venue)


def load_instrument_file(path: str | Path) -> Instrument:
    """One instrument from a JSON file: a serialized ``Instrument`` or a 1-symbol exchangeInfo."""
    path = Path(path)
    try:
        data = _read_json(path)
    except DataFileError:
        _refuse_metadata(path)  # an OKX or Deribit list is a cryptofeed log, not JSON
        raise
    if isinstance(data, dict) and "symbols" in data:
        found = instruments_from_exchange_info(data)
        if len(found) != 1:
            _refuse_metadata(path)
            raise DataFileError(f"{path}: expected one symbol, found {len(found)}")
        return next(iter(found.values()))
    try:
        return msgspec.convert(data, Instrument)
    except (msgspec.ValidationError, ValueError) as exc:
        _refuse_metadata(path)
        raise DataFileError(f"{path}: not an Instrument: {exc}") from exc


def _refuse_metadata(path: Path) -> None:
    """A whole venue's markets (an exchangeInfo, Hyperliquid meta, an OKX instrument list):
    the run needs one instrument per file, which the CLI writes from it."""
    venue = _venue_metadata(path)
    if venue:
        raise DataFileError(
            f"{path}: {venue} instrument metadata, not one instrument: write the ones you "
            f"trade with `sapphire data instruments {path} --symbol SYMBOL --out DIR`"
        ) from None


def _venue_metadata(path: Path) -> str:
    """The venue of a metadata file of many instruments, "" for any other file."""
    try:
        return read_metadata(path).venue
    except DataFileError:
        return ""


def instrument_json(instrument: Instrument) -> bytes:
    return msgspec.json.format(msgspec.json.encode(instrument), indent=2) + b"\n"


def _short(value: float) -> str:
    # 15 significant digits (what a double always holds) drop float noise such as
    # 0.09946999000000001 from converted files; 12 cut real digits (a volume of
    # 289169.9847625 gave a 1e-6 lot, and the grid check refused 4 of the BTC-PERP bars)
    text = format(value, ".15g")
    return text if "e" not in text else format(value, ".15f")


def infer_instrument(symbol: str, prices: Iterable[float], qtys: Iterable[float]) -> Instrument:
    """An instrument whose grid represents every value seen (recordings without filters)."""
    tick = infer_increment([_short(p) for p in prices if p == p and abs(p) != float("inf")])
    lot = infer_increment([_short(q) for q in qtys if q == q and abs(q) != float("inf")])
    return Instrument(symbol=symbol, venue="UNKNOWN", tick_size=tick, lot_size=lot)


def infer_frame_instrument(frame: pl.DataFrame, symbol: str = "") -> Instrument:
    kind = kind_of(frame)
    price_cols, qty_cols = TICK_COLUMNS[kind]
    sample = frame.head(20_000)
    prices = [v for c in price_cols for v in sample[c].drop_nulls().to_list()]
    qtys = [v for c in qty_cols for v in sample[c].drop_nulls().to_list()]
    if not symbol:
        symbols = sample["symbol"].drop_nulls()
        symbol = str(symbols[0]) if len(symbols) else "UNKNOWN"
    return infer_instrument(symbol, prices, qtys)


def with_ticks(frame: pl.DataFrame, instrument: Instrument) -> pl.DataFrame:
    """Add Int64 ``*_ticks``/``*_lots`` columns (nearest grid point) for a canonical frame.

    depth/trades: ``price_ticks``, ``qty_lots``; bbo: ``bid_ticks``, ``ask_ticks``,
    ``bid_lots``, ``ask_lots``; bars: ``open_ticks`` .. ``close_ticks``, ``volume_lots``.
    Non-finite values become null. Use :mod:`sapphire.data.validation` streams when rows
    must be checked; this helper is the fast, vectorized research path.
    """
    kind = kind_of(frame)
    price_cols, qty_cols = TICK_COLUMNS[kind]
    tick, lot = instrument.tick_float, instrument.lot_float

    def units(col: str, unit: float, name: str) -> pl.Expr:
        value = pl.col(col) / unit
        return (
            pl.when(value.is_finite()).then(value.round(0)).otherwise(None).cast(pl.Int64)
        ).alias(name)

    special = {
        "bid_price": "bid_ticks",
        "ask_price": "ask_ticks",
        "bid_qty": "bid_lots",
        "ask_qty": "ask_lots",
    }
    exprs = [units(c, tick, special.get(c, f"{c}_ticks")) for c in price_cols]
    exprs += [units(c, lot, special.get(c, f"{c}_lots")) for c in qty_cols]
    return frame.with_columns(exprs)
