"""LlmAgent on real Binance spot quotes: non-blocking requests, event-time timeouts, caps."""

from __future__ import annotations

import csv
import gzip
import itertools
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.agents.base import Agent, AgentConfigError
from sapphire.agents.llm_agent import DecisionRequest, LlmAgent
from sapphire.llm.decision import LlmDecision
from sapphire.model.events import Quote, Side
from sapphire.model.instrument import Instrument
from sapphire.model.orders import OrderFilled, OrderIntent, Signal, TimeInForce
from tests.agents.streams import filled

BTC = Instrument(symbol="BTCUSDT", tick_size="0.01", lot_size="0.00001")
NS = 1_000_000_000


def _quotes(path: Path, n: int) -> list[Quote]:
    out = []
    with gzip.open(path, "rt") as fh:
        for row in itertools.islice(csv.DictReader(fh), n):
            out.append(
                Quote(
                    ts_event_ns=int(row["local_ts_ns"]),
                    symbol="BTCUSDT",
                    bid_ticks=BTC.price_to_ticks(row["bid_px"]),
                    bid_lots=BTC.qty_to_lots(row["bid_qty"]),
                    ask_ticks=BTC.price_to_ticks(row["ask_px"]),
                    ask_lots=BTC.qty_to_lots(row["ask_qty"]),
                )
            )
    return out


@pytest.fixture(scope="module")
def quotes(shared_data: Path) -> list[Quote]:
    # 2023-04-05 session: ~7 minutes of spot bookTicker, first 4000 updates (~3 min)
    return _quotes(shared_data / "book" / "hftbacktest_binance-spot_BTCUSDT_bbo.csv.gz", 4000)


def _buy(size: float = 1.0, confidence: float = 0.9) -> LlmDecision:
    return LlmDecision(action="buy", size_fraction=size, confidence=confidence, rationale="x")


def _run_until_request(agent: LlmAgent, events: Iterator[Quote]) -> DecisionRequest:
    for q in events:
        assert agent.on_event(q, q.ts_event_ns) == [] or True
        pending = agent.drain_requests()
        if pending:
            assert len(pending) == 1
            return pending[0]
    raise AssertionError("no request issued")


def test_llm_agent_implements_the_agent_protocol() -> None:
    assert isinstance(LlmAgent("llm-1", BTC, {}), Agent)


def test_requests_are_issued_once_per_interval_and_one_at_a_time(quotes: list[Quote]) -> None:
    agent = LlmAgent("llm-1", BTC, {"decision_interval_ns": 5 * NS, "decision_timeout_ns": NS})
    requests: list[DecisionRequest] = []
    for q in quotes:
        agent.on_event(q, q.ts_event_ns)
        requests.extend(agent.drain_requests())
    span = quotes[-1].ts_event_ns - quotes[0].ts_event_ns
    assert len(requests) >= 2
    assert len(requests) <= span // (5 * NS) + 1
    gaps = [b.ts_event_ns - a.ts_event_ns for a, b in itertools.pairwise(requests)]
    assert min(gaps) >= 5 * NS
    assert [r.request_id for r in requests] == list(range(1, len(requests) + 1))
    # never answered: every request but possibly the last timed out, in event time
    assert agent.stats.timeouts >= len(requests) - 1
    first = requests[0]
    assert first.deadline_ns == first.ts_event_ns + NS
    assert "market BTCUSDT" in first.prompt.user and "spread_bps" in first.prompt.user


def test_decision_is_applied_at_the_next_event_capped_by_config(quotes: list[Quote]) -> None:
    agent = LlmAgent("llm-1", BTC, {"max_order_lots": 3, "max_position_lots": 5})
    events = iter(quotes)
    request = _run_until_request(agent, events)
    acted = agent.on_decision(request.request_id, _buy(size=1.0), request.ts_event_ns)
    assert acted == _buy(size=1.0)  # the model's own decision: no fallback
    nxt = next(events)
    out = agent.on_event(nxt, nxt.ts_event_ns)
    intents = [o for o in out if isinstance(o, OrderIntent)]
    assert len(intents) == 1 and any(isinstance(o, Signal) for o in out)
    intent = intents[0]
    assert intent.side is Side.BUY and intent.qty_lots == 3
    assert intent.limit_ticks == nxt.ask_ticks and intent.tif is TimeInForce.IOC
    assert intent.ts_event_ns == nxt.ts_event_ns
    assert agent.stats.ok == 1


def test_raw_model_text_is_parsed_and_malformed_output_holds(quotes: list[Quote]) -> None:
    agent = LlmAgent("llm-1", BTC, {"max_order_lots": 3})
    events = iter(quotes)
    request = _run_until_request(agent, events)
    acted = agent.on_decision(request.request_id, '{"action": "buy", "size_fraction": 50', 0)
    assert acted is not None and acted.action == "hold"  # the "hold" fallback decides
    q = next(events)
    assert agent.on_event(q, q.ts_event_ns) == []
    assert agent.stats.malformed_json == 1 and agent.stats.ok == 0
    assert agent.state.fallbacks == 1


def test_timeout_in_event_time_uses_the_fallback_and_late_answers_are_dropped(
    quotes: list[Quote],
) -> None:
    agent = LlmAgent(
        "llm-1",
        BTC,
        {"decision_timeout_ns": NS, "fallback": "momentum", "fallback_threshold_bps": 0.0},
    )
    events = iter(quotes)
    request = _run_until_request(agent, events)
    out: list[object] = []
    for q in events:
        out = list(agent.on_event(q, q.ts_event_ns))
        if q.ts_event_ns > request.deadline_ns:
            break
    assert agent.stats.timeouts == 1 and agent.state.fallbacks == 1
    (outcome,) = agent.drain_outcomes()  # stored with its reason and the rule that decided
    assert outcome.request_id == request.request_id and outcome.fallback == "momentum"
    assert outcome.error.startswith("timeout: no answer within decision_timeout_ns=")
    if any(isinstance(o, OrderIntent) for o in out):
        assert all(o.qty_lots == 1 for o in out if isinstance(o, OrderIntent))
    agent.on_decision(request.request_id, _buy(), 0)
    assert agent.stats.late == 1
    q = next(events)
    assert not any(isinstance(o, OrderIntent) for o in agent.on_event(q, q.ts_event_ns))


def test_position_limit_caps_buys_and_shorting_can_be_disabled() -> None:
    agent = LlmAgent("a", BTC, {"max_order_lots": 10, "max_position_lots": 4, "allow_short": False})
    assert agent.capped_qty(Side.BUY, 1.0) == 4
    assert agent.capped_qty(Side.SELL, 1.0) == 0
    assert agent.capped_qty(Side.BUY, float("nan")) == 0
    agent.core.position_lots = 3
    assert agent.capped_qty(Side.BUY, 1.0) == 1
    assert agent.capped_qty(Side.SELL, 0.5) == 3


def test_submit_callable_receives_requests_instead_of_the_queue(quotes: list[Quote]) -> None:
    seen: list[DecisionRequest] = []
    agent = LlmAgent("llm-1", BTC, {}, submit=seen.append)
    for q in quotes[:50]:
        agent.on_event(q, q.ts_event_ns)
    assert len(seen) == 1 and agent.drain_requests() == []


def test_snapshot_restore_continues_identically(quotes: list[Quote]) -> None:
    cfg = {"decision_interval_ns": 2 * NS, "decision_timeout_ns": 3 * NS, "max_order_lots": 2}

    def drive(agent: LlmAgent, qs: list[Quote]) -> list[object]:
        out: list[object] = []
        for q in qs:
            out.extend(agent.on_event(q, q.ts_event_ns))
            for r in agent.drain_requests():
                if r.request_id % 2:  # answer odd requests, let even ones time out
                    agent.on_decision(r.request_id, _buy(0.5), q.ts_event_ns)
        return out

    a = LlmAgent("llm-1", BTC, cfg)
    drive(a, quotes[:1500])
    blob = a.snapshot()
    b = LlmAgent("llm-1", BTC, cfg)
    b.restore(blob)
    assert drive(a, quotes[1500:]) == drive(b, quotes[1500:])
    assert a.snapshot() == b.snapshot()


def test_bad_config_and_bad_symbol_raise_clear_errors() -> None:
    with pytest.raises(AgentConfigError):
        LlmAgent("a", BTC, {"max_order_lots": 0})
    with pytest.raises(AgentConfigError):
        LlmAgent("a", BTC, {"return_windows_s": [60, 10]})
    with pytest.raises(AgentConfigError):
        LlmAgent("a", Instrument(symbol="btc usdt", tick_size="0.01", lot_size="1"), {})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["buy", "sell", "hold"]),
            st.floats(0, 1),
            st.floats(0, 1),
            st.booleans(),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_any_decision_sequence_respects_the_position_limit(
    decisions: list[tuple[str, float, float, bool]],
) -> None:
    limit = 3
    agent = LlmAgent(
        "p", BTC, {"max_order_lots": 2, "max_position_lots": limit, "decision_interval_ns": 1}
    )
    ts = 1_000 * NS
    for i, (action, size, conf, fill) in enumerate(decisions):
        ts += NS
        q = Quote(
            ts_event_ns=ts, symbol="BTCUSDT", bid_ticks=100, bid_lots=5, ask_ticks=101, ask_lots=5
        )
        for out in agent.on_event(q, ts):
            if isinstance(out, OrderIntent) and fill:
                agent.on_report(
                    OrderFilled(
                        ts_event_ns=ts,
                        client_order_id=out.client_order_id,
                        agent_id="p",
                        symbol="BTCUSDT",
                        side=out.side,
                        price_ticks=out.limit_ticks or 100,
                        qty_lots=out.qty_lots,
                        fee_quote=Decimal(0),
                        is_maker=False,
                        fill_id=f"f{i}",
                    ),
                    ts,
                )
        assert abs(agent.core.position_lots + agent.pending_lots()) <= limit
        for r in agent.drain_requests():
            agent.on_decision(
                r.request_id,
                LlmDecision(action=action, size_fraction=size, confidence=conf, rationale=""),  # type: ignore[arg-type]
                ts,
            )


def test_a_feature_from_after_the_decision_time_is_refused(quotes: list[Quote]) -> None:
    """An out-of-order feed: a book update stamped 7 s on arrives before a trade stamped 6 s
    on. At the trade a decision is due, but the book its features read was known only after
    the trade's time: the request is refused, counted and queued for storage, never sent."""
    from sapphire.model.events import Trade

    agent = LlmAgent("llm-1", BTC, {"decision_timeout_ns": 60 * NS, "fallback": "hold"})
    first, ahead = quotes[0], quotes[1]
    t0 = first.ts_event_ns
    agent.on_event(first, t0)
    (request,) = agent.drain_requests()
    future = Quote(
        ts_event_ns=t0 + 7 * NS,
        symbol="BTCUSDT",
        bid_ticks=ahead.bid_ticks,
        bid_lots=ahead.bid_lots,
        ask_ticks=ahead.ask_ticks,
        ask_lots=ahead.ask_lots,
    )
    agent.on_event(future, future.ts_event_ns)  # a request is still in flight: none issued
    agent.on_decision(request.request_id, LlmDecision(**_HOLD), t0 + 7 * NS)
    trade = Trade(
        ts_event_ns=t0 + 6 * NS,
        symbol="BTCUSDT",
        price_ticks=ahead.bid_ticks,
        qty_lots=1,
        taker_side=Side.BUY,
    )
    agent.on_event(trade, trade.ts_event_ns)
    assert agent.drain_requests() == []
    assert agent.stats.refused == 1 and agent.state.fallbacks == 1
    (outcome,) = agent.drain_outcomes()
    assert outcome.ts_event_ns == trade.ts_event_ns and outcome.fallback == "hold"
    assert outcome.error.startswith("lookahead: mid as of ")
    assert "after the decision time" in outcome.error


_HOLD = {"action": "hold", "size_fraction": 0.0, "confidence": 0.0, "rationale": ""}


def test_a_refused_or_failed_answer_hands_the_decision_to_the_fallback(
    quotes: list[Quote],
) -> None:
    """What the bridge passes under ``point_in_time: strict`` (or on a transport error): no
    model output, a reason; the fallback's decision is returned for the stored row."""
    agent = LlmAgent("llm-1", BTC, {"fallback": "momentum", "fallback_threshold_bps": 0.0})
    events = iter(quotes)
    request = _run_until_request(agent, events)
    reason = "point_in_time: event at 2023-04-05T00:00:00.000000Z is before the model's cutoff"
    acted = agent.on_decision(request.request_id, _buy(), request.ts_event_ns, reason)
    assert acted is not None and acted.confidence == 1.0  # the momentum rule, not the model
    assert acted.action in ("buy", "sell", "hold") and acted.size_fraction == 1.0
    assert agent.stats.refused == 1 and agent.stats.ok == 0 and agent.state.fallbacks == 1
    request = _run_until_request(agent, events)
    agent.on_decision(request.request_id, _buy(), request.ts_event_ns, "error: unreachable")
    assert agent.stats.errors == 1 and agent.state.fallbacks == 2


@pytest.mark.parametrize("max_order_lots", [1, 48, 49, 98, 103, 107, 161, 187, 196, 197, 200])
def test_one_order_step_of_any_max_is_one_step(max_order_lots: int) -> None:
    # the fallback asks for 1/max of the max order: floor(1/49 x 49) was 0, no order
    agent = LlmAgent("a", BTC, {"max_order_lots": max_order_lots, "max_position_lots": 1000})
    assert agent.capped_qty(Side.BUY, 1 / max_order_lots) == BTC.lots_per_step
    assert agent.capped_qty(Side.BUY, 1.0) == max_order_lots * BTC.lots_per_step


def test_an_answer_handed_over_after_its_deadline_is_late_and_the_timeout_row_is_the_requests(
    quotes: list[Quote],
) -> None:
    # answers are handed over before a step's events: one arriving after the deadline, when
    # no event had expired the request yet, was used as valid; its timeout row was stamped
    # when the timeout was noticed, not at the request (its cutoff flag read the wrong time)
    agent = LlmAgent("llm-1", BTC, {"decision_timeout_ns": NS, "fallback": "hold"})
    events = iter(quotes)
    request = _run_until_request(agent, events)
    later = next(q for q in events if q.ts_event_ns > request.deadline_ns)
    assert agent.on_decision(request.request_id, _buy(), later.ts_event_ns) is None
    assert agent.stats.late == 1 and agent.stats.ok == 0
    out = agent.on_event(later, later.ts_event_ns)
    assert not any(isinstance(o, OrderIntent) for o in out)  # the model's buy is not used
    assert agent.stats.timeouts == 1
    (outcome,) = agent.drain_outcomes()
    assert outcome.request_id == request.request_id
    assert outcome.ts_event_ns == request.ts_event_ns  # the request's time


def _quote_at(ts: int, bid: int = 10_000, ask: int = 10_001) -> Quote:
    return Quote(
        ts_event_ns=ts, symbol="BTCUSDT", bid_ticks=bid, bid_lots=5, ask_ticks=ask, ask_lots=5
    )


def test_an_answer_in_time_is_not_traded_after_its_deadline() -> None:
    # answered 1 s into a 2 s deadline, but the symbol's next event came 600 s later: the
    # decision, made for a book long gone, was traded then
    agent = LlmAgent("a", BTC, {"max_order_lots": 1, "decision_timeout_ns": 2 * NS})
    request = _run_until_request(agent, iter([_quote_at(NS)]))
    assert agent.on_decision(request.request_id, _buy(), NS + NS // 2) is not None
    late = agent.on_event(_quote_at(601 * NS, 20_000, 20_001), 601 * NS)
    assert not [o for o in late if isinstance(o, OrderIntent)]
    assert agent.stats.stale == 1
    # in time, it trades
    again = LlmAgent("b", BTC, {"max_order_lots": 1, "decision_timeout_ns": 2 * NS})
    request = _run_until_request(again, iter([_quote_at(NS)]))
    again.on_decision(request.request_id, _buy(), NS + NS // 2)
    on_time = again.on_event(_quote_at(2 * NS), 2 * NS)
    assert [o.side for o in on_time if isinstance(o, OrderIntent)] == [Side.BUY]


def test_working_orders_count_against_their_own_sides_room() -> None:
    agent = LlmAgent("a", BTC, {"max_order_lots": 5, "max_position_lots": 5, "allow_short": False})
    step = BTC.lots_per_step
    agent.core.position_lots = 5 * step
    agent.order(NS, Side.SELL, 5 * step, limit_ticks=10_100)  # resting, may never fill
    # the sell freed no room for buys: at the cap already (it was 5, then a position of 10)
    assert agent.capped_qty(Side.BUY, 1.0) == 0
    flat = LlmAgent("b", BTC, {"max_order_lots": 5, "max_position_lots": 5, "allow_short": False})
    flat.order(NS, Side.BUY, 5 * step, limit_ticks=9_900)  # a resting buy is no long position
    assert flat.capped_qty(Side.SELL, 1.0) == 0  # it sold 5 short with shorting off


def test_a_fill_that_reached_the_agent_after_the_deciding_event_keeps_the_model_out() -> None:
    # the position and PnL in the prompt read a fill that reached the agent at +12 s, for
    # a decision on an event that reached it at +11 s (a runtime out of order)
    agent = LlmAgent("a", BTC, {"max_order_lots": 3, "max_position_lots": 5})
    agent.on_event(_quote_at(NS), NS)
    agent.drain_requests()
    ahead = filled("a", "a-x", 12 * NS, 10_000, 3)
    agent.on_report(ahead, 12 * NS)
    agent.on_event(_quote_at(11 * NS), 11 * NS)
    assert agent.drain_requests() == []  # never asked
    assert agent.stats.refused == 1
    refused = [o for o in agent.drain_outcomes() if "position_lots" in o.error]
    assert [o.ts_event_ns for o in refused] == [11 * NS], refused


def test_a_fill_stamped_after_the_event_but_known_before_the_decision_is_no_lookahead() -> None:
    # a response latency shorter than the feed's: the fill is stamped after the event's
    # exchange time, yet it reached the agent before the event did; the agent knows it
    agent = LlmAgent("a", BTC, {"max_order_lots": 3, "max_position_lots": 5})
    feed = 2 * NS
    agent.on_event(_quote_at(NS), NS + feed)
    agent.drain_requests()
    fill = filled("a", "a-x", 11 * NS + NS // 2, 10_000, 3)
    agent.on_report(fill, 12 * NS)  # arrived at 12 s, the event below at 11 + 2 = 13 s
    agent.on_event(_quote_at(11 * NS), 11 * NS + feed)
    assert len(agent.drain_requests()) == 1


def test_a_noted_answer_is_reported_once_acted_on_or_dropped_stale() -> None:
    # the actor layer stored a model answer's row when it handed it over: one dropped at the
    # next event (past its deadline) was stored as the model's decision, nothing traded
    agent = LlmAgent("a", BTC, {"max_order_lots": 1, "decision_timeout_ns": 2 * NS})
    request = _run_until_request(agent, iter([_quote_at(NS)]))
    agent.on_decision(request.request_id, _buy(), NS + NS // 2, note=b"row-1")
    assert agent.drain_outcomes() == []  # its fate is open
    agent.on_event(_quote_at(601 * NS, 20_000, 20_001), 601 * NS)
    (stale,) = agent.drain_outcomes()
    assert stale.note == b"row-1" and stale.error.startswith("stale: ")
    assert stale.request_id == request.request_id and stale.ts_event_ns == request.ts_event_ns
    assert stale.fallback == "" and stale.decision == _buy()
    # acted on in time: reported with no error, once
    again = LlmAgent("b", BTC, {"max_order_lots": 1, "decision_timeout_ns": 2 * NS})
    request = _run_until_request(again, iter([_quote_at(NS)]))
    again.on_decision(request.request_id, _buy(), NS + NS // 2, note=b"row-2")
    on_time = again.on_event(_quote_at(2 * NS), 2 * NS)
    assert [o.side for o in on_time if isinstance(o, OrderIntent)] == [Side.BUY]
    (used,) = again.drain_outcomes()
    assert used.note == b"row-2" and used.error == ""
    again.on_event(_quote_at(3 * NS), 3 * NS)
    assert again.drain_outcomes() == []
    # without a note (its caller stored the row itself) nothing is reported
    plain = LlmAgent("c", BTC, {"max_order_lots": 1, "decision_timeout_ns": 2 * NS})
    request = _run_until_request(plain, iter([_quote_at(NS)]))
    plain.on_decision(request.request_id, _buy(), NS + NS // 2)
    plain.on_event(_quote_at(601 * NS), 601 * NS)
    assert plain.drain_outcomes() == []
