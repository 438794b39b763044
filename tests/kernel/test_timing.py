"""One clock and the named latencies: acks, fills and denials reach agents exactly after the
configured latencies, whatever the recorder's clock did; feed latency changes what agents see."""

from __future__ import annotations

from typing import Any

import pytest

from sapphire.kernel.runner import InProcessKernel
from tests.kernel.conftest import LATENCY, kernel_config

PROBE = {"id": "probe", "kind": "tests.kernel.probes:ProbeAgent", "symbol": "BTCUSDT"}


def probe_run(clock: str = "exchange", latency: dict[str, int] = LATENCY, **params: Any) -> Any:
    config = kernel_config(
        agents=[{**PROBE, "params": {"qty_lots": 5, **params}}],  # 5 lots: above min notional
        data={"clock": clock, "max_events": 20_000},
        exchange={"params": {"balances": {"USDT": "100000", "BTC": "0"}, "latency": latency}},
    )
    kernel = InProcessKernel(config, "probe")
    kernel.run()
    agent: Any = kernel.agents.agents["probe"]
    return kernel, agent.log


def first_quote_seen(log: list[tuple[str, int, int]]) -> tuple[int, int]:
    return next((ts, now) for kind, ts, now in log if kind == "Quote")


@pytest.mark.parametrize("clock", ["exchange", "receive"])
def test_ack_reaches_the_agent_after_exactly_the_configured_latencies(clock: str) -> None:
    _, log = probe_run(clock)
    ts, seen = first_quote_seen(log)
    assert seen == ts + LATENCY["feed_ns"]
    decided = seen + LATENCY["decision_ns"]
    acks = [(kind, t, now) for kind, t, now in log if kind.startswith("OrderUpdate")]
    assert acks, "the probe's order must be answered"
    kind, venue_ts, now = acks[0]
    assert "accepted" in kind
    # the venue took it when it arrived, and the answer came back one response later
    assert venue_ts == decided + LATENCY["entry_ns"]
    assert now == venue_ts + LATENCY["response_ns"]


def test_the_recorders_clock_offset_does_not_delay_the_exchange_clock() -> None:
    """On the sample the recorder's clock lags the exchange's by over a second; on the
    exchange clock that lag must not appear anywhere in the order's round trip."""
    _, log = probe_run("exchange")
    _, seen = first_quote_seen(log)
    ack = next(x for x in log if x[0].startswith("OrderUpdate"))
    round_trip = ack[2] - seen
    assert round_trip == sum(LATENCY[k] for k in ("decision_ns", "entry_ns", "response_ns"))
    assert round_trip < 100_000_000  # far below the 1.3-1.5 s clock offset


def test_feed_latency_changes_when_agents_see_events() -> None:
    slow = {**LATENCY, "feed_ns": 50_000_000}
    _, fast_log = probe_run()
    _, slow_log = probe_run(latency=slow)
    ts_fast, seen_fast = first_quote_seen(fast_log)
    ts_slow, seen_slow = first_quote_seen(slow_log)
    assert ts_fast == ts_slow
    assert seen_slow - seen_fast == 48_000_000
    # and so the order reaches the venue later (at a different book)
    fast_ack = next(x for x in fast_log if x[0].startswith("OrderUpdate"))
    slow_ack = next(x for x in slow_log if x[0].startswith("OrderUpdate"))
    assert slow_ack[1] - fast_ack[1] == 48_000_000


def test_an_oversized_order_is_denied_by_risk_for_its_size_not_sent() -> None:
    kernel, log = probe_run(qty_lots=21)  # max_order_lots is 20
    denials = [x for x in log if x[0].startswith("OrderDenied")]
    assert len(denials) == 1
    assert "risk_order_size" in denials[0][0]
    # a denial reaches its agent one lookahead after the decision
    assert denials[0][2] == denials[0][1] + min(LATENCY["entry_ns"], LATENCY["response_ns"])
    venue: Any = kernel.venue.gateway
    assert venue.orders() == [], "a denied order never reaches the venue"
    assert kernel.summary()["risk_rejections"] == {"risk_order_size": 1}


def test_a_far_limit_on_a_market_order_does_not_shrink_its_notional() -> None:
    # 15 lots of BTC at ~29k: ~435 USDT; cap 300 USDT. A 1-tick "limit" on the MARKET
    # order used to value it at almost nothing.
    config_limits = {"max_notional_quote": "300", "max_order_lots": 20}
    config = kernel_config(
        agents=[{**PROBE, "params": {"qty_lots": 15, "market": True, "far_limit_ticks": 1}}],
        data={"max_events": 20_000},
        risk={"price_band_bps": 50, "default_agent": config_limits},
    )
    kernel = InProcessKernel(config, "far")
    kernel.run()
    assert kernel.summary()["risk_rejections"] == {"risk_max_notional": 1}


def test_a_latency_block_naming_only_some_fields_gets_the_defaults_for_the_rest() -> None:
    """Entry and response default to 1 ms whether the block is left out or only part of it
    is written (a block naming only ``feed_ns`` gave them 0, which no window can use)."""
    from sapphire.config.system import ExchangeConfig
    from sapphire.kernel import assembly

    partial = ExchangeConfig(kind="paper", params={"latency": {"feed_ns": 5_000_000}})
    latency = assembly.venue_params(partial)["latency"]
    assert latency["feed_ns"] == 5_000_000
    assert latency["entry_ns"] == latency["response_ns"] == 1_000_000
    config = kernel_config(exchange={"params": {"latency": {"feed_ns": 5_000_000}}})
    timing = assembly.timing(config)
    assert (timing.feed_ns, timing.entry_ns, timing.response_ns) == (5_000_000, 10**6, 10**6)
    explicit = ExchangeConfig(kind="paper", params={"latency": {"entry_ns": 0}})
    assert assembly.venue_params(explicit)["latency"]["entry_ns"] == 0  # refused by the kernel
