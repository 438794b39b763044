"""Tick -> order-at-the-venue latency through the actors: p50/p95/p99, goal p95 <= 1 ms.

Four paths, each in the same run and on the same data (bundled BTCUSDT sample, the agents
and risk limits of configs/demo.yaml):
  lockstep b=1    the main system (CoordinatorActor.run_step) with data.batch_events=1: a
                  tick's latency is its step's feed+signal+risk+exchange_ack stages
                  (storage and checkpoint come after the venue has the order);
  lockstep b=N    the same with the default batch (2000): every tick of a batch gets the
                  batch's stages; "+fill" adds the market time the tick waited for its batch to
                  fill (the last event's ts - its own), which is what a live tick would see;
  fastpath        actors.fastpath.FastPath, a Ray Compiled Graph, one tick per execution:
                  driver -> agents (one actor each, parallel) -> risk -> venue ack, stamped
                  by the venue; "1 agent actor": all agents in one actor (one process less);
  naive actors    the same nodes and chain with plain actor calls (ObjectRefs chained);
  in-process      the same nodes in the driver (no Ray): the floor.

    .venv/bin/python benchmarks/tick_to_order_latency.py [--ticks 2000] [--lockstep-ticks 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import msgspec
import ray

from actors.fastpath import FastPath, Mode, replay_events
from actors.system import drive, finish, shutdown_system, start_system
from sapphire.config.system import SystemConfig, load_config

LOCKSTEP_STAGES = ("feed", "signal", "risk", "exchange_ack")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, seconds: list[float], extra: str = "") -> str:
    us = [s * 1e6 for s in seconds]
    return (
        f"{name:<26} n={len(us):>6}  p50={pct(us, 0.5):>9,.0f}  p95={pct(us, 0.95):>9,.0f}  "
        f"p99={pct(us, 0.99):>9,.0f} us  {extra}"
    )


def emit(rows: list[str], row: str) -> None:
    rows.append(row)
    print(row, flush=True)  # as it comes: a long run on a busy host still shows something


def config_for(base: SystemConfig, root: str, batch: int, max_events: int) -> SystemConfig:
    return msgspec.structs.replace(
        base,
        data=msgspec.structs.replace(base.data, batch_events=batch, max_events=max_events),
        storage=msgspec.structs.replace(base.storage, root=root),
    )


def lockstep(config: SystemConfig, warmup_steps: int) -> tuple[list[float], list[float]]:
    """Per-tick latency (processing only, and with the batch-fill wait) of one system run."""
    events = replay_events(config, config.data.max_events or 0)
    handles = start_system(config, f"lat-b{config.data.batch_events}-{time.monotonic_ns()}")
    steps: list[dict[str, Any]] = []
    try:
        n = drive(handles, on_step=steps.append)
        finish(handles, n, 0.0)
    finally:
        shutdown_system(handles)
    processing, with_fill = [], []
    consumed = 0
    for progress in steps:
        batch = events[consumed : consumed + progress["events"]]
        consumed += len(batch)
        if progress["step"] < warmup_steps or not batch:
            continue
        stages = sum(progress["stage_s"][s] for s in LOCKSTEP_STAGES)
        closed_ns = max(e.ts_recv_ns or e.ts_event_ns for e in batch)
        for event in batch:
            processing.append(stages)
            with_fill.append(stages + (closed_ns - (event.ts_recv_ns or event.ts_event_ns)) / 1e9)
    return processing, with_fill


def fastpath(
    config: SystemConfig, mode: Mode, ticks: int, warmup: int, agent_actors: int | None = None
) -> tuple[dict[str, list[float]], list[Any]]:
    events = replay_events(config, ticks + warmup)
    path = FastPath(config, mode=mode, agent_actors=agent_actors)
    try:
        results = list(path.run(events, 1))[warmup:]
        idle = idle_cores() if mode == "compiled" else 0.0
    finally:
        venue, _ = path.close()
    return {
        "idle_cores": [idle],
        "to_venue": [r.to_venue_s for r in results],
        "round_trip": [r.round_trip_s for r in results],
        "to_risk": [r.risk_done - r.started for r in results],
        "risk_to_venue": [r.venue_done - r.risk_done for r in results],
        "orders": [r.to_venue_s for r in results if r.commands],
    }, [*venue.orders(), *venue.fills]


def idle_cores(seconds: float = 2.0) -> float:
    """CPU the fast path's actors burn with no tick in flight (compiled-graph readers poll)."""
    try:
        import psutil
    except ImportError:  # ray[default] brings it; bare ray does not
        return float("nan")
    names = ("ray::AgentNode", "ray::RiskNode", "ray::VenueNode")
    procs = [
        p
        for p in psutil.process_iter(["cmdline"])
        if (p.info["cmdline"] or [""])[0].startswith(names)
    ]
    before = [sum(p.cpu_times()[:2]) for p in procs]
    time.sleep(seconds)
    after = [sum(p.cpu_times()[:2]) for p in procs]
    return (sum(after) - sum(before)) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--ticks", type=int, default=2000, help="fast-path ticks per mode")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--lockstep-ticks", type=int, default=1000, help="steps at batch 1")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--batch-events", type=int, default=40_000)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    base = load_config(args.config)
    print(f"load average before: {os.getloadavg()}", flush=True)
    ray.init(
        address="local",  # a new cluster, even where another one runs on this host
        num_cpus=args.num_cpus,
        include_dashboard=False,
        logging_level="ERROR",
    )
    rows: list[str] = []
    p95: dict[str, float] = {}
    venues: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="sapphire-lat-") as root:
        cfg1 = config_for(base, root, 1, args.lockstep_ticks + 20)
        proc, _ = lockstep(cfg1, warmup_steps=20)
        emit(rows, line("lockstep b=1", proc))
        p95["lockstep b=1"] = pct(proc, 0.95)
        cfg_n = config_for(base, root, args.batch, args.batch_events)
        proc, fill = lockstep(cfg_n, warmup_steps=1)
        emit(rows, line(f"lockstep b={args.batch}", proc, "(processing only)"))
        emit(rows, line(f"lockstep b={args.batch} +fill", fill, "(incl. wait for batch)"))
        p95[f"lockstep b={args.batch}"] = pct(proc, 0.95)
        paths: list[tuple[Mode, str, int | None]] = [
            ("compiled", "fastpath", None),
            ("compiled", "fastpath 1 agent actor", 1),
            ("actors", "naive actors", None),
            ("local", "in-process", None),
        ]
        for mode, name, agent_actors in paths:
            got, traded = fastpath(cfg1, mode, args.ticks, args.warmup, agent_actors)
            venues.append(traded)
            hops = (
                f"tick->risk p50 {pct(got['to_risk'], 0.5) * 1e6:,.0f} us, "
                f"risk->venue p50 {pct(got['risk_to_venue'], 0.5) * 1e6:,.0f} us"
            )
            emit(rows, line(f"{name} (tick->venue ack)", got["to_venue"], hops))
            emit(rows, line(f"{name} (round trip)", got["round_trip"]))
            if got["orders"]:
                emit(rows, line(f"{name} (ticks with orders)", got["orders"]))
            if mode == "compiled":
                emit(rows, f"{name}: its actors burn {got['idle_cores'][0]:.2f} cores while idle")
            p95[name] = pct(got["to_venue"], 0.95)
    agents = ", ".join(f"{a.id}:{a.kind}" for a in base.agents)
    print(f"agents: {agents}; ray num_cpus={args.num_cpus}; host cores={os.cpu_count()}")
    print("\n".join(rows))
    print(f"load average after: {os.getloadavg()}")
    same = all(v == venues[0] for v in venues)
    print(f"venue orders+fills identical across the fast-path modes: {same} ({len(venues[0])})")
    for name in ("fastpath", "fastpath 1 agent actor"):
        print(f"{name} p95 <= 1 ms goal: {'MET' if p95[name] <= 1e-3 else 'NOT MET'}")
    for name in ("naive actors", "lockstep b=1", f"lockstep b={args.batch}"):
        print(f"p95 ratio {name} / fastpath: {p95[name] / p95['fastpath']:.1f}x")
    print(
        f"p95 ratio fastpath / in-process (Ray's cost): {p95['fastpath'] / p95['in-process']:.0f}x"
    )


if __name__ == "__main__":
    main()
