"""One money rule (issue #16): every notional and cash figure of an instrument, in the model,
the research ledger and the risk caps, is contracts x contract_size x price (linear) or
contracts x contract_size / price in coin (inverse), for any grid and contract size."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.backtest.ledger import Ledger
from sapphire.model import Instrument, OrderIntent, OrderType, RejectReason, Side
from sapphire.model.instrument import InstrumentKind
from sapphire.risk.engine import RiskEngine
from sapphire.risk.limits import AgentLimits, RiskLimits
from sapphire.risk.portfolio import Portfolio

LINEAR = (InstrumentKind.SPOT, InstrumentKind.PERPETUAL, InstrumentKind.FUTURE)
INVERSE = (InstrumentKind.INVERSE_PERPETUAL, InstrumentKind.INVERSE_FUTURE)


def _step() -> st.SearchStrategy[str]:
    """A venue step: 1, 2, 5 or 25 x 10^k (0.5 USD ticks, 0.001 BTC lots, 100-USD contracts)."""
    return st.builds(
        lambda m, e: format(Decimal(m).scaleb(e).normalize(), "f"),
        st.sampled_from([1, 2, 5, 25]),
        st.integers(-8, 2),
    )


@st.composite
def instruments(draw: st.DrawFn, kinds: tuple[InstrumentKind, ...]) -> Instrument:
    kind = draw(st.sampled_from(kinds))
    lot = draw(_step())
    finer = draw(st.sampled_from([1, 1, 10, 1000]))  # size_increment: lot / finer
    return Instrument(
        symbol="X",
        kind=kind,
        base="BTC",
        quote="USD",
        tick_size=draw(_step()),
        lot_size=lot,
        size_increment="" if finer == 1 else format(Decimal(lot) / finer, "f"),
        contract_size="1" if kind is InstrumentKind.SPOT else draw(_step()),
    )


PRICES = st.integers(1, 10**9)
LOTS = st.integers(1, 10**9)


@given(instruments(LINEAR), PRICES, LOTS)
def test_linear_notional_is_contracts_x_size_x_price(
    inst: Instrument, ticks: int, lots: int
) -> None:
    contracts, price = inst.lots_to_qty(lots), inst.ticks_to_price(ticks)
    expected = contracts * inst.contract * price
    assert inst.notional_quote(ticks, lots) == expected
    assert inst.position_value(ticks, lots) == expected
    assert inst.value_per_ticklot() * ticks * lots == expected
    assert (
        inst.fee_quote(ticks, lots, maker=False) == expected * Decimal(inst.taker_fee_bps) / 10_000
    )


@given(instruments(INVERSE), PRICES, LOTS)
def test_inverse_notional_is_contracts_x_size_over_price_in_coin(
    inst: Instrument, ticks: int, lots: int
) -> None:
    contracts, price = inst.lots_to_qty(lots), inst.ticks_to_price(ticks)
    assert inst.settle_asset == "BTC"
    assert inst.notional_quote(ticks, lots) == contracts * inst.contract / price
    assert inst.pnl_value(ticks, lots) == -(contracts * inst.contract / price)


@settings(max_examples=60)
@given(instruments(LINEAR), st.integers(1, 10**7), st.integers(1, 10**6), st.integers(1, 10**7))
def test_the_research_ledger_books_by_the_rule(
    inst: Instrument, buy: int, lots: int, mark: int
) -> None:
    ledger = Ledger(inst, Decimal(1_000_000))
    ledger.apply(0, Side.BUY, buy, lots, Decimal(0), is_maker=False, ref_ticks=float(buy))
    contracts = inst.lots_to_qty(lots)
    cost = contracts * inst.contract * inst.ticks_to_price(buy)
    assert ledger.cash == Decimal(1_000_000) - cost
    value = contracts * inst.contract * inst.ticks_to_price(mark)
    assert ledger.equity_at(mark) == ledger.cash + value
    assert ledger.equity_at(float(mark)) == ledger.cash + value
    assert abs(ledger.equity_float(mark) - float(ledger.cash + value)) <= 1e-9 * max(
        1.0, abs(float(ledger.cash + value))
    )


@settings(max_examples=60)
@given(instruments(LINEAR), st.integers(10, 10**7), st.integers(1, 10**6))
def test_the_linear_notional_cap_binds_at_the_rule(inst: Instrument, mid: int, lots: int) -> None:
    """A cap of exactly the order's notional passes it; one below rejects it, whatever the
    contract size (an OKX 0.01-BTC contract is not worth a whole BTC)."""
    notional = inst.notional_quote(mid, lots)

    def check(cap: Decimal) -> RejectReason | None:
        limits = RiskLimits(
            price_band_bps=0,
            default_agent=AgentLimits(max_notional_quote=format(cap, "f")),
        )
        eng = RiskEngine(limits, {"X": inst}, Portfolio({"X": inst}))
        eng.update_mark("X", float(mid))
        order = OrderIntent(
            ts_event_ns=1, agent_id="a", seq=1, symbol="X", side=Side.BUY, qty_lots=lots,
            limit_ticks=mid, order_type=OrderType.LIMIT,
        )  # fmt: skip
        return eng.check(order, 0, 1).reason

    assert check(notional) is None
    below = notional - inst.value_per_ticklot()  # one tick x lot less
    assert check(below) is RejectReason.RISK_MAX_NOTIONAL


def test_an_okx_linear_contract_is_a_hundredth_of_a_btc() -> None:
    okx = Instrument(
        symbol="BTC-USDT-SWAP", kind=InstrumentKind.PERPETUAL, base="BTC", quote="USDT",
        tick_size="0.1", lot_size="1", contract_size="0.01",
    )  # fmt: skip
    # 3 contracts of 0.01 BTC at 30,000 USDT: 900 USDT, not 90,000
    assert okx.notional_quote(okx.price_to_ticks("30000"), 3) == Decimal("900")
    ledger = Ledger(okx, Decimal(1_000))
    ledger.apply(
        0, Side.BUY, okx.price_to_ticks("30000"), 3, Decimal(0), is_maker=True, ref_ticks=0
    )
    assert ledger.cash == Decimal(100)
    assert ledger.equity_at(okx.price_to_ticks("31000")) == Decimal(1_030)
