from decimal import Decimal

import pytest

from sapphire.model import Instrument, OrderFilled, OrderIntent, OrderType, RejectReason, Side
from sapphire.risk.engine import NS_PER_SECOND, RiskEngine
from sapphire.risk.limits import AgentLimits, RiskLimits
from sapphire.risk.portfolio import Portfolio

BTC = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001")
MID = 600_000.0  # 60,000.0 USDT


def intent(
    seq: int, side: Side = Side.BUY, qty: int = 10, limit: int | None = 600_000
) -> OrderIntent:
    return OrderIntent(
        ts_event_ns=seq,
        agent_id="a",
        seq=seq,
        symbol="BTCUSDT",
        side=side,
        qty_lots=qty,
        limit_ticks=limit,
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
    )


def engine(**agent_limits: object) -> RiskEngine:
    limits = RiskLimits(price_band_bps=100, default_agent=AgentLimits(**agent_limits))  # type: ignore[arg-type]
    eng = RiskEngine(limits, {"BTCUSDT": BTC}, Portfolio({"BTCUSDT": BTC}))
    eng.update_mark("BTCUSDT", MID)
    return eng


def test_accepts_a_plain_order() -> None:
    decision = engine().check(intent(1), 0, 1)
    assert decision.accepted and decision.reason is None


def test_no_market_rejects_until_a_mid_exists() -> None:
    eng = RiskEngine(RiskLimits(), {"BTCUSDT": BTC}, Portfolio({"BTCUSDT": BTC}))
    assert eng.check(intent(1), 0, 1).reason is RejectReason.RISK_NO_MARKET


@pytest.mark.parametrize(
    ("side", "limit", "accepted"),
    [
        (Side.BUY, 605_999, True),
        (Side.BUY, 606_001, False),
        (Side.SELL, 594_001, True),
        (Side.SELL, 593_999, False),
        (Side.SELL, 700_000, True),
    ],
)
def test_price_band_only_binds_the_aggressive_side(side: Side, limit: int, accepted: bool) -> None:
    decision = engine().check(intent(1, side=side, limit=limit), 0, 1)
    assert decision.accepted is accepted
    if not accepted:
        assert decision.reason is RejectReason.RISK_PRICE_BAND


def test_position_limit_counts_open_orders() -> None:
    eng = engine(max_position_lots=25)
    assert eng.check(intent(1, qty=10), 10, 1).accepted
    decision = eng.check(intent(2, qty=10), 20, 2)
    assert decision.reason is RejectReason.RISK_MAX_POSITION
    # the other side reduces exposure and passes
    assert eng.check(intent(3, side=Side.SELL, qty=10), 0, 3).accepted


def test_notional_limit() -> None:
    eng = engine(max_notional_quote="500")  # 0.010 BTC at 60k = 600 USDT
    assert eng.check(intent(1, qty=10), 0, 1).reason is RejectReason.RISK_MAX_NOTIONAL
    assert eng.check(intent(2, qty=8), 0, 2).accepted


def test_allocation_caps_notional_below_the_limit() -> None:
    portfolio = Portfolio({"BTCUSDT": BTC})
    eng = RiskEngine(RiskLimits(), {"BTCUSDT": BTC}, portfolio, {"a": Decimal("100")})
    eng.update_mark("BTCUSDT", MID)
    assert eng.check(intent(1, qty=2), 0, 1).reason is RejectReason.RISK_MAX_NOTIONAL
    assert eng.check(intent(2, qty=1), 0, 2).accepted


def test_order_rate_is_a_sliding_second_of_event_time() -> None:
    eng = engine(max_orders_per_second=3)
    results = [eng.check(intent(i), 0, i * 1000).accepted for i in range(5)]
    assert results == [True, True, True, False, False]
    assert eng.check(intent(9), 0, NS_PER_SECOND + 1000).accepted
    assert eng.rejections[RejectReason.RISK_ORDER_RATE] == 2


def test_kill_switch_rejects_everything() -> None:
    eng = engine()
    eng.trip_kill_switch("operator")
    decision = eng.check(intent(1), 0, 1)
    assert decision.reason is RejectReason.RISK_KILL_SWITCH and decision.detail == "operator"
    eng.reset_kill_switch()
    assert eng.check(intent(2), 0, 2).accepted


def test_non_positive_size_and_missing_limit_are_rejected() -> None:
    eng = engine()
    assert not eng.check(intent(1, qty=0), 0, 1).accepted
    bad = OrderIntent(
        ts_event_ns=1,
        agent_id="a",
        seq=2,
        symbol="BTCUSDT",
        side=Side.BUY,
        qty_lots=1,
        limit_ticks=None,
        order_type=OrderType.LIMIT,
    )
    assert eng.check(bad, 0, 1).reason is RejectReason.INVALID_TICK


def test_an_oversized_order_is_refused_for_its_size() -> None:
    decision = engine(max_order_lots=5).check(intent(1, qty=6), 0, 1)
    assert decision.reason is RejectReason.RISK_ORDER_SIZE
    assert "order size 6" in decision.detail


@pytest.mark.parametrize("far_limit", [1, 10, 100_000])
def test_a_market_order_is_valued_at_the_mark_plus_the_band_whatever_its_limit(
    far_limit: int,
) -> None:
    # 0.009 BTC at 60,000 = 540 USDT; at the worst price in a 1 % band, 545.4 USDT
    order = OrderIntent(
        ts_event_ns=1,
        agent_id="a",
        seq=1,
        symbol="BTCUSDT",
        side=Side.SELL,
        qty_lots=9,
        limit_ticks=far_limit,
        order_type=OrderType.MARKET,
    )
    assert engine(max_notional_quote="545").check(order, 0, 1).reason is (
        RejectReason.RISK_MAX_NOTIONAL
    )
    assert engine(max_notional_quote="546").check(order, 0, 1).accepted


def test_a_limit_below_the_mark_is_valued_at_the_mark() -> None:
    low = intent(1, qty=9, limit=300_000)  # a buy 50 % under the market
    assert engine(max_notional_quote="539").check(low, 0, 1).reason is (
        RejectReason.RISK_MAX_NOTIONAL
    )


def _long(eng: RiskEngine, lots: int, price: int) -> None:
    eng._portfolio.apply_fill(
        OrderFilled(
            ts_event_ns=0,
            client_order_id="fill-0",
            agent_id="a",
            symbol="BTCUSDT",
            side=Side.BUY,
            price_ticks=price,
            qty_lots=lots,
            fee_quote=Decimal(0),
            is_maker=True,
            fill_id="f0",
        )
    )


def test_an_order_that_turns_the_position_over_is_held_to_the_caps() -> None:
    # long 10 with a cap of 5 lots (tightened after it was bought): selling it all is fine,
    # turning it into a short past the cap is not, whether the short is smaller or not
    eng = engine(max_position_lots=5)
    _long(eng, 10, 600_000)
    assert eng.check(intent(1, side=Side.SELL, qty=10), 0, 1).accepted
    assert eng.check(intent(2, side=Side.SELL, qty=14), 0, 2).accepted  # short 4
    decision = eng.check(intent(3, side=Side.SELL, qty=19), 0, 3)  # short 9 > 5
    assert decision.reason is RejectReason.RISK_MAX_POSITION
    assert decision.detail == "projected -9 lots"


def test_a_flip_is_held_to_the_notional_cap() -> None:
    # 8 lots of 0.001 BTC at 60k = 480 USDT under a 500 cap; the price doubles: long 8 is
    # 960 USDT. Selling 15 leaves a short of 7 (840 USDT): over the cap, refused
    eng = engine(max_notional_quote="500")
    _long(eng, 8, 600_000)
    eng.update_mark("BTCUSDT", 2 * MID)
    decision = eng.check(intent(1, side=Side.SELL, qty=15, limit=1_200_000), 0, 1)
    assert decision.reason is RejectReason.RISK_MAX_NOTIONAL
    assert eng.check(intent(2, side=Side.SELL, qty=12, limit=1_200_000), 0, 2).accepted


def test_a_reduce_only_order_may_only_shrink_the_position() -> None:
    # the flag went to the store and nothing read it: a reduce-only buy opened a position
    from sapphire.coordination.core import CoordinatorCore, StepResult
    from sapphire.model import OrderFilled
    from sapphire.model.events import Quote
    from sapphire.model.orders import OrderIntent, RejectReason

    btc = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001")
    core = CoordinatorCore({"BTCUSDT": btc}, RiskLimits(), Decimal("100000"), {"a": 1.0})
    core.on_mark(
        Quote(
            ts_event_ns=1,
            symbol="BTCUSDT",
            bid_ticks=600_000,
            ask_ticks=600_002,
            bid_lots=1,
            ask_lots=1,
        )
    )

    def decide(side: Side, lots: int, seq: int) -> RejectReason | None:
        result = StepResult()
        intent = OrderIntent(
            ts_event_ns=2 + seq, agent_id="a", seq=seq, symbol="BTCUSDT", side=side,
            qty_lots=lots, limit_ticks=600_001, reduce_only=True,
        )  # fmt: skip
        core.on_output("a", intent, result)
        return result.decisions[-1].reason

    assert decide(Side.BUY, 1, 1) is RejectReason.RISK_REDUCE_ONLY  # flat: nothing to reduce
    core.portfolio.apply_fill(
        OrderFilled(
            ts_event_ns=3, client_order_id="x-1", agent_id="a", symbol="BTCUSDT",
            side=Side.BUY, price_ticks=600_001, qty_lots=5, fee_quote=Decimal(0),
            is_maker=False, fill_id="f1", leaves_lots=0,
        )
    )  # fmt: skip
    assert decide(Side.BUY, 1, 2) is RejectReason.RISK_REDUCE_ONLY  # long: a buy grows it
    assert decide(Side.SELL, 6, 3) is RejectReason.RISK_REDUCE_ONLY  # flips it
    assert decide(Side.SELL, 5, 4) is None  # closes it


# a spot instrument as `sapphire data instruments` writes it from an exchangeInfo: orders in
# steps of 0.00001 BTC, every size on a grid 1,000 times finer
FINE = Instrument(
    symbol="BTCUSDT", tick_size="0.1", lot_size="0.00001", size_increment="0.00000001"
)


@pytest.mark.parametrize("batch", [False, True])
def test_lot_limits_count_order_steps_as_agents_do(batch: bool) -> None:
    """``max_order_lots: 20`` is 20 order steps, as an agent's ``order_lots: 10`` is 10: an
    intent's quantity is on the finer grid (10 steps = 10,000 units). Read in the grid, the
    limit refused every order on such an instrument."""
    limits = RiskLimits(
        price_band_bps=100,
        default_agent=AgentLimits(
            max_order_lots=20, max_position_lots=50, max_notional_quote="100000"
        ),
    )
    eng = RiskEngine(limits, {"BTCUSDT": FINE}, Portfolio({"BTCUSDT": FINE}))
    eng.update_mark("BTCUSDT", MID)
    step = FINE.lots_per_step
    assert step == 1_000
    intents = [intent(1, qty=10 * step), intent(2, qty=21 * step), intent(3, qty=20 * step)]
    if batch:
        got = eng.check_batch(intents, {}, lambda _s: 0.0)
        assert got is not None
        reasons = [d.reason for d in got]
    else:
        reasons = [eng.check(i, 0, i.ts_event_ns).reason for i in intents]
    # 10 steps pass; 21 is over the order size; 20 more would take the position past 50
    # with the first one's 10 open: 30 <= 50 passes
    assert reasons == [None, RejectReason.RISK_ORDER_SIZE, None]
