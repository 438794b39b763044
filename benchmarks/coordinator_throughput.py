"""Agent -> coordinator message throughput on this machine, batched vs one call per message.

Each producer actor stands for an agent: it sends OrderIntents (msgpack-encoded batches) to
one coordinator actor that runs them through the real pre-trade risk and the order journal
(``CoordinatorCore``) - or, for the transport-only figure, just decodes and routes them.
The naive baseline sends one intent per actor call. Prints messages/s and the ratio.

    .venv/bin/python benchmarks/coordinator_throughput.py [--messages 1000000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from decimal import Decimal
from typing import Any

import ray

from actors.codec import decode_messages, encode_messages
from sapphire.coordination.core import CoordinatorCore
from sapphire.data.sample import sample_instrument
from sapphire.model import OrderIntent, Quote, Side
from sapphire.risk.limits import AgentLimits, RiskLimits

INSTRUMENT = sample_instrument()
LIMITS = RiskLimits(
    price_band_bps=10_000,
    default_agent=AgentLimits(
        max_position_lots=10**12,
        max_notional_quote="1e18",
        max_order_lots=10**9,
        max_orders_per_second=10**9,
        max_daily_loss_quote="1e18",
    ),
    max_firm_daily_loss_quote="1e18",
)
MID = 600_000


def intents(agent_id: str, start: int, n: int) -> list[OrderIntent]:
    return [
        OrderIntent(
            ts_event_ns=start + i,
            agent_id=agent_id,
            seq=start + i,
            symbol=INSTRUMENT.symbol,
            side=Side.BUY if i % 2 else Side.SELL,
            qty_lots=2 + i % 3,
            limit_ticks=MID - 5 + i % 10,
        )
        for i in range(n)
    ]


@ray.remote(num_cpus=0)
class BenchCoordinator:
    def __init__(self) -> None:
        self.core = CoordinatorCore({INSTRUMENT.symbol: INSTRUMENT}, LIMITS, Decimal("1e12"), {})
        quote = Quote(
            ts_event_ns=0,
            symbol=INSTRUMENT.symbol,
            bid_ticks=MID - 1,
            bid_lots=9,
            ask_ticks=MID + 1,
            ask_lots=9,
        )
        self.core.step([quote], [], {}, 0)
        self.routed: dict[str, int] = {}

    def ingest(self, agent_id: str, data: bytes) -> int:
        outputs = decode_messages(data)
        result = self.core.step([], [], {agent_id: outputs}, outputs[-1].ts_event_ns)
        return len(result.decisions)

    def route_only(self, agent_id: str, data: bytes) -> int:
        outputs = decode_messages(data)
        self.routed[agent_id] = self.routed.get(agent_id, 0) + len(outputs)
        return len(outputs)

    def ingest_one(self, agent_id: str, intent: OrderIntent) -> int:
        result = self.core.step([], [], {agent_id: [intent]}, intent.ts_event_ns)
        return len(result.decisions)


@ray.remote(num_cpus=0)
class Producer:
    def __init__(self, agent_id: str, coordinator: Any) -> None:
        self.agent_id = agent_id
        self.coordinator = coordinator

    def prepare(self, n: int, batch: int) -> int:
        self.batches = [
            encode_messages(intents(self.agent_id, start, batch)) for start in range(0, n, batch)
        ]
        self.singles = intents(self.agent_id, 10**9, min(n, 2000))
        return len(self.batches)

    def send(self, method: str) -> int:
        call = getattr(self.coordinator, method)
        refs = [call.remote(self.agent_id, data) for data in self.batches]
        return sum(ray.get(refs))

    def send_singles(self) -> int:
        # one actor call per message, pipelined (not one round trip each): the best case
        refs = [self.coordinator.ingest_one.remote(self.agent_id, i) for i in self.singles]
        return sum(ray.get(refs))


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    per_producer = args.messages // args.producers
    results: dict[str, list[float]] = {"risk": [], "route": [], "naive": []}
    for _ in range(args.repeats):
        coordinator = BenchCoordinator.remote()
        producers = [Producer.remote(f"agent{i}", coordinator) for i in range(args.producers)]
        ray.get([p.prepare.remote(per_producer, args.batch) for p in producers])
        for key, method in (("route", "route_only"), ("risk", "ingest")):
            send = [p.send for p in producers]
            seconds, counts = timed(lambda m=method, fs=send: ray.get([f.remote(m) for f in fs]))
            results[key].append(sum(counts) / seconds)
        seconds, counts = timed(lambda ps=producers: ray.get([p.send_singles.remote() for p in ps]))
        results["naive"].append(sum(counts) / seconds)
        for actor in [coordinator, *producers]:
            ray.kill(actor)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"producers={args.producers} messages={args.messages:,} batch={args.batch:,} "
        f"repeats={args.repeats}"
    )
    print(f"batched, decode + route only        : {med['route']:>12,.0f} msg/s")
    print(f"batched, through risk + journal     : {med['risk']:>12,.0f} msg/s")
    print(f"naive, one actor call per message   : {med['naive']:>12,.0f} msg/s (pipelined)")
    print(f"ratio batched(risk) / naive         : {med['risk'] / med['naive']:>12.1f}x")
    print(f"ratio batched(route) / naive        : {med['route'] / med['naive']:>12.1f}x")


if __name__ == "__main__":
    main()
