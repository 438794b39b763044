"""The batch pre-trade check decides exactly as the per-intent one: random intent streams
with marks, fills, signals and kill switch changes between runs of intents, through two
coordinators, one intent at a time (``on_output``) vs one run at a time (``on_intents``)."""

from __future__ import annotations

import pickle
import random
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sapphire.risk.engine as engine
from sapphire.coordination.core import CoordinatorCore, StepResult
from sapphire.model import Instrument, OrderFilled, OrderIntent, OrderType, Quote, Side, Signal
from sapphire.risk.limits import AgentLimits, RiskLimits

BTC = Instrument(symbol="BTCUSDT", tick_size="0.1", lot_size="0.001")
ETH = Instrument(symbol="ETHUSDT", tick_size="0.01", lot_size="0.01")
MID = 600_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "NOPE"]  # ETH has no mark until one is drawn; NOPE unknown
DAY = engine.NS_PER_DAY

limits_st = st.builds(
    lambda band, pos, notional, order, rate, loss, firm, kill, gate: RiskLimits(
        price_band_bps=band,
        max_firm_daily_loss_quote=firm,
        kill_on_daily_loss=kill,
        consensus_gate=gate,
        default_agent=AgentLimits(
            max_position_lots=pos,
            max_notional_quote=notional,
            max_order_lots=order,
            max_orders_per_second=rate,
            max_daily_loss_quote=loss,
        ),
        agents={"c": AgentLimits(max_position_lots=pos * 2, max_orders_per_second=rate + 3)},
    ),
    band=st.sampled_from([1, 20, 500]),
    pos=st.sampled_from([0, 8, 40, 1000]),
    notional=st.sampled_from(["500", "3000", "100000"]),
    order=st.sampled_from([0, 10, 25, 25]),
    rate=st.sampled_from([1, 3, 6, 50]),
    loss=st.sampled_from(["0", "1", "50", "100000"]),
    firm=st.sampled_from(["0", "2", "100000"]),
    kill=st.booleans(),
    gate=st.sampled_from([0.0, 0.5]),
)

GAPS = [0, 1, 1, 20_000_000, 50_000_000, 300_000_000, 1_000_000_000, DAY // 3]


def expand_run(seed: int, length: int) -> list[tuple[Any, ...]]:
    """A run of ``length`` intents drawn from ``seed``: hypothesis picks and shrinks the
    seed and length; the draws inside give long runs that reach every check."""
    rng = random.Random(seed)
    out = []
    for _ in range(length):
        r = rng.random()
        off: int | None
        if r < 0.1:
            off = None
        elif r < 0.13:
            off = -MID  # a non-positive limit
        elif r < 0.25:
            off = rng.randint(-3_000, 3_000)
        else:
            off = rng.randint(-40, 40)
        out.append(
            (
                rng.choice(["a", "a", "b", "c"]),
                rng.choice(SYMBOLS + ["BTCUSDT"] * 8),
                rng.choice([Side.BUY, Side.SELL]),
                rng.randint(1, 12) if rng.random() < 0.95 else rng.choice([-1, 0, 27]),
                OrderType.MARKET if rng.random() < 0.15 else OrderType.LIMIT,
                off,
                rng.choice(GAPS) if rng.random() < 0.5 else 1,
                rng.randint(0, 10_000) if rng.random() < 0.97 else rng.randint(0, 3),
                rng.random() < 0.1,  # reduce-only: refused where it would grow or flip
            )
        )
    return out


step_st = st.one_of(
    st.tuples(st.just("mark"), st.sampled_from(SYMBOLS[:2]), st.integers(-2_000, 2_000)),
    st.tuples(st.just("fill"), st.integers(0, 50), st.integers(-60_000, 60_000)),
    st.tuples(st.just("signal"), st.sampled_from(["a", "b"]), st.sampled_from([-1.0, 0.3, 1.0])),
    st.tuples(st.just("kill"), st.sampled_from([True, False, False])),
    st.builds(
        lambda seed, n: ("run", expand_run(seed, n)), st.integers(0, 2**32), st.integers(1, 100)
    ),
)


def make_core(limits: RiskLimits) -> CoordinatorCore:
    return CoordinatorCore(
        {"BTCUSDT": BTC, "ETHUSDT": ETH},
        limits,
        Decimal("100000"),
        {"a": 1.0, "b": 2.0, "c": 1.0},
        crossing="internal",
    )


def replay(limits: RiskLimits, steps: list[Any], batched: bool) -> tuple[Any, ...]:
    core = make_core(limits)
    core.on_mark(
        Quote(
            ts_event_ns=0,
            symbol="BTCUSDT",
            bid_ticks=MID - 1,
            bid_lots=1,
            ask_ticks=MID + 1,
            ask_lots=1,
        )
    )
    result = StepResult()
    t = 1
    fills = 0
    for step in steps:
        kind = step[0]
        if kind == "mark":
            mid = (MID if step[1] == "BTCUSDT" else 30_000) + step[2]
            core.on_mark(
                Quote(
                    ts_event_ns=t,
                    symbol=step[1],
                    bid_ticks=mid - 1,
                    bid_lots=1,
                    ask_ticks=mid + 1,
                    ask_lots=1,
                )
            )
        elif kind == "fill":
            open_orders = core.journal.open_orders()
            if open_orders:
                e = open_orders[step[1] % len(open_orders)]
                fills += 1
                mark = core.marks.get(e.symbol) or MID
                core.on_report(
                    OrderFilled(
                        ts_event_ns=t,
                        client_order_id=e.client_order_id,
                        agent_id=e.agent_id,
                        symbol=e.symbol,
                        side=e.side,
                        price_ticks=max(1, int(mark) + step[2]),
                        qty_lots=e.leaves_lots,
                        fee_quote=Decimal("0.5"),
                        is_maker=False,
                        fill_id=f"f{fills}",
                    ),
                    t,
                )
        elif kind == "signal":
            core.on_output(
                step[1],
                Signal(ts_event_ns=t, agent_id=step[1], symbol="BTCUSDT", strength=step[2]),
                result,
            )
        elif kind == "kill":
            if step[1]:
                core.request_kill("operator")
                core.start_step(t, result)
            else:
                core.reset_kill()
        else:
            items = []
            for agent, symbol, side, lots, otype, off, gap, seq, reduce in step[1]:
                t += gap
                base = core.marks.get(symbol) or MID
                intent = OrderIntent(
                    ts_event_ns=t,
                    agent_id=agent,
                    seq=seq,
                    symbol=symbol,
                    side=side,
                    qty_lots=lots,
                    limit_ticks=None if off is None else int(base) + off,
                    order_type=otype,
                    reduce_only=reduce,
                )
                items.append((agent, intent))
            if batched:
                core.on_intents(items, result)
            else:
                for agent, intent in items:
                    core.on_output(agent, intent, result)
        t += 1
    risk = core.risk
    return (
        result.decisions,
        result.orders,
        result.denials,
        result.commands,
        result.kill_switch_tripped,
        risk.rejections,
        risk.kill_switch_on,
        risk.kill_reason,
        {k: list(v) for k, v in risk._recent_orders.items() if v},
    )


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(limits=limits_st, steps=st.lists(step_st, min_size=3, max_size=14))
# a firm loss breached as a day ended (runs whose gaps cross midnight): the per-intent path
# tripped the kill switch at the new day's first intent, the batch path did not (CI found it)
@example(
    limits=RiskLimits(
        price_band_bps=1,
        max_firm_daily_loss_quote="0",
        kill_on_daily_loss=True,
        default_agent=AgentLimits(
            max_position_lots=40,
            max_notional_quote="3000",
            max_order_lots=0,
            max_orders_per_second=1,
            max_daily_loss_quote="0",
        ),
        agents={"c": AgentLimits(max_position_lots=80, max_orders_per_second=4)},
    ),
    steps=[
        ("run", expand_run(28560, 13)),
        ("run", expand_run(56700070, 66)),
        ("mark", "BTCUSDT", 13),
        ("kill", False),
        ("fill", 49, 172),
        ("run", expand_run(1577, 76)),
        ("kill", False),
        ("mark", "BTCUSDT", -815),
        ("fill", 5, -2011),
        ("run", expand_run(28560, 13)),
        ("fill", 14, 18381),
        ("run", expand_run(2646, 7)),
        ("run", expand_run(12031, 29)),
        ("kill", False),
    ],
)
def test_batch_decides_as_per_intent(limits: RiskLimits, steps: list[Any]) -> None:
    assert replay(limits, steps, batched=True) == replay(limits, steps, batched=False)


def test_batch_counts_a_mix_of_verdicts() -> None:
    """Not vacuous: one run both accepts and denies for several reasons."""
    limits = RiskLimits(
        price_band_bps=20,
        default_agent=AgentLimits(max_position_lots=10, max_order_lots=8, max_orders_per_second=3),
    )
    steps: list[Any] = [
        (
            "run",
            [
                # the last a second later (past the order rate), reduce-only while long
                ("a", "BTCUSDT", Side.BUY, q, OrderType.LIMIT, off, 1 + (s == 6) * 10**9, s, s == 6)
                for s, (q, off) in enumerate(
                    [(5, 0), (9, 0), (2, 5_000), (4, 0), (3, 0), (1, 0), (1, 0)]
                )
            ],
        )
    ]
    decisions = replay(limits, steps, batched=True)[0]
    assert [d.reason.value if d.reason else "ok" for d in decisions] == [
        "ok",
        "risk_order_size",
        "risk_price_band",
        "ok",
        "risk_max_position",
        "ok",
        "risk_reduce_only",
    ]


def test_a_restored_engine_counts_the_order_rate_it_restored() -> None:
    """The batch pass keeps per-agent views that hold the order-rate windows: they stay out
    of a checkpoint, and a restored engine builds them around the windows it restored (not
    the original's, nor empty ones)."""
    limits = RiskLimits(default_agent=AgentLimits(max_orders_per_second=2))
    core = make_core(limits)
    risk = core.risk
    risk.update_mark("BTCUSDT", MID)

    def reasons(eng: engine.RiskEngine, seqs: list[int]) -> list[str | None]:
        intents = [
            OrderIntent(
                ts_event_ns=10,
                agent_id="a",
                seq=s,
                symbol="BTCUSDT",
                side=Side.BUY,
                qty_lots=1,
                limit_ticks=MID,
            )
            for s in seqs
        ]
        out = eng.check_batch(intents, {}, lambda _: 0.0)
        assert out is not None
        return [d.reason.value if d.reason else None for d in out]

    assert reasons(risk, [1]) == [None]
    data = pickle.dumps(risk)
    assert b"_AgentView" not in data and b"_SymbolView" not in data
    restored = pickle.loads(data)
    assert reasons(restored, [2, 3]) == [None, "risk_order_rate"]
    # the original's window is its own: one order in it, room for one more
    assert reasons(risk, [2, 3]) == [None, "risk_order_rate"]
