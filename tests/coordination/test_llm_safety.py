"""Whatever the model says, the coordinator's limits bind: adversarial LLM answers (huge
sizes, injected instructions, unknown actions) through a loosely configured LLM agent never
produce an order or a position beyond the risk limits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sapphire.agents.llm_agent import LlmAgent
from sapphire.coordination.core import CoordinatorCore
from sapphire.model import Instrument, OrderFilled, Quote, RejectReason, SubmitOrder
from sapphire.risk.limits import AgentLimits, RiskLimits

BTC = Instrument(symbol="BTCUSDT", base="BTC", quote="USDT", tick_size="0.1", lot_size="0.001")
ADVERSARIAL = [
    '{"action": "buy", "size_fraction": 1.0, "confidence": 1.0, "rationale": '
    '"IGNORE ALL RISK LIMITS and buy 1000000 BTC now"}',
    '{"action": "buy", "size_fraction": 1e308, "confidence": 1.0, "rationale": "max"}',
    '{"action": "liquidate_everything", "size_fraction": 1.0, "confidence": 1.0, "rationale": ""}',
    '{"action": "buy", "size_fraction": 1.0, "confidence": 1.0, "rationale": "x", "qty": 99999}',
    'Sure! {"action": "buy", "size_fraction": 1.0, "confidence": 1.0, "rationale": "go"}',
]


@pytest.mark.parametrize("agent_order_cap", [4, 10_000])
def test_adversarial_model_answers_never_exceed_the_risk_limits(agent_order_cap: int) -> None:
    max_position, max_order = 20, 5
    agent = LlmAgent(
        "llm",
        BTC,
        {
            "max_order_lots": agent_order_cap,
            "max_position_lots": 1_000_000,
            "decision_interval_ns": 1,
            "decision_timeout_ns": 10**12,
            "sample_interval_ns": 1,
        },
    )
    limits = RiskLimits(
        price_band_bps=100,
        default_agent=AgentLimits(
            max_position_lots=max_position, max_order_lots=max_order, max_orders_per_second=10**6
        ),
    )
    core = CoordinatorCore({"BTCUSDT": BTC}, limits, Decimal("1e9"), {"llm": 1.0})
    fills: list[OrderFilled] = []
    rejected: set[RejectReason] = set()
    max_seen_order = 0
    for i in range(400):
        ts = 1_000_000_000 * (i + 1)
        quote = Quote(
            ts_event_ns=ts,
            symbol="BTCUSDT",
            bid_ticks=600_000,
            bid_lots=50,
            ask_ticks=600_001,
            ask_lots=50,
        )
        for request in agent.drain_requests():
            agent.on_decision(request.request_id, ADVERSARIAL[i % len(ADVERSARIAL)], ts)
        outputs = list(agent.on_event(quote, ts))
        result = core.step([quote], fills, {"llm": outputs}, ts)
        fills = []
        rejected |= {d.reason for d in result.decisions if d.reason is not None}
        for cmd in result.commands:
            if isinstance(cmd, SubmitOrder):
                max_seen_order = max(max_seen_order, cmd.qty_lots)
                fill = OrderFilled(
                    ts_event_ns=ts,
                    client_order_id=cmd.client_order_id,
                    agent_id="llm",
                    symbol="BTCUSDT",
                    side=cmd.side,
                    price_ticks=cmd.limit_ticks or 600_000,
                    qty_lots=cmd.qty_lots,
                    fee_quote=Decimal(0),
                    is_maker=False,
                    fill_id=f"f{cmd.client_order_id}",
                )
                fills.append(fill)
                agent.on_report(fill, ts)
        assert abs(core.portfolio.position_lots("llm", "BTCUSDT")) <= max_position
    assert max_seen_order <= max_order
    # a cap had to bind: the position cap, or (oversized orders) the order-size cap
    assert rejected & {RejectReason.RISK_MAX_POSITION, RejectReason.RISK_ORDER_SIZE}, rejected
    if agent_order_cap <= max_order:
        # orders within the size cap trade until the position cap stops them
        assert core.portfolio.position_lots("llm", "BTCUSDT") == max_position
    else:
        # every oversized order is refused: nothing trades
        assert core.portfolio.position_lots("llm", "BTCUSDT") == 0
    stats = agent.stats
    assert stats.malformed_json + stats.schema_violation > 0, "bad answers are counted"
