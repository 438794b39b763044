"""Instruments from every venue's metadata file (issue #16 item 2), checked against the files
and against the venues' own recorded market data."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import ccxt
import pytest

from sapphire.adapters.venue_instruments import VenueInstruments, load_venue_instruments
from sapphire.cli import main
from sapphire.data.cryptofeed_bybit import snap_size
from sapphire.data.instruments import load_instrument_file
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.validation import DataFileError
from sapphire.data.venue_instruments import instrument_from_market, read_metadata
from sapphire.exchange.ccxt_convert import instrument_from_market as live_instrument
from sapphire.model.instrument import Instrument, InstrumentKind, OptionType

K = InstrumentKind
FILES = {
    "binance": "cryptofeed_binance_spot_exchangeInfo_2021-10-12.json.gz",
    "usdm": "cryptofeed_binance_usdm_exchangeInfo_2021-07-22.json.gz",
    "coinm": "cryptofeed_binance_coinm_exchangeInfo_2021-07-22.json.gz",
    "bybit": "cryptofeed_bybit_v2_public_symbols_2021-04-17.json.gz",
    "okx": "cryptofeed_okx_instruments_rest_2022-05-13.log.gz",
    "bitmex": "cryptofeed_bitmex_instrument_active_2021-07-22.json.gz",
    "deribit": "cryptofeed_deribit_get_instruments_rest_2021-07-22.log.gz",
    "kraken": "cryptofeed_kraken-futures_instruments_2021-07-22.json.gz",
    "hyperliquid": "hyperliquid-sdk_hyperliquid_meta_2023-07-17.json",
}

# Instruments per kind, from the data README and the files (see comments).
KINDS: dict[str, dict[InstrumentKind, int]] = {
    "binance": {K.SPOT: 1_695},
    "usdm": {K.PERPETUAL: 120, K.FUTURE: 2},  # 122 symbols, two quarterlies
    "coinm": {K.INVERSE_PERPETUAL: 18, K.INVERSE_FUTURE: 18},
    "bybit": {K.INVERSE_PERPETUAL: 4, K.INVERSE_FUTURE: 2, K.PERPETUAL: 9},
    # SPOT 513, SWAP 40 inverse + 126 linear, FUTURES 52 + 52, OPTION 346 + 350
    "okx": {
        K.SPOT: 513,
        K.INVERSE_PERPETUAL: 40,
        K.PERPETUAL: 126,
        K.INVERSE_FUTURE: 52,
        K.FUTURE: 52,
        K.OPTION: 696,
    },
    # 5 isInverse (2 perpetual, 3 dated); 21 perpetual quanto; 8 dated linear/quanto
    "bitmex": {K.INVERSE_PERPETUAL: 2, K.INVERSE_FUTURE: 3, K.PERPETUAL: 21, K.FUTURE: 8},
    # BTC 390 options + 8 futures, ETH 426, SOL 177, USDC 16 linear perpetuals
    "deribit": {K.OPTION: 980, K.INVERSE_FUTURE: 18, K.INVERSE_PERPETUAL: 3, K.PERPETUAL: 16},
    "kraken": {K.INVERSE_PERPETUAL: 5, K.INVERSE_FUTURE: 12},  # + 10 index entries skipped
    "hyperliquid": {K.PERPETUAL: 28},
}


@pytest.fixture(scope="module")
def venues(shared_data: Path) -> dict[str, VenueInstruments]:
    return {k: load_venue_instruments(shared_data / "exchange" / f) for k, f in FILES.items()}


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1e9)


def _grid(i: Instrument) -> tuple[str, str, str, str]:
    return (i.tick_size, i.lot_size, i.size_increment, i.contract_size)


@pytest.mark.parametrize("venue", sorted(KINDS))
def test_counts_per_kind(venues: dict[str, VenueInstruments], venue: str) -> None:
    loaded = venues[venue]
    counts: dict[InstrumentKind, int] = {}
    for inst in loaded.instruments.values():
        counts[inst.kind] = counts.get(inst.kind, 0) + 1
    assert counts == KINDS[venue]
    assert loaded.skipped == ({"not_tradeable": 10} if venue == "kraken" else {})
    # one unified symbol per instrument: ccxt's normal form is unambiguous
    assert len(loaded.by_unified()) == len(loaded.instruments)


def test_binance(venues: dict[str, VenueInstruments]) -> None:
    spot = venues["binance"].instruments
    # the example: ETHUSDT orders step by 0.0001, its book sizes by 0.00000001
    assert _grid(spot["ETHUSDT"]) == ("0.01", "0.0001", "0.00000001", "1")
    btc = spot["BTCUSDT"]
    assert (btc.unified, btc.min_notional, btc.lots_per_step) == ("BTC/USDT", "10", 1000)
    usdm = venues["usdm"].instruments["BTCUSDT"]
    assert (usdm.unified, usdm.settle_asset, _grid(usdm)) == (
        "BTC/USDT:USDT",
        "USDT",
        ("0.01", "0.001", "", "1"),
    )
    coinm = venues["coinm"].instruments
    assert (coinm["BTCUSD_PERP"].unified, coinm["BTCUSD_PERP"].contract_size) == (
        "BTC/USD:BTC",
        "100",
    )
    quarter = coinm["BTCUSD_210924"]
    assert (quarter.kind, quarter.unified, quarter.settle_asset) == (
        K.INVERSE_FUTURE,
        "BTC/USD:BTC-210924",
        "BTC",
    )
    assert quarter.expiry_ns == _ns("2021-09-24 08:00")
    assert coinm["ETHUSD_PERP"].contract_size == "10"


def test_a_coin_margined_exchange_info_loads_inverse(shared_data: Path, tmp_path: Path) -> None:
    # Binance's own COIN-M exchangeInfo (the instrument_files path, not ccxt's): BTCUSD_PERP
    # was a linear USD perpetual worth one BTC a contract, 10 contracts at 40,000 a 400,000
    # USD notional instead of 0.025 BTC
    from sapphire.data.instruments import load_exchange_info, load_instrument_file

    path = shared_data / "exchange" / FILES["coinm"]
    perp = load_exchange_info(path)["BTCUSD_PERP"]
    assert (perp.kind, perp.contract_size, perp.settle_asset) == (K.INVERSE_PERPETUAL, "100", "BTC")
    ten = perp.qty_to_lots("10")
    assert perp.notional_quote(perp.price_to_ticks("40000"), ten) == Decimal("0.025")
    body = json.loads(gzip.decompress(path.read_bytes()))
    body["symbols"] = [s for s in body["symbols"] if s["symbol"] == "BTCUSD_PERP"]
    one = tmp_path / "btcusd_perp.json"
    one.write_text(json.dumps(body))
    assert load_instrument_file(one).kind is K.INVERSE_PERPETUAL
    # USD-M keeps its linear perpetuals (no contractSize, margined in USDT)
    usdm = load_exchange_info(shared_data / "exchange" / FILES["usdm"])["BTCUSDT"]
    assert (usdm.kind, usdm.settle_asset) == (K.PERPETUAL, "USDT")


def test_bybit(venues: dict[str, VenueInstruments]) -> None:
    bybit = venues["bybit"].instruments
    assert (bybit["BTCUSD"].kind, bybit["BTCUSD"].unified, _grid(bybit["BTCUSD"])) == (
        K.INVERSE_PERPETUAL,
        "BTC/USD:BTC",
        ("0.5", "1", "", "1"),
    )
    assert (bybit["BTCUSD"].maker_fee_bps, bybit["BTCUSD"].taker_fee_bps) == ("-2.5", "7.5")
    assert (bybit["BTCUSDT"].unified, _grid(bybit["BTCUSDT"])) == (
        "BTC/USDT:USDT",
        ("0.5", "0.001", "", "1"),
    )
    june = bybit["BTCUSDM21"]
    assert (june.kind, june.unified, june.expiry_ns) == (
        K.INVERSE_FUTURE,
        "BTC/USD:BTC-210625",
        _ns("2021-06-25 08:00"),
    )


def test_okx(venues: dict[str, VenueInstruments]) -> None:
    okx = venues["okx"].instruments
    assert (okx["BTC-USDT"].unified, _grid(okx["BTC-USDT"])) == (
        "BTC/USDT",
        ("0.1", "0.00000001", "", "1"),
    )
    assert (okx["BTC-USDT-SWAP"].unified, okx["BTC-USDT-SWAP"].contract_size) == (
        "BTC/USDT:USDT",
        "0.01",
    )
    assert okx["BTC-USD-SWAP"].contract_size == "100" and okx["BTC-USD-SWAP"].inverse
    assert okx["UNI-USD-SWAP"].contract_size == "10"
    assert okx["BTC-USD-220527"].unified == "BTC/USD:BTC-220527"
    call = okx["BTC-USD-220514-22000-C"]
    assert (call.kind, call.strike, call.option_type, call.settle_asset) == (
        K.OPTION,
        "22000",
        OptionType.CALL,
        "BTC",
    )
    # ctVal 1 x ctMult 0.1: a BTC option contract is 0.1 BTC
    assert (call.contract_size, call.tick_size, call.expiry_ns) == (
        "0.1",
        "0.0005",
        _ns("2022-05-14 08:00"),
    )


def test_bitmex(venues: dict[str, VenueInstruments]) -> None:
    bitmex = venues["bitmex"].instruments
    xbt = bitmex["XBTUSD"]
    assert (xbt.kind, xbt.unified, _grid(xbt), xbt.settle_asset) == (
        K.INVERSE_PERPETUAL,
        "BTC/USD:BTC",
        ("0.5", "100", "", "1"),
        "BTC",
    )
    # 100 contracts at 40,000 USD are worth 100 USD = 0.0025 BTC
    assert xbt.notional_quote(xbt.price_to_ticks("40000"), xbt.qty_to_lots("100")) == Decimal(
        "0.0025"
    )
    # quanto: 100 satoshi per USD of ETH price per contract, settled in BTC
    eth = bitmex["ETHUSD"]
    assert (eth.kind, eth.settle_asset, eth.contract_size) == (K.PERPETUAL, "BTC", "0.000001")
    assert eth.notional_quote(eth.price_to_ticks("2000"), eth.qty_to_lots("10")) == Decimal("0.02")
    assert bitmex["XBTU21"].unified == "BTC/USD:BTC-210924"


def test_deribit_options_are_priced_for_marking(venues: dict[str, VenueInstruments]) -> None:
    deribit = venues["deribit"].instruments
    perp = deribit["BTC-PERPETUAL"]
    # amounts are USD (multiples of the 10-USD contract), so one unit is 1 USD
    assert (perp.unified, _grid(perp)) == ("BTC/USD:BTC", ("0.5", "10", "", "1"))
    call = deribit["ETH-30JUL21-2800-C"]
    assert (call.kind, call.option_type, call.strike, call.unified) == (
        K.OPTION,
        OptionType.CALL,
        "2800",
        "ETH/USD:ETH-210730-2800-C",
    )
    assert call.expiry_ns == _ns("2021-07-30 08:00")
    # the recorded ticker's mark (0.001972 ETH per ETH, a model price off the 0.0005 tick
    # grid) marks 3 contracts at 0.005916 ETH
    mark = Decimal("0.001972") / call.tick
    assert call.position_value(mark, call.qty_to_lots("3")) == Decimal("0.005916")
    assert call.settle_asset == "ETH"
    sol = deribit["SOL-10JUN22-28-P"]  # 2022 payload with settlement_currency
    assert (sol.settle_asset, sol.lot_size) == ("SOL", "1")
    assert deribit["UNI_USDC-PERPETUAL"].unified == "UNI/USDC:USDC"
    # linear ones are sized in the coin (1 SOL is 1 unit): ccxt's contractSize is the
    # minimum trade (0.1 SOL), which made 1 SOL at 50 USDC a 5 USDC notional
    sol_perp = deribit["SOL_USDC-PERPETUAL"]
    one_sol = sol_perp.qty_to_lots("1")
    assert sol_perp.notional_quote(sol_perp.price_to_ticks("50"), one_sol) == Decimal(50)
    btc_usdc = deribit["BTC_USDC-PERPETUAL"]
    tenth = btc_usdc.qty_to_lots("0.1")
    assert btc_usdc.notional_quote(btc_usdc.price_to_ticks("30000"), tenth) == 3000


def test_kraken_futures_and_hyperliquid(venues: dict[str, VenueInstruments]) -> None:
    kraken = venues["kraken"].instruments
    assert (kraken["PI_XBTUSD"].unified, _grid(kraken["PI_XBTUSD"])) == (
        "BTC/USD:BTC",
        ("0.5", "1", "", "1"),
    )
    assert kraken["FI_XBTUSD_210924"].expiry_ns == _ns("2021-09-24 15:00")
    hl = venues["hyperliquid"].instruments
    assert (hl["BTC"].unified, hl["BTC"].lot_size) == ("BTC/USDC:USDC", "0.00001")
    assert (hl["DYDX"].lot_size, hl["kPEPE"].lot_size) == ("0.1", "1")
    # the venue's price grid, 6 decimals less szDecimals (ccxt's, read off a mark price the
    # meta file lacks, gave kPEPE 0.00001), with at most 5 significant figures
    ticks = [hl[s].tick_size for s in ("BTC", "DYDX", "kPEPE")]
    assert ticks == ["0.1", "0.00001", "0.000001"] and hl["kPEPE"].price_sig_figs == 5


# The venues' recorded market data, replayed on the loaded instruments: every symbol is known
# and every price and size is on the instrument's grids, so replay and metadata agree.
AGREE = [
    ("bitmex", "book/cryptofeed_bitmex_ws_2021-07-22.log.gz", 3_060),
    ("bybit", "book/cryptofeed_bybit_inverse_ws_2021-04-17.log.gz", 2_704),
    # linear sizes are float32 sums: 3,486 of them are snapped onto the size grid
    ("bybit", "book/cryptofeed_bybit_linear_ws_2021-04-17.log.gz", 20_051),
    ("deribit", "book/cryptofeed_deribit_options_ws_2021-07-22.log.gz", 126),
    ("deribit", "book/nautilus_tardis_deribit_incremental_book_L2_BTC-PERPETUAL_2020-04-01.csv", 1),
    # 10 snapshots + 7,014 deltas + 3 trades (the trade_snapshot history is not replayed)
    ("kraken", "book/cryptofeed_kraken-futures_inverse_ws_2021-07-22.log.gz", 7_027),
    ("okx", "book/cryptofeed_okx_ws_2022-05-13.log.gz", 7_193),
    ("hyperliquid", "book/hyperliquid-sdk_hyperliquid_DYDX_l2Book_rest_2023-07-17.json", 1),
    # every one of the 24 candles was off_grid on ccxt's kPEPE tick
    (
        "hyperliquid",
        "ohlcv/hyperliquid-sdk_hyperliquid_kPEPE_1h_candleSnapshot_2023-05-21.json",
        24,
    ),
]


@pytest.mark.parametrize(("venue", "rel", "events"), AGREE, ids=[a[1][5:30] for a in AGREE])
def test_recorded_data_is_on_the_metadata_grids(
    shared_data: Path, venues: dict[str, VenueInstruments], venue: str, rel: str, events: int
) -> None:
    stream = stream_events(shared_data / rel, venues[venue].instruments)
    assert sum(1 for _ in stream) == events
    assert stream.stats.counts == {} and stream.stats.balanced()
    assert stream.stats.snapped == (3_486 if "bybit_linear" in rel else 0)


def test_only_float_noise_is_snapped_onto_the_size_grid() -> None:
    assert snap_size(12.849999, 0.01) == 12.85
    assert snap_size(11629.399, 0.1) == 11629.4
    assert snap_size(7667.0005, 1.0) == 7667.0
    assert snap_size(12.85, 0.01) is None  # on the grid already
    assert snap_size(12.845, 0.01) is None  # half a step off: a real off-grid size
    assert snap_size(12.8499, 0.01) is None  # 1e-4 off: far more than float32 noise


def test_bad_metadata_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    path.write_text('{"something": []}')
    with pytest.raises(DataFileError, match=r"meta\.json: not a venue instrument metadata"):
        read_metadata(path)
    path.write_text("{broken")
    with pytest.raises(DataFileError, match=r"meta\.json: cannot read JSON"):
        read_metadata(path)


def test_live_converter_agrees_on_the_order_grids(shared_data: Path) -> None:
    """The live path (``ccxt_convert.instrument_from_market`` on ``load_markets``) and these
    loaders read the same ccxt markets: every Binance spot and USDT-M symbol is the same
    Instrument, size grid, kind, settlement and unified symbol included."""
    exchange = ccxt.binance()
    exchange.options["crossMarginPairsData"] = []
    exchange.options["isolatedMarginPairsData"] = []
    compared = 0
    for name in (FILES["binance"], FILES["usdm"]):
        meta = read_metadata(shared_data / "exchange" / name)
        for raw in meta.markets:
            market = exchange.parse_market(raw)
            ours = instrument_from_market(market, meta.venue)
            assert ours is not None and live_instrument(market, meta.venue) == ours
            compared += 1
    assert compared == 1_695 + 122


def test_bad_payload_is_counted_not_raised(tmp_path: Path) -> None:
    good = {"name": "ETH", "szDecimals": 4, "maxLeverage": 50}
    path = tmp_path / "meta.json"
    path.write_text(json.dumps({"universe": [{"name": "BTC", "szDecimals": "x"}, good]}))
    loaded = load_venue_instruments(path)
    assert (list(loaded.instruments), loaded.skipped) == (["ETH"], {"invalid": 1})


def test_metadata_files_are_detected_and_inspected(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sapphire data inspect`` knows every metadata file and prints its kinds' counts."""
    formats = {k: detect(shared_data / "exchange" / f).name for k, f in FILES.items()}
    assert formats == {
        "binance": "binance_exchange_info",
        "usdm": "binance_exchange_info",
        "coinm": "binance_exchange_info",
        "bybit": "bybit_v2_symbols",
        "okx": "okx_instruments",
        "bitmex": "bitmex_instruments",
        "deribit": "deribit_instruments",
        "kraken": "kraken_futures_instruments",
        "hyperliquid": "hyperliquid_meta",
    }
    # a metadata file is not market data: loading it as such says so in one line
    with pytest.raises(DataFileError, match=r"OKX instrument metadata .* not market data"):
        load_frames(shared_data / "exchange" / FILES["okx"])
    assert main(["data", "inspect", str(shared_data / "exchange" / FILES["kraken"])]) == 0
    out = capsys.readouterr().out
    assert "format:  kraken_futures_instruments" in out
    assert "  inverse_future: 12\n  inverse_perpetual: 5\n" in out
    assert "skipped not_tradeable: 10" in out
    # a market-data log named like no metadata file is still market data
    assert detect(shared_data / "book" / "cryptofeed_okx_ws_2022-05-13.log.gz").name != (
        "okx_instruments"
    )


def test_a_zero_contract_size_is_refused_not_read_as_one() -> None:
    # `contractSize or 1` turned a listing's broken 0 into a 1-unit contract
    from sapphire.data.venue_instruments import instrument_from_market
    from sapphire.model.instrument import InstrumentError

    market = {
        "id": "FI_XBTUSD_210730",
        "base": "BTC",
        "quote": "USD",
        "settle": "BTC",
        "future": True,
        "inverse": True,
        "precision": {"price": 0.5, "amount": 1},
        "contractSize": 1,
    }
    assert instrument_from_market(market, "KRAKEN_FUTURES") is not None
    with pytest.raises(InstrumentError):
        instrument_from_market({**market, "contractSize": 0}, "KRAKEN_FUTURES")


@pytest.mark.parametrize(
    "name",
    [
        "exchange/cryptofeed_binance_spot_exchangeInfo_2021-10-12.json.gz",  # 1,695 symbols
        "exchange/cryptofeed_okx_instruments_rest_2022-05-13.log.gz",  # a log, not JSON
    ],
)
def test_a_venue_s_metadata_as_an_instrument_file_points_to_the_command_that_reads_it(
    shared_data: Path, name: str
) -> None:
    with pytest.raises(DataFileError, match=r"instrument metadata, not one instrument: .*"):
        load_instrument_file(shared_data / name)
