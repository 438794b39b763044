"""Pre-trade risk throughput (issue 15, goal 4): intents/s through every risk check, the
per-intent path vs the batch path, on intents the demo's agents really decide.

1. Runs ``configs/demo.yaml`` (its three agents over the bundled BTCUSDT sample) through
   the in-process kernel, the one ``sapphire backtest`` uses, and records every intent the
   coordinator stage checks, grouped as it checks them (a run of intents with no mark,
   report or other output between them), with the mark each run saw.
2. Scales the stream up: ``--copies`` copies of each agent (``mm_as.0``, ``mm_as.1`` ...),
   each deciding what the original did at the same instant, so every run is ``copies``
   times longer (many agents in one window), under the demo's risk limits.
3. Replays it through fresh ``CoordinatorCore``s (the product's coordinator logic) both ways:
   ``on_output`` per intent (the old path) and ``on_intents`` per run (the batch path, what
   the kernel's coordinator stage now calls), and through the ``RiskEngine`` alone:
   ``check`` per intent vs ``check_batch`` per run. Every path's decisions are compared,
   intent by intent (accepted, reason, detail), before any figure is printed.

    .venv/bin/python benchmarks/risk_throughput.py [--copies 100] [--repeats 3] [--crossing venue]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from sapphire.config.system import load_config
from sapphire.coordination.core import CoordinatorCore, StepResult
from sapphire.kernel.assembly import build_core, load_instruments
from sapphire.kernel.runner import InProcessKernel
from sapphire.model import OrderIntent, Quote
from sapphire.risk.engine import RiskDecision

ROOT = Path(__file__).resolve().parents[1]
Run = tuple[float, list[tuple[str, OrderIntent]]]  # (mark of the run's symbol, intents)


def record_demo(max_events: int | None) -> tuple[Any, list[Run]]:
    """The demo's intents, as the kernel's coordinator stage hands them to risk."""
    config = load_config(ROOT / "configs" / "demo.yaml")
    if max_events is not None:
        config = msgspec.structs.replace(
            config, data=msgspec.structs.replace(config.data, max_events=max_events)
        )
    runs: list[Run] = []
    on_output = CoordinatorCore.on_output
    on_intents = CoordinatorCore.on_intents

    def rec_output(self: CoordinatorCore, agent_id: str, out: Any, result: StepResult) -> None:
        if type(out) is OrderIntent:
            runs.append((self.marks.get(out.symbol) or 0.0, [(agent_id, out)]))
        on_output(self, agent_id, out, result)

    def rec_intents(self: CoordinatorCore, items: Any, result: StepResult) -> None:
        runs.append((self.marks.get(items[0][1].symbol) or 0.0, list(items)))
        # call the original through the unpatched per-intent hook, so nothing is recorded twice
        CoordinatorCore.on_output = on_output  # type: ignore[method-assign]
        try:
            on_intents(self, items, result)
        finally:
            CoordinatorCore.on_output = rec_output  # type: ignore[method-assign]

    CoordinatorCore.on_output = rec_output  # type: ignore[method-assign]
    CoordinatorCore.on_intents = rec_intents  # type: ignore[method-assign]
    try:
        kernel = InProcessKernel(config, "risk-bench")
        kernel.run()
    finally:
        CoordinatorCore.on_output = on_output  # type: ignore[method-assign]
        CoordinatorCore.on_intents = on_intents  # type: ignore[method-assign]
    return config, runs


def scale(runs: list[Run], copies: int) -> list[Run]:
    out: list[Run] = []
    for mark, items in runs:
        big = []
        for agent_id, intent in items:
            for k in range(copies):
                a = f"{agent_id}.{k}"
                big.append((a, msgspec.structs.replace(intent, agent_id=a)))
        out.append((mark, big))
    return out


def new_core(config: Any) -> CoordinatorCore:
    return build_core(config, load_instruments(config.data))  # what the kernel builds


def quote(symbol: str, mark: float, ts: int) -> Quote:
    # a book whose mid is the recorded mark (a mark is a whole or a half tick)
    twice = round(mark * 2)
    bid = (twice - 1) // 2
    return Quote(
        ts_event_ns=ts,
        symbol=symbol,
        bid_ticks=bid,
        bid_lots=1,
        ask_ticks=twice - bid,
        ask_lots=1,
    )


Verdicts = list[tuple[bool, str | None, str]]


def verdicts(decisions: list[RiskDecision]) -> Verdicts:
    return [(d.accepted, d.reason, d.detail) for d in decisions]


def core_per_intent(config: Any, runs: list[Run]) -> tuple[float, Verdicts]:
    core, result = new_core(config), StepResult()
    on_mark, on_output = core.on_mark, core.on_output
    started = time.perf_counter()
    for mark, items in runs:
        on_mark(quote(items[0][1].symbol, mark, items[0][1].ts_event_ns))
        for agent_id, intent in items:
            on_output(agent_id, intent, result)
    return time.perf_counter() - started, verdicts(result.decisions)


def core_batch(config: Any, runs: list[Run]) -> tuple[float, Verdicts]:
    core, result = new_core(config), StepResult()
    on_mark, on_intents = core.on_mark, core.on_intents
    started = time.perf_counter()
    for mark, items in runs:
        on_mark(quote(items[0][1].symbol, mark, items[0][1].ts_event_ns))
        on_intents(items, result)
    return time.perf_counter() - started, verdicts(result.decisions)


def risk_per_intent(config: Any, runs: list[Run]) -> tuple[float, Verdicts]:
    """The risk part of ``on_output`` alone (refresh, open lots, consensus, ``check``), each
    run's accepted lots counted as open, as the journal would between them."""
    core = new_core(config)
    risk, journal, aggregator = core.risk, core.journal, core.aggregator
    out: list[RiskDecision] = []
    started = time.perf_counter()
    for mark, items in runs:
        core.on_mark(quote(items[0][1].symbol, mark, items[0][1].ts_event_ns))
        added: dict[Any, int] = {}
        for _, intent in items:
            now = intent.ts_event_ns
            risk.refresh(now)
            key = (intent.agent_id, intent.symbol, intent.side)
            lots = journal.open_lots(*key) + added.get(key, 0)
            d = risk.check(intent, lots, now, aggregator.consensus(intent.symbol))
            if d.accepted:
                added[key] = added.get(key, 0) + intent.qty_lots
            out.append(d)
    return time.perf_counter() - started, verdicts(out)


def risk_batch(config: Any, runs: list[Run]) -> tuple[float, Verdicts]:
    core = new_core(config)
    risk, journal, aggregator = core.risk, core.journal, core.aggregator
    out: list[RiskDecision] = []
    started = time.perf_counter()
    for mark, items in runs:
        core.on_mark(quote(items[0][1].symbol, mark, items[0][1].ts_event_ns))
        intents = [i for _, i in items]
        risk.refresh(intents[0].ts_event_ns)
        decided = risk.check_batch(intents, journal.open_lots_by_key, aggregator.consensus)
        assert decided is not None
        out.extend(decided)
    return time.perf_counter() - started, verdicts(out)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=100, help="copies of each demo agent")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-events", type=int, default=None, help="a slice of the sample")
    parser.add_argument(
        "--crossing",
        choices=["config", "venue", "internal"],
        default="venue",
        help="the replay's crossing policy; internal (the demo's) scans the firm's open "
        "orders at each accepted order, which grows with the never-filled orders of a "
        "scaled replay and is crossing's cost, not risk's",
    )
    args = parser.parse_args()
    config, recorded = record_demo(args.max_events)
    if args.crossing != "config":
        config = msgspec.structs.replace(
            config,
            coordinator=msgspec.structs.replace(config.coordinator, crossing=args.crossing),
        )
    n_demo = sum(len(items) for _, items in recorded)
    runs = [r for r in scale(recorded, args.copies) if r[0] > 0]
    n = sum(len(items) for _, items in runs)
    lengths = sorted(len(items) for _, items in runs)
    print(
        f"demo intents recorded: {n_demo:,} in {len(recorded):,} runs; scaled x{args.copies}"
        f" -> {n:,} intents, {len(runs):,} runs (median {lengths[len(lengths) // 2]},"
        f" max {lengths[-1]} per run)"
    )
    print(f"crossing: {config.coordinator.crossing}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  cpus: {os.cpu_count()}")
    paths: dict[str, Callable[[Any, list[Run]], tuple[float, Verdicts]]] = {
        "core, on_output per intent (old)": core_per_intent,
        "core, on_intents per run (batch)": core_batch,
        "risk only, check per intent (old)": risk_per_intent,
        "risk only, check_batch per run": risk_batch,
    }
    rates: dict[str, list[float]] = {k: [] for k in paths}
    seen: dict[str, Verdicts] = {}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            seconds, got = fn(config, runs)
            rates[name].append(n / seconds)
            seen[name] = got
    names = list(paths)
    if seen[names[0]] != seen[names[1]] or seen[names[2]] != seen[names[3]]:
        print("error: the batch path decided differently from the per-intent path")
        return 1
    accepted = sum(1 for v in seen[names[1]] if v[0])
    reasons: dict[str, int] = {}
    for v in seen[names[1]]:
        if v[1] is not None:
            reasons[str(v[1])] = reasons.get(str(v[1]), 0) + 1
    print(f"decisions equal on every path; accepted {accepted:,}, denied {reasons}")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for name in names:
        print(f"{name:<36}: {med[name]:>12,.0f} intents/s")
    print(f"ratio core batch / per intent       : {med[names[1]] / med[names[0]]:>12.2f}x")
    print(f"ratio risk check_batch / check      : {med[names[3]] / med[names[2]]:>12.2f}x")
    goal = med[names[3]] >= 1_000_000
    print(f"goal >= 1,000,000 intents/s through every risk check: {'met' if goal else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
