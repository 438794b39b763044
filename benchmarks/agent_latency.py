"""Agent tick -> output latency (pure logic) and backtest engine throughput.

Run: ``.venv/bin/python benchmarks/agent_latency.py [--events N]``

* per agent: ``on_event`` wall time per event on real Binance spot BTCUSDT quotes + trades
  (hftbacktest session 2024-08-08), p50/p95/p99 in microseconds; goal p95 <= 10 us;
  the indicator agent is timed per bar on real 1m bars (it recomputes its window per bar);
* vectorized engine: bars/s on the whole ETH/BTC 5m file (EmaCross), signals included;
* event-driven engine: events/s of the same bars through IndicatorAgent + BarGateway, and
  of the momentum agent on real depth + BBO + trades through the paper exchange.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

from sapphire.agents.bar_policy import StakeConfig
from sapphire.agents.indicator import load_strategy
from sapphire.agents.registry import build_agent
from sapphire.backtest import _loaders
from sapphire.backtest.bar_gateway import BarCosts, BarGateway
from sapphire.backtest.event_driven import run_event_driven
from sapphire.backtest.vectorized import run_vectorized
from sapphire.exchange.config import PaperExchangeBuilder
from sapphire.exchange.paper import PaperExchange
from sapphire.model import Instrument
from sapphire.model.events import AnyMarketEvent

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
INST = Instrument(
    symbol="BTCUSDT",
    base="BTC",
    quote="USDT",
    tick_size="0.01",
    lot_size="0.00001",
    maker_fee_bps="0",
    taker_fee_bps="1",
)
TICK_AGENTS = {
    "momentum": {"fast_span": 20, "slow_span": 200, "threshold_bps": 0.05, "order_lots": 100},
    "mean_reversion": {"window": 200, "entry_z": 2.0, "order_lots": 100, "allow_short": True},
    "avellaneda_stoikov": {"order_amount": 0.001, "max_inventory": 0.01},
}


def percentiles(samples_ns: list[int]) -> str:
    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    p50, p95, p99 = np.percentile(us, [50, 95, 99])
    return f"p50 {p50:7.2f} us  p95 {p95:7.2f} us  p99 {p99:8.2f} us  (n={us.size})"


def time_agent(agent: object, events: list[AnyMarketEvent]) -> list[int]:
    on_event = agent.on_event  # type: ignore[attr-defined]
    clock = time.perf_counter_ns
    samples = []
    gc.disable()
    try:
        for event in events:
            t0 = clock()
            on_event(event, event.ts_event_ns)
            samples.append(clock() - t0)
    finally:
        gc.enable()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000)
    args = parser.parse_args()
    events = _loaders.hftbacktest_events(
        DATA / "book/hftbacktest_binance-spot_BTCUSDT_bbo.csv.gz",
        DATA / "trades/hftbacktest_binance-spot_BTCUSDT_trades.csv.gz",
        INST,
        "2024-08-08",
        limit=args.events,
    )
    print(f"agent latency, on_event per event, {len(events)} real BBO+trade events")
    for kind, params in TICK_AGENTS.items():
        build_agent(kind, "warm", INST, params)
        samples = time_agent(build_agent(kind, "bench", INST, params), events)
        print(f"  {kind:20s} {percentiles(samples)}")

    raw = _loaders.read_ohlcv(DATA / "ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv")
    binst = _loaders.instrument_for(raw, "X")
    bframe = _loaders.tick_frame(raw, binst)
    bars = list(_loaders.bar_events(bframe, "X"))
    for kind in ("indicator:EmaCross", "indicator:RsiBollinger"):
        samples = time_agent(build_agent(kind, "bench", binst, {}), bars)  # type: ignore[arg-type]
        start = 400 if "Ema" in kind else 500
        print(f"  {kind:20s} {percentiles(samples[start:])}  (per bar, window recompute)")
        primed = build_agent(kind, "bench", binst, {})
        t0 = time.perf_counter()
        primed.prime(bframe)  # type: ignore[attr-defined]
        prime_ms = (time.perf_counter() - t0) * 1e3
        samples = time_agent(primed, bars)  # type: ignore[arg-type]
        print(
            f"  {kind + ' primed':20s} {percentiles(samples[start:])}  (per bar, signals from "
            f"prime() over the history: {prime_ms:.1f} ms once for {bframe.height} bars)"
        )

    raw = _loaders.read_ohlcv(DATA / "ohlcv/freqtrade_ETH-BTC_5m_2018-01.csv.gz")
    einst = _loaders.instrument_for(raw, "X")
    frame = _loaders.tick_frame(raw, einst)
    costs = BarCosts(fee_bps=Decimal(10), slippage_bps=Decimal(2))
    stake = StakeConfig(stake_fraction=0.5, initial_cash=Decimal(1000))
    strategy = load_strategy("EmaCross")
    best = min(
        _timed(lambda: run_vectorized(strategy, frame, einst, costs, stake)) for _ in range(5)
    )
    print(
        f"vectorized engine (EmaCross, ETH/BTC 5m): {frame.height / best:,.0f} bars/s "
        f"({frame.height} bars in {best * 1e3:.1f} ms)"
    )
    t0 = time.perf_counter()
    agent = build_agent(
        "indicator:EmaCross", "e", einst, {"stake": {"stake_fraction": 0.5, "initial_cash": "1000"}}
    )
    run_event_driven(
        agent, _loaders.bar_events(frame, "X"), BarGateway(einst, costs), einst, Decimal(1000)
    )
    dt = time.perf_counter() - t0
    print(
        f"event-driven engine, same bars, IndicatorAgent: {frame.height / dt:,.0f} events/s "
        f"(ratio vectorized/event {dt / best:.0f}x)"
    )

    depth = _loaders.hftbacktest_depth_events(
        DATA / "book/hftbacktest_binance-spot_BTCUSDT_depth.csv.gz", INST, "2024-08-08"
    )
    end = depth[0].ts_event_ns + 300 * 10**9
    depth = [e for e in depth if e.ts_event_ns <= end]
    ticks = [e for e in events if depth[0].ts_event_ns <= e.ts_event_ns <= end]
    stream = _loaders.merge_events(depth, ticks)
    for kind in ("momentum", "avellaneda_stoikov"):
        gateway = PaperExchange(
            PaperExchangeBuilder()
            .instrument(INST)
            .balance("USDT", "1000000")
            .balance("BTC", "10")
            .config()
        )
        agent = build_agent(kind, "e", INST, TICK_AGENTS[kind])
        t0 = time.perf_counter()
        run_event_driven(
            agent, stream, gateway, INST, Decimal(10_000), mark_interval_ns=1_000_000_000
        )
        dt = time.perf_counter() - t0
        print(
            f"event-driven engine, {kind} + paper exchange on depth+BBO+trades: "
            f"{len(stream) / dt:,.0f} events/s ({len(stream)} events)"
        )
    return 0


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
