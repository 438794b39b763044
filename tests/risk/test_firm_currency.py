"""The firm's currency named by the config (``currency``) instead of chosen by the rule on the
instruments (``reporting_asset``). The reviewer's case: a BTC-settled inverse perpetual with
``capital_quote: "1"`` and ``max_notional_quote: "0.5"`` written in BTC, plus one USDC-settled
perpetual that trades nothing. The rule reads the capital as 1 USDC (1/60,000 BTC at the
mark), so every order of two contracts or more is over its cap; ``currency: BTC`` reads it
as 1 BTC, and the 0.5 BTC notional limit is what binds."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import msgspec
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sapphire.model import Instrument, OrderIntent, OrderType, RejectReason, Side
from sapphire.model.instrument import InstrumentKind
from sapphire.model.orders import OrderFilled
from sapphire.risk.engine import RiskEngine
from sapphire.risk.limits import AgentLimits, RiskLimits
from sapphire.risk.portfolio import Portfolio, currency_choices, reporting_asset
from tests.conftest import REPO_ROOT

INV = msgspec.json.decode(
    (REPO_ROOT / "configs/instruments/bybit-inverse-BTCUSD.json").read_bytes(), type=Instrument
)
# a Hyperliquid-like USDC-margined perpetual: no price of BTC in it
HL = Instrument(
    symbol="ETH",
    kind=InstrumentKind.PERPETUAL,
    base="ETH",
    quote="USDC",
    tick_size="0.1",
    lot_size="0.0001",
)
BOTH = {INV.symbol: INV, HL.symbol: HL}
LIMITS = RiskLimits(
    price_band_bps=100,
    default_agent=AgentLimits(
        max_position_lots=10**9,
        max_order_lots=10**9,
        max_notional_quote="0.5",  # read in the settlement asset: 0.5 BTC on BTCUSD
        max_orders_per_second=10**6,
    ),
)


def engine(currency: str) -> RiskEngine:
    # capital_quote "1", all of it the one agent's
    return RiskEngine(LIMITS, BOTH, Portfolio(BOTH, currency), {"a": Decimal(1)})


def buy(lots: int, limit: int, seq: int = 1) -> OrderIntent:
    return OrderIntent(
        ts_event_ns=seq,
        agent_id="a",
        seq=seq,
        symbol=INV.symbol,
        side=Side.BUY,
        qty_lots=lots,
        limit_ticks=limit,
        order_type=OrderType.LIMIT,
    )


def test_the_rule_reads_the_capital_in_usdc_and_currency_btc_in_btc() -> None:
    assert reporting_asset(BOTH) == "USDC"  # today's rule: the settled quote
    assert reporting_asset(BOTH, "BTC") == "BTC"
    by_rule, named = engine(""), engine("BTC")
    for eng in (by_rule, named):
        eng.update_mark(INV.symbol, 120_000.0)  # BTC at 60,000 USD
    # 1,000 USD of BTCUSD: 0.0167 BTC, over 1 USDC (1/60,000 BTC), within 1 BTC and 0.5 BTC
    refused = by_rule.check(buy(1_000, 120_000), 0, 1)
    assert refused.reason is RejectReason.RISK_MAX_NOTIONAL, refused
    assert "projected notional" in refused.detail
    assert named.check(buy(1_000, 120_000), 0, 1).accepted
    # 0.5 BTC is 30,000 contracts at 60,000: the BTC limit binds at it, not at the capital
    assert named.check(buy(29_000, 120_000, seq=2), 0, 2).accepted
    over = named.check(buy(31_000, 120_000, seq=3), 0, 3)
    assert over.reason is RejectReason.RISK_MAX_NOTIONAL, over


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200_000), st.integers(80_000, 160_000))
def test_in_btc_the_cap_is_the_half_btc_limit(lots: int, mark_ticks: int) -> None:
    """Named BTC: accepted exactly when the contracts' BTC value is within 0.5 BTC (the
    1 BTC capital share is looser). By the rule (USDC): 1 USDC of capital is one 1-USD
    contract, so two or more are always over it, whatever the price."""
    value = Fraction(lots) / (Fraction(mark_ticks) * Fraction(INV.tick_size))
    assume(abs(value - Fraction(1, 2)) > Fraction(1, 10**9))  # not on the 28-digit edge
    named, by_rule = engine("BTC"), engine("")
    named.update_mark(INV.symbol, float(mark_ticks))
    by_rule.update_mark(INV.symbol, float(mark_ticks))
    decision = named.check(buy(lots, mark_ticks), 0, 1)
    assert decision.accepted == (value <= Fraction(1, 2)), (decision, value)
    if not decision.accepted:
        assert decision.reason is RejectReason.RISK_MAX_NOTIONAL
    assert by_rule.check(buy(lots, mark_ticks), 0, 1).reason is RejectReason.RISK_MAX_NOTIONAL


def test_the_firm_pnl_is_read_in_the_named_currency() -> None:
    """The firm's figure (and so the firm loss limit) is in the named currency: BTC PnL
    stays exact BTC, where the rule's USDC firm converts it at the BTC price."""
    fill = OrderFilled(
        ts_event_ns=1,
        client_order_id="c1",
        agent_id="a",
        symbol=INV.symbol,
        side=Side.BUY,
        price_ticks=120_000,
        qty_lots=60_000,  # 1 BTC of contracts at 60,000
        fee_quote=Decimal(0),
        is_maker=False,
        fill_id="f1",
    )
    marks = {INV.symbol: 132_000.0}  # 66,000: +60,000 x (1/60,000 - 1/66,000) BTC
    pnl = Decimal(60_000) * (Decimal(1) / 60_000 - Decimal(1) / 66_000)
    named, by_rule = Portfolio(BOTH, "BTC"), Portfolio(BOTH)
    for pf in (named, by_rule):
        pf.apply_fill(fill)
    firm = named.firm_pnl(marks)
    assert firm.asset == "BTC" and not firm.rates
    assert abs(firm.total - pnl) < Decimal("1e-20")
    usdc = by_rule.firm_pnl(marks)
    assert usdc.asset == "USDC" and usdc.rates == {"BTC": Decimal(66_000)}
    assert abs(usdc.total - pnl * 66_000) < Decimal("1e-15")


def test_the_choices_are_the_settled_and_quoted_assets_and_the_dollars() -> None:
    assert currency_choices(BOTH) == ["BTC", "USD", "USDC", "USDT"]
    ethbtc = Instrument(symbol="ETHBTC", base="ETH", quote="BTC", tick_size="1", lot_size="1")
    assert currency_choices({"ETHBTC": ethbtc}) == ["BTC"]  # ETH is what it trades


_ASSETS = st.sampled_from(["BTC", "ETH", "USD", "USDT", "USDC", "EUR"])


@st.composite
def _instruments(draw: st.DrawFn) -> dict[str, Instrument]:
    out = {}
    for n in range(draw(st.integers(1, 4))):
        base, quote = draw(_ASSETS), draw(_ASSETS)
        assume(base != quote)
        inverse = draw(st.booleans())
        inst = Instrument(
            symbol=f"S{n}",
            kind=InstrumentKind.INVERSE_PERPETUAL if inverse else InstrumentKind.PERPETUAL,
            base=base,
            quote=quote,
            tick_size="0.5",
            lot_size="1",
        )
        out[inst.symbol] = inst
    return out


@settings(max_examples=200, deadline=None)
@given(_instruments())
def test_the_rules_answer_is_always_a_currency_the_config_may_name(
    instruments: dict[str, Instrument],
) -> None:
    """Naming the currency the rule would choose changes nothing: every config that ran
    before the field can name its own currency, and keep it when instruments are added."""
    rule = reporting_asset(instruments)
    assert rule in currency_choices(instruments)
    assert Portfolio(instruments, rule).reporting_asset == Portfolio(instruments).reporting_asset
