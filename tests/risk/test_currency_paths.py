"""Which settlement assets a firm's currency can value (``unvalued``), by the valuation's own
rule (``conversion_rate``: one spot, perpetual or future whose base and quote are the two
assets; an option's premium is never a price), and the automatic currency taking one that
can. The tester's instruments, read from the venues' shared metadata files: two Deribit
options settled in BTC and in ETH, quoted in USD, and Kraken Futures' inverse PI_ETHUSD
beside FI_XBTUSD_210730."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.adapters.venue_instruments import load_venue_instruments
from sapphire.kernel.assembly import data_path
from sapphire.model.instrument import Instrument, InstrumentKind, OptionType
from sapphire.risk.portfolio import (
    conversion_rate,
    currency_choices,
    reporting_asset,
    same_money,
    unvalued,
)

META = {
    "deribit": "shared:exchange/cryptofeed_deribit_get_instruments_rest_2021-07-22.log.gz",
    "kraken": "shared:exchange/cryptofeed_kraken-futures_instruments_2021-07-22.json.gz",
    "binance": "shared:exchange/cryptofeed_binance_spot_exchangeInfo_2021-10-12.json.gz",
}
BTC_PUT = ("deribit", "BTC-24SEP21-34000-P")
ETH_CALL = ("deribit", "ETH-30JUL21-2800-C")
BTC_PERP = ("deribit", "BTC-PERPETUAL")
PI_ETH = ("kraken", "PI_ETHUSD")
FI_XBT = ("kraken", "FI_XBTUSD_210730")

needs_meta = pytest.mark.skipif(
    not all(data_path(p).exists() for p in META.values()),
    reason="shared venue metadata not present",
)


@cache
def _venue(name: str) -> dict[str, Instrument]:
    return load_venue_instruments(data_path(META[name])).instruments


def _of(*keys: tuple[str, str]) -> dict[str, Instrument]:
    return {symbol: _venue(venue)[symbol] for venue, symbol in keys}


@needs_meta
def test_options_settled_in_btc_and_eth_have_no_currency_that_values_both() -> None:
    run = _of(BTC_PUT, ETH_CALL)
    assert {i.kind for i in run.values()} == {InstrumentKind.OPTION}
    assert [i.settle_asset for i in run.values()] == ["BTC", "ETH"]
    # quoted in USD, but a premium is no price of BTC: nothing converts either coin
    assert unvalued("USD", run) == ["BTC", "ETH"]
    assert unvalued("BTC", run) == ["ETH"]
    assert unvalued("ETH", run) == ["BTC"]
    assert all(unvalued(c, run) for c in currency_choices(run))
    assert reporting_asset(run) == "USD"  # the rule's pick stands: the start refuses it


@needs_meta
def test_options_settled_in_one_coin_are_a_firm_in_that_coin() -> None:
    run = _of(BTC_PUT)
    assert reporting_asset(run) == "BTC" and unvalued("BTC", run) == []
    assert unvalued("USD", run) == ["BTC"]
    # a BTC/USD perpetual beside it prices BTC in USD (and USDT, read at par)
    run = _of(BTC_PUT, BTC_PERP)
    assert reporting_asset(run) == "BTC"
    assert unvalued("USD", run) == [] and unvalued("USDT", run) == []


@needs_meta
def test_kraken_inverse_contracts_value_their_coins_in_usd_never_in_btc() -> None:
    run = _of(PI_ETH, FI_XBT)
    assert unvalued("BTC", run) == ["ETH"]  # no ETH/BTC instrument
    assert unvalued("ETH", run) == ["BTC"]
    assert unvalued("USD", run) == []
    assert reporting_asset(run) == "USD"
    assert reporting_asset(run, "BTC") == "BTC"  # a named one is the config's: checked apart


@needs_meta
def test_the_rule_passes_over_a_pick_that_cannot_value_an_asset() -> None:
    """Binance spot BTCUSDT (settles USDT) and ETHBTC (settles BTC) beside a Deribit ETH
    option: the rule's pick, USDT (a dollar settled and quoted), has no price of ETH; BTC
    values both, through BTCUSDT (1 / its price) and ETHBTC."""
    binance = _venue("binance")
    run = {"BTCUSDT": binance["BTCUSDT"], "ETHBTC": binance["ETHBTC"], **_of(ETH_CALL)}
    assert unvalued("USDT", run) == ["ETH"]
    assert unvalued("BTC", run) == []
    assert reporting_asset(run) == "BTC"
    marks = {"BTCUSDT": 50_000 / float(binance["BTCUSDT"].tick), "ETHBTC": 600.0}
    rate = conversion_rate("USDT", "BTC", run, marks)
    assert rate is not None and abs(rate * 50_000 - 1) < 1e-12


# -- the same rule as the valuation, for any instruments ------------------------------------
ASSETS = ["BTC", "ETH", "SOL", "USD", "USDT", "USDC"]
KINDS = list(InstrumentKind)


@st.composite
def _instrument(draw: st.DrawFn, n: int) -> Instrument:
    kind = draw(st.sampled_from(KINDS))
    base = draw(st.sampled_from(ASSETS))
    quote = draw(st.sampled_from([a for a in ASSETS if a != base]))
    settle = draw(st.sampled_from(["", base, quote]))
    option = kind is InstrumentKind.OPTION
    return Instrument(
        symbol=f"S{n}",
        kind=kind,
        base=base,
        quote=quote,
        tick_size="0.5",
        lot_size="1",
        settle=settle,
        option_type=OptionType.CALL if option else None,
        expiry_ns=1 if option else 0,
        strike="100" if option else "",
    )


@st.composite
def _run(draw: st.DrawFn) -> dict[str, Instrument]:
    count = draw(st.integers(1, 5))
    return {f"S{n}": draw(_instrument(n)) for n in range(count)}


@settings(max_examples=300, deadline=None)
@given(_run())
def test_an_asset_is_unvalued_exactly_where_no_mark_converts_it(
    run: dict[str, Instrument],
) -> None:
    marks = dict.fromkeys(run, 200.0)  # every instrument marked: only the path is left
    for into in currency_choices(run):
        missing = unvalued(into, run)
        for asset in {i.settle_asset for i in run.values()}:
            rate = conversion_rate(asset, into, run, marks)
            assert (rate is None) == (asset in missing), (asset, into)
            if same_money(asset, into):
                assert rate == 1


@settings(max_examples=300, deadline=None)
@given(_run())
def test_the_chosen_currency_values_everything_whenever_one_can(
    run: dict[str, Instrument],
) -> None:
    chosen = reporting_asset(run)
    valued = [c for c in currency_choices(run) if not unvalued(c, run)]
    assert chosen in currency_choices(run)
    assert (not unvalued(chosen, run)) == bool(valued)
    if len({i.settle_asset for i in run.values()}) == 1:
        # one settlement asset: it is the currency, with nothing to convert
        assert chosen == next(iter(run.values())).settle_asset
