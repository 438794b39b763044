from decimal import Decimal

import msgspec

from sapphire.coordination.core import CoordinatorCore, StepResult
from sapphire.model import (
    CancelIntent,
    CancelOrder,
    Instrument,
    OrderFilled,
    OrderIntent,
    OrderStatus,
    OrderUpdate,
    Quote,
    RejectReason,
    Side,
    Signal,
    SubmitOrder,
)
from sapphire.risk.limits import RiskLimits

BTC = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001")
QUOTE = Quote(
    ts_event_ns=1, symbol="BTCUSDT", bid_ticks=599_990, bid_lots=5, ask_ticks=600_010, ask_lots=5
)


def core(**limits: object) -> CoordinatorCore:
    return CoordinatorCore(
        {"BTCUSDT": BTC},
        RiskLimits(**limits),
        Decimal("1000000"),
        {"a": 1.0, "b": 1.0},  # type: ignore[arg-type]
    )


def buy(agent: str, seq: int, qty: int = 5) -> OrderIntent:
    return OrderIntent(
        ts_event_ns=seq,
        agent_id=agent,
        seq=seq,
        symbol="BTCUSDT",
        side=Side.BUY,
        qty_lots=qty,
        limit_ticks=599_990,
    )


def filled(order: SubmitOrder, price: int, fill_id: str) -> OrderFilled:
    return OrderFilled(
        ts_event_ns=5,
        client_order_id=order.client_order_id,
        agent_id=order.agent_id,
        symbol=order.symbol,
        side=order.side,
        price_ticks=price,
        qty_lots=order.qty_lots,
        fee_quote=Decimal("0.01"),
        is_maker=True,
        fill_id=fill_id,
    )


def accepted(ts: int, leaves: int, cid: str = "a-1") -> OrderUpdate:
    """The venue's ACCEPTED for agent a's order ``cid``."""
    return OrderUpdate(
        ts_event_ns=ts,
        client_order_id=cid,
        agent_id="a",
        symbol="BTCUSDT",
        status=OrderStatus.ACCEPTED,
        leaves_lots=leaves,
    )


def test_intents_become_orders_in_agent_order_and_replays_are_dropped() -> None:
    c = core()
    result = c.step([QUOTE], [], {"b": [buy("b", 1)], "a": [buy("a", 1)]}, 2)
    assert [cmd.client_order_id for cmd in result.commands] == ["a-1", "b-1"]
    assert all(d.accepted for d in result.decisions)
    again = c.step([], [], {"a": [buy("a", 1)]}, 3)
    assert again.commands == []  # a re-sent intent never becomes a second order


def test_fills_are_applied_once_and_positions_reported() -> None:
    c = core()
    order = c.step([QUOTE], [], {"a": [buy("a", 1)]}, 2).commands[0]
    assert isinstance(order, SubmitOrder)
    fill = filled(order, 599_990, "x1")
    result = c.step([], [fill, fill], {}, 6)
    assert c.fill_count == 1
    assert [p.qty_lots for p in result.positions] == [5]
    assert c.journal.entries["a-1"].status is OrderStatus.FILLED


def test_kill_switch_cancels_resting_orders_and_blocks_new_ones_within_one_step() -> None:
    c = core()
    c.step([QUOTE], [], {"a": [buy("a", 1)], "b": [buy("b", 1)]}, 2)
    c.step(
        [],
        [accepted(3, 5)],
        {},
        3,
    )
    c.request_kill("operator")
    result = c.step([], [], {"a": [buy("a", 2)]}, 4)
    assert result.kill_switch_tripped
    assert sorted(
        cmd.client_order_id for cmd in result.commands if isinstance(cmd, CancelOrder)
    ) == ["a-1", "b-1"]
    assert not any(isinstance(cmd, SubmitOrder) for cmd in result.commands)
    assert result.decisions[0].reason is RejectReason.RISK_KILL_SWITCH


def test_a_reset_after_a_trip_not_yet_applied_clears_it() -> None:
    # the console's Trip then Reset before the next step: the run stays live (the pending
    # trip tripped the run at the next step while the console showed OFF)
    c = core()
    c.step([QUOTE], [], {}, 2)
    c.request_kill("operator")
    c.reset_kill()
    result = c.step([], [], {"a": [buy("a", 1)]}, 3)
    assert not result.kill_switch_tripped and not c.risk.kill_switch_on
    assert [type(cmd) for cmd in result.commands] == [SubmitOrder]


# the market 1.7 % down from QUOTE: a 1,000-lot buy at 599,990 loses over any small limit
CRASH = Quote(
    ts_event_ns=4, symbol="BTCUSDT", bid_ticks=590_000, bid_lots=1, ask_ticks=590_010, ask_lots=1
)


def test_firm_daily_loss_trips_the_switch() -> None:
    c = core(max_firm_daily_loss_quote="1")
    order = c.step([QUOTE], [], {"a": [buy("a", 1, qty=1000)]}, 2).commands[0]
    assert isinstance(order, SubmitOrder)
    c.step([], [filled(order, 599_990, "x")], {}, 3)
    result = c.step([CRASH], [], {"b": [buy("b", 2)]}, 4)
    assert result.kill_switch_tripped
    assert c.risk.kill_switch_on


def test_cancel_intent_only_for_own_open_orders_and_signals_aggregate() -> None:
    c = core()
    c.step([QUOTE], [], {"a": [buy("a", 1)]}, 2)
    foreign = CancelIntent(
        ts_event_ns=3, agent_id="b", seq=1, symbol="BTCUSDT", target_client_order_id="a-1"
    )
    own = CancelIntent(
        ts_event_ns=3, agent_id="a", seq=2, symbol="BTCUSDT", target_client_order_id="a-1"
    )
    sig_a = Signal(ts_event_ns=3, agent_id="a", symbol="BTCUSDT", strength=1.0)
    sig_b = Signal(ts_event_ns=3, agent_id="b", symbol="BTCUSDT", strength=-0.5)
    result = c.step([], [], {"a": [own, sig_a], "b": [foreign, sig_b]}, 3)
    assert [cmd.client_order_id for cmd in result.commands] == ["a-1"]
    assert c.aggregator.consensus("BTCUSDT") == 0.25


def test_snapshot_restore_continues_identically() -> None:
    c = core()
    c.step([QUOTE], [], {"a": [buy("a", 1)]}, 2)
    clone = core()
    clone.restore(c.snapshot())
    nxt = {"a": [buy("a", 2)], "b": [buy("b", 1, qty=10**9)]}
    assert c.step([], [], nxt, 3) == clone.step([], [], nxt, 3)


def test_new_reports_drops_fills_seen_before_and_repeats_within_a_batch() -> None:
    c = core()
    order = c.step([QUOTE], [], {"a": [buy("a", 1)]}, 2).commands[0]
    assert isinstance(order, SubmitOrder)
    first = filled(order, 599_990, "x1")
    assert c.new_reports([first, first]) == [first]
    c.step([], [first], {}, 3)
    assert c.new_reports([first]) == []  # a venue re-reporting after reconcile
    late = accepted(4, 0)
    assert c.new_reports([late]) == []  # the order is already final


def test_signal_consensus_is_applied_as_a_gate_when_configured() -> None:
    def sell(agent: str, seq: int) -> OrderIntent:
        return OrderIntent(
            ts_event_ns=seq,
            agent_id=agent,
            seq=seq,
            symbol="BTCUSDT",
            side=Side.SELL,
            qty_lots=5,
            limit_ticks=600_010,
        )

    bullish = Signal(ts_event_ns=1, agent_id="a", symbol="BTCUSDT", strength=0.9)
    gated = core(consensus_gate=0.5)
    result = gated.step([QUOTE], [], {"a": [bullish], "b": [sell("b", 1), buy("b", 2)]}, 2)
    by_id = {d.client_order_id: d for d in result.decisions}
    assert by_id["b-1"].reason is RejectReason.RISK_CONSENSUS  # against a 0.9 consensus
    assert by_id["b-2"].accepted  # with it
    # off by default: the same outputs pass
    free = core()
    result = free.step([QUOTE], [], {"a": [bullish], "b": [sell("b", 1)]}, 2)
    assert all(d.accepted for d in result.decisions)


def test_an_order_still_open_a_second_after_the_kill_switch_cancel_is_canceled_again() -> None:
    # a live venue that refused the cancel after its retries (or lost it): the order would
    # rest under a tripped switch; it is asked to go again once a second has passed
    c = core()
    c.step([QUOTE], [], {"a": [buy("a", 1)]}, 2)
    resting = accepted(3, 5)
    c.step([], [resting], {}, 3)
    c.request_kill("operator")
    first = c.step([], [], {}, 4)
    assert [cmd.client_order_id for cmd in first.commands] == ["a-1"]
    soon = StepResult()
    c.recancel(4 + 500_000_000, soon)
    assert soon.commands == []  # its answer may still be on the way
    later = StepResult()
    c.recancel(4 + 1_000_000_000, later)
    assert [type(cmd) for cmd in later.commands] == [CancelOrder]
    # once the venue says it is canceled, nothing more
    gone = msgspec.structs.replace(resting, status=OrderStatus.CANCELED, leaves_lots=0)
    c.step([], [gone], {}, 2_000_000_000)
    quiet = StepResult()
    c.recancel(3_000_000_000, quiet)
    assert quiet.commands == []


def test_a_loss_in_the_days_last_check_interval_still_trips_the_kill_switch() -> None:
    # the day's start was replaced before its last PnL was judged: a loss booked after the
    # last check before midnight counted against neither day, and never tripped the switch
    from sapphire.coordination.core import CoordinatorCore, StepResult
    from sapphire.model import OrderFilled
    from sapphire.model.events import Quote
    from sapphire.risk.engine import NS_PER_DAY
    from sapphire.risk.limits import AgentLimits, RiskLimits

    btc = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001")
    limits = RiskLimits(
        max_firm_daily_loss_quote="10",
        kill_on_daily_loss=True,
        default_agent=AgentLimits(max_daily_loss_quote="5"),
    )
    midnight = 20_000 * NS_PER_DAY

    def quote(ts: int, bid: int) -> Quote:
        return Quote(
            ts_event_ns=ts, symbol="BTCUSDT", bid_ticks=bid, ask_ticks=bid + 2, bid_lots=1,
            ask_lots=1,
        )  # fmt: skip

    def run(last_check_ns: int) -> CoordinatorCore:
        core = CoordinatorCore({"BTCUSDT": btc}, limits, Decimal("100000"), {"a": 1.0})
        core.on_mark(quote(midnight - 10 * 10**9, 600_000))
        core.check_losses(midnight - 10 * 10**9, StepResult())
        core.portfolio.apply_fill(
            OrderFilled(
                ts_event_ns=midnight - 500_000_000, client_order_id="a-1", agent_id="a",
                symbol="BTCUSDT", side=Side.BUY, price_ticks=600_001, qty_lots=1000,
                fee_quote=Decimal(0), is_maker=False, fill_id="f1", leaves_lots=0,
            )
        )  # fmt: skip
        core.on_mark(quote(midnight - 400_000_000, 599_000))  # 1 BTC down 100 USDT
        core.check_losses(last_check_ns, StepResult())
        return core

    assert run(midnight - 1).risk.kill_switch_on  # checked before midnight: tripped
    after = run(midnight)  # the next check is already the new day's first
    assert after.risk.kill_switch_on and "day's end" in after.risk.kill_reason


def test_funding_settles_on_every_agents_position_as_the_venues_account_books_it() -> None:
    """A perpetual's funding is PnL: each agent pays (long, rate > 0) or receives (short)
    its position's notional at the mark x rate, summing to what the venue's account books
    for the firm's net position; a firm daily loss limit sees it and trips the switch."""
    from sapphire.exchange.account import Account
    from sapphire.model.events import FundingRate
    from sapphire.model.instrument import InstrumentKind

    perp = Instrument(
        symbol="BTCUSDT", kind=InstrumentKind.PERPETUAL, tick_size="0.1", lot_size="0.001"
    )
    c = CoordinatorCore(
        {"BTCUSDT": perp},
        RiskLimits(max_firm_daily_loss_quote=Decimal("50"), kill_on_daily_loss=True),
        Decimal("1000000"),
        {"a": 1.0, "b": 1.0},
    )
    long_ = c.step([QUOTE], [], {"a": [buy("a", 1, qty=5)]}, 2).commands[0]
    sell = msgspec.structs.replace(buy("b", 1, qty=2), side=Side.SELL, limit_ticks=600_010)
    short = c.step([], [], {"b": [sell]}, 3).commands[0]
    assert isinstance(long_, SubmitOrder) and isinstance(short, SubmitOrder)
    c.step([], [filled(long_, 599_990, "x1"), filled(short, 600_010, "x2")], {}, 4)
    before = {a: c.portfolio.total_pnl_quote(a, c.marks.marks) for a in "ab"}
    funding = FundingRate(ts_event_ns=10, symbol="BTCUSDT", rate="0.01")
    c.step([funding], [], {}, 10)
    paid = {a: c.portfolio.total_pnl_quote(a, c.marks.marks) - before[a] for a in "ab"}
    # mark 600,000 ticks = 60,000 USDT; 5 lots = 0.005 BTC: 300 USDT x 1 %
    assert paid == {"a": Decimal("-3"), "b": Decimal("1.2")}
    venue = Account({"BTCUSDT": perp}, {"USDT": Decimal("1000000")})
    venue.apply_fill(perp, Side.BUY, 599_990, 5, Decimal(0))
    venue.apply_fill(perp, Side.SELL, 600_010, 2, Decimal(0))
    assert venue.apply_funding(perp, Decimal("0.01"), 600_000) == paid["a"] + paid["b"]
    assert not c.risk.kill_switch_on
    # a rate that costs the firm more than its daily limit: the next check trips it
    c.step([FundingRate(ts_event_ns=11, symbol="BTCUSDT", rate="0.5")], [], {}, 11)
    result = StepResult()
    c.check_losses(12, result)
    assert c.risk.kill_switch_on and result.kill_switch_tripped


def test_funding_is_not_settled_at_a_mark_a_day_old() -> None:
    """A funding file that runs on after the prices end settled every payment at the last
    price (79 of them over 26 days on a bar run): a mark over a day old settles none, and
    the summary counts them."""
    from sapphire.kernel.marks import FUNDING_MARK_MAX_AGE_NS
    from sapphire.model.events import FundingRate
    from sapphire.model.instrument import InstrumentKind

    perp = Instrument(
        symbol="BTCUSDT", kind=InstrumentKind.PERPETUAL, tick_size="0.1", lot_size="0.001"
    )
    c = CoordinatorCore({"BTCUSDT": perp}, RiskLimits(), Decimal("1000000"), {"a": 1.0})
    order = c.step([QUOTE], [], {"a": [buy("a", 1, qty=5)]}, 2).commands[0]
    assert isinstance(order, SubmitOrder)
    c.step([], [filled(order, 599_990, "x1")], {}, 4)
    quoted = QUOTE.ts_event_ns
    day_old = FundingRate(
        ts_event_ns=quoted + FUNDING_MARK_MAX_AGE_NS, symbol="BTCUSDT", rate="0.01"
    )
    c.step([day_old], [], {}, 5)
    settled = c.portfolio.positions[("a", "BTCUSDT")].funding_quote
    assert settled == Decimal("-3") and c.funding_stale_marks == 0  # a day old: still priced
    late = quoted + FUNDING_MARK_MAX_AGE_NS + 1
    c.step([FundingRate(ts_event_ns=late, symbol="BTCUSDT", rate="0.01")], [], {}, 6)
    assert c.portfolio.positions[("a", "BTCUSDT")].funding_quote == settled
    assert c.funding_stale_marks == 1


def test_a_duplicate_submit_refused_by_the_venue_leaves_the_order_open() -> None:
    """A re-sent submit is refused with the first order's id (the venue keeps the first):
    taken for that order's rejection, a live order left the open lists (a kill switch's
    cancel-all missed it, and it filled later)."""
    c = core()
    order = c.step([QUOTE], [], {"a": [buy("a", 1)]}, 2).commands[0]
    assert isinstance(order, SubmitOrder)
    c.step([], [accepted(3, order.qty_lots)], {}, 3)
    duplicate = OrderUpdate(
        ts_event_ns=4,
        client_order_id=order.client_order_id,
        agent_id="a",
        symbol="BTCUSDT",
        status=OrderStatus.REJECTED,
        reason=RejectReason.DUPLICATE_CLIENT_ORDER_ID,
    )
    c.step([], [duplicate], {}, 4)
    assert [e.client_order_id for e in c.journal.open_orders()] == [order.client_order_id]
    assert c.journal.entries[order.client_order_id].status is OrderStatus.ACCEPTED


def test_an_agent_over_its_daily_loss_may_still_close() -> None:
    # the loss check refused every order, a reduce-only close too: the agent sat on its
    # losing position while the market went on against it
    from sapphire.risk.limits import AgentLimits

    c = core(default_agent=AgentLimits(max_daily_loss_quote="1"))
    order = c.step([QUOTE], [], {"a": [buy("a", 1, qty=1000)]}, 2).commands[0]
    assert isinstance(order, SubmitOrder)
    c.step([], [filled(order, 599_990, "x")], {}, 3)
    more = c.step([CRASH], [], {"a": [buy("a", 2, qty=10)]}, 4)
    assert [d.reason for d in more.decisions] == [RejectReason.RISK_DAILY_LOSS]
    close = msgspec.structs.replace(
        buy("a", 3, qty=1000), side=Side.SELL, limit_ticks=590_000, reduce_only=True
    )
    out = c.step([], [], {"a": [close]}, 5)
    assert [d.accepted for d in out.decisions] == [True]
