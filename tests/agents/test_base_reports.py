"""What every agent built on ``BaseAgent`` does with refusals: a cancel the venue refused
leaves the order to be cancelled again, and a refused order is retried only after a wait."""

from __future__ import annotations

import itertools
from decimal import Decimal

from sapphire.agents.avellaneda_stoikov import AvellanedaStoikovAgent
from sapphire.agents.base import RETRY_FIRST_NS, RETRY_MAX_NS
from sapphire.agents.mean_reversion import MeanReversionAgent
from sapphire.agents.momentum import MomentumAgent
from sapphire.model import CancelIntent, OrderIntent, Quote, Side
from sapphire.model.orders import (
    OrderDenied,
    OrderStatus,
    OrderUpdate,
    RejectReason,
)
from tests.agents.streams import BTCUSDT, filled

SEC = 1_000_000_000


def quote(ts: int, bid: int, ask: int) -> Quote:
    return Quote(
        ts_event_ns=ts, symbol="BTCUSDT", bid_ticks=bid, bid_lots=5, ask_ticks=ask, ask_lots=5
    )


def test_a_cancel_the_venue_refused_is_sent_again_at_the_next_requote() -> None:
    agent = AvellanedaStoikovAgent(
        "mm", BTCUSDT, {"order_amount": 0.001, "max_inventory": 0.01, "order_refresh_time": 1.0}
    )
    first = agent.on_event(quote(SEC, 6_000_000, 6_000_001), SEC)
    quoted = {o.client_order_id for o in first if isinstance(o, OrderIntent)}
    moved = agent.on_event(quote(2 * SEC, 6_000_500, 6_000_501), 2 * SEC)
    cancels = [o.target_client_order_id for o in moved if isinstance(o, CancelIntent)]
    assert set(cancels) == quoted
    for cid in cancels:  # what the live gateway says when a cancel times out unconfirmed
        update = OrderUpdate(
            ts_event_ns=2 * SEC,
            client_order_id=cid,
            agent_id="mm",
            symbol="BTCUSDT",
            status=OrderStatus.ACCEPTED,
            leaves_lots=100,
            reason=RejectReason.EXCHANGE_ERROR,
            message="cancel not confirmed",
        )
        assert agent.on_report(update, 2 * SEC) == []
    again = agent.on_event(quote(3 * SEC, 6_001_000, 6_001_001), 3 * SEC)
    assert quoted <= {o.target_client_order_id for o in again if isinstance(o, CancelIntent)}


def _denied(intent: OrderIntent, ts: int) -> OrderDenied:
    return OrderDenied(
        ts_event_ns=ts,
        client_order_id=intent.client_order_id,
        agent_id=intent.agent_id,
        symbol=intent.symbol,
        reason=RejectReason.RISK_KILL_SWITCH,
    )


def _rejected(intent: OrderIntent, ts: int) -> OrderUpdate:
    return OrderUpdate(
        ts_event_ns=ts,
        client_order_id=intent.client_order_id,
        agent_id=intent.agent_id,
        symbol=intent.symbol,
        status=OrderStatus.REJECTED,
        reason=RejectReason.MIN_NOTIONAL,
    )


def _orders_sent(
    agent: MomentumAgent | MeanReversionAgent, refuse: object, seconds: int
) -> list[int]:
    """Rising prices, 10 events a second; every order refused as ``refuse`` says. The
    times (ns) at which the agent sent an order."""
    sent = []
    for i in range(seconds * 10):
        ts = SEC + i * SEC // 10
        price = 6_000_000 + (i * 300 if isinstance(agent, MomentumAgent) else (-1) ** i * 3)
        if isinstance(agent, MeanReversionAgent) and i > 30:
            price = 5_990_000  # far below the window's mean: a long entry, held
        for out in agent.on_event(quote(ts, price, price + 1), ts):
            if isinstance(out, OrderIntent):
                sent.append(ts)
                agent.on_report(refuse(out, ts), ts)  # type: ignore[operator]
    return sent


def test_a_denied_order_is_retried_after_a_wait_that_doubles() -> None:
    agent = MomentumAgent("m", BTCUSDT, {"fast_span": 2, "slow_span": 5, "threshold_bps": 0.1})
    sent = _orders_sent(agent, _denied, 20)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    # before: one order at every one of the ~150 events after the cross
    assert 3 <= len(sent) <= 6, sent
    assert gaps[:3] == [RETRY_FIRST_NS, 2 * RETRY_FIRST_NS, 4 * RETRY_FIRST_NS]


def test_a_venue_reject_backs_off_mean_reversion_too_and_a_fill_resets_it() -> None:
    agent = MeanReversionAgent("r", BTCUSDT, {"window": 20, "entry_z": 1.0, "exit_z": 0.1})
    sent = _orders_sent(agent, _rejected, 10)
    assert 2 <= len(sent) <= 5, sent
    assert agent.core.refusals == len(sent)
    last = agent.core.retry_at_ns
    assert last - sent[-1] == min(RETRY_FIRST_NS << (len(sent) - 1), RETRY_MAX_NS)
    fill = filled("r", "r-x", last, 5_990_000, 1)
    agent.on_report(fill, last)
    assert agent.core.refusals == 0


def test_a_fill_lifts_the_wait_at_once() -> None:
    agent = MomentumAgent("m", BTCUSDT, {"fast_span": 2, "slow_span": 5, "threshold_bps": 0.1})
    intent = agent.order(SEC, Side.BUY, 1)
    agent.on_report(_denied(intent, SEC), SEC)
    assert agent.backing_off(SEC + SEC // 5)
    other = agent.order(SEC, Side.BUY, 1)
    fill = filled("m", other.client_order_id, SEC + SEC // 10, 6_000_000, 1)
    agent.on_report(fill, SEC + SEC // 10)
    assert not agent.backing_off(SEC + SEC // 5)  # the docstring's promise: at once again


def test_a_fee_kept_in_the_coin_leaves_the_agents_position_not_its_cash() -> None:
    # the agent's own book-keeping follows the account: the coin it received, the quote it
    # paid; the fee's value (fee_quote) is counted once, in its fees
    import msgspec

    agent = MomentumAgent("m", BTCUSDT, {"fast_span": 2, "slow_span": 5, "threshold_bps": 0.1})
    intent = agent.order(SEC, Side.BUY, 1000)
    plain = filled("m", intent.client_order_id, SEC, 6_000_000, 1000)
    fee = BTCUSDT.notional_quote(6_000_000, 1)
    kept = msgspec.structs.replace(plain, fee_lots=1, fee_quote=fee)
    agent.on_report(kept, SEC)
    assert agent.core.position_lots == 999
    assert agent.core.cash_quote == -BTCUSDT.notional_quote(6_000_000, 1000)
    assert agent.core.fees_quote == fee
    # equity at the fill price: the fee's value lost, once
    assert agent.equity_quote(Decimal(0), 6_000_000) == -fee


def test_coin_fees_carried_under_a_lot_are_paid_once() -> None:
    # ten buys each charged a tenth of a lot in the coin: nine carry it (fee_lots 0, the
    # fee's value in fee_quote), the tenth books the lot; the lot's value was taken a
    # second time from the agent's cash, and its equity fell by twice the fees
    import msgspec

    from sapphire.risk.portfolio import Portfolio

    agent = MomentumAgent("m", BTCUSDT, {"fast_span": 2, "slow_span": 5, "threshold_bps": 0.1})
    portfolio = Portfolio({"BTCUSDT": BTCUSDT})
    lot_value = BTCUSDT.notional_quote(6_000_000, 1)
    for k in range(10):
        intent = agent.order(SEC, Side.BUY, 100)
        plain = filled("m", intent.client_order_id, SEC, 6_000_000, 100)
        fill = msgspec.structs.replace(plain, fee_quote=lot_value / 10, fee_lots=1 if k == 9 else 0)
        agent.on_report(fill, SEC)
        portfolio.apply_fill(fill)
    assert agent.core.position_lots == 999
    equity = agent.equity_quote(Decimal(0), 6_000_000)
    assert equity == -lot_value  # one lot's value, paid once
    assert portfolio.total_pnl_quote("m", {"BTCUSDT": 6_000_000.0}) == equity
