"""Scale-out by shards (issue 15, goal 6): the Ray system with 1 and 2 shards on a
``ray.cluster_utils.Cluster`` of a head and two worker nodes on this machine, and the model
that predicts N nodes from measured inputs.

    .venv/bin/python benchmarks/shards.py [--rounds 2] [--seconds 88]

Both runs are ``configs/demo_shards.yaml`` (Binance USDT-M and spot BTCUSDT, two agents
each) through ``actors.system.run_system``, the function ``sapphire run`` calls, with
``ray.address`` set to the cluster: the core actors (coordinator, sink) on the head node,
each shard's venue and agent actors on the worker node its resources name.

- 1 shard: one venue account for both symbols; its venue and both agent actors on node A,
  the market data (one reader of the merged replay) on the head node.
- 2 shards: USDT-M's venue, agents and market data (reading USDT-M's files) on node A,
  spot's on node B; the coordinator merges the two readers' sources. Firm-wide risk (capital,
  the firm's daily loss, the kill switch) stays in the one coordinator, exact by
  construction; ``tests/actors/test_shards.py`` checks the sharded Ray run stores exactly
  what ``sapphire backtest`` stores.

The model. A window is one step: the coordinator cuts it and runs its stage over every event
(serial: risk, the journal, marks, rows), and sends one round to the shards' leaves (each
shard's venue and agent actors), which run in parallel when each shard has cores of its own:

    T(N) = E * c_serial  +  W * (r0 + r1 * L(N))  +  (E / N) * c_shard
    events/s(N) = E / T(N)

E events, W windows; c_serial the coordinator's serial time per event on Ray (its stages
other than the round: the feed, risk, acks, storage, checkpoints), c_shard the venues' and
agents' cost per event (their stages timed in one process), r0 + r1 * L the round's
transport per window with L leaves (the round's wall on Ray less its leaves' compute,
fitted on the 1- and 2-shard runs).
On this 2-core machine the three nodes share the same two cores, so the measured 2-shard
run cannot show the parallel term; the model's inputs are measured here and its
prediction for N nodes assumes a node's cores per shard.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.cluster_utils import Cluster

from actors.system import run_system
from sapphire.config.system import parse_config
from sapphire.kernel.runner import InProcessKernel

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo_shards.yaml"
USDM, SPOT = "USDM:BTCUSDT", "SPOT:BTCUSDT"


def config(root: Path, shards: int, address: str, seconds: int) -> Any:
    raw: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    raw["data"]["end_ns"] = raw["data"]["start_ns"] + seconds * 1_000_000_000
    raw["storage"]["root"] = str(root)
    raw["console"] = {"enabled": False}
    raw["ray"] = {"address": address, "core_resources": {"core": 0.01}}
    if shards == 1:
        raw["shards"] = [{"symbols": [USDM, SPOT], "resources": {"shard-a": 0.01}}]
    else:
        raw["shards"] = [
            {"symbols": [USDM], "resources": {"shard-a": 0.01}},
            {"symbols": [SPOT], "resources": {"shard-b": 0.01}},
        ]
    return parse_config(raw)


def on_ray(cfg: Any, run_id: str) -> dict[str, Any]:
    result = run_system(cfg, run_id=run_id)
    if result.failure or result.unacked_rows:
        raise SystemExit(f"{run_id}: failed: {result.failure or result.unacked_rows}")
    s = result.summary
    return {
        "wall_s": result.wall_s,
        "steps": result.steps,
        "steady_events": int(s["steady"]["events"]),
        "steady_s": float(s["steady"]["s"]),
        "stage_s": dict(s["stage_s"]),
        "fills": s["fills"],
    }


def in_process(cfg: Any) -> dict[str, Any]:
    """The same stages in one process, each timed: the model's per-event costs."""
    kernel = InProcessKernel(cfg, "probe")
    timed: dict[str, float] = {"venue": 0.0, "agents": 0.0, "coordinator": 0.0}
    for name, stages in (("venue", kernel.venues), ("agents", kernel.agent_stages)):
        for stage in stages:
            original = stage.step

            def step(*args: Any, _f: Any = original, _n: str = name) -> Any:
                t = time.perf_counter()
                out = _f(*args)
                timed[_n] += time.perf_counter() - t
                return out

            stage.step = step  # type: ignore[method-assign]
    coord_step = kernel.coordinator.step

    def coordinator_step(*args: Any) -> Any:
        t = time.perf_counter()
        out = coord_step(*args)
        timed["coordinator"] += time.perf_counter() - t
        return out

    kernel.coordinator.step = coordinator_step  # type: ignore[method-assign]
    started = time.perf_counter()
    kernel.run()
    wall = time.perf_counter() - started
    summary = kernel.summary()
    # rows, as every events/s figure here counts them (a depth message counts its levels)
    events = kernel.cutter.state.rows
    out: dict[str, Any] = {f"{k}_s": v for k, v in timed.items()}
    return {
        **out,
        "wall_s": wall,
        "events": events,
        "steps": kernel.steps,
        "fills": summary["fills"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=88, help="trading seconds of the data")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"core": 8}, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=2, resources={"shard-a": 8})
    cluster.add_node(num_cpus=2, resources={"shard-b": 8})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="sapphire-shards-bench")
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    probes: dict[int, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="sapphire-shards-") as tmp:
            root = Path(tmp)
            for n in (1, 2):
                probes[n] = in_process(config(root, n, cluster.address, args.seconds))
            for r in range(args.rounds):
                for n in (1, 2):
                    got = on_ray(config(root, n, cluster.address, args.seconds), f"s{n}-{r}")
                    runs[n].append(got)
                    print(
                        f"  {n} shard(s), round {r}: {got['steady_events']:,} events in "
                        f"{got['steady_s']:.2f} s after start-up, wall {got['wall_s']:.1f} s, "
                        f"fills {got['fills']}"
                    )
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"load average after: {os.getloadavg()}")
    print()
    print("shards  events/s (after start-up, median)  steps  fills  in-process fills")
    rate: dict[int, float] = {}
    for n in (1, 2):
        rate[n] = statistics.median(g["steady_events"] / g["steady_s"] for g in runs[n])
        print(
            f"{n:>6}  {rate[n]:>30,.0f}  {runs[n][0]['steps']:>5}  {runs[n][0]['fills']:>5}"
            f"  {probes[n]['fills']:>16}"
        )
        if runs[n][0]["fills"] != probes[n]["fills"]:
            raise SystemExit(f"{n} shard(s): the Ray run's fills differ from one process's")
    print(f"2 shards / 1 shard: {rate[2] / rate[1]:.2f}x")
    # -- the model's inputs ---------------------------------------------------------------
    p1 = probes[1]
    events, windows = p1["events"], p1["steps"]
    c_coord = p1["coordinator_s"] / events
    c_shard = (p1["venue_s"] + p1["agents_s"]) / events  # both symbols' venues + agents
    leaves = {1: 3, 2: 4}  # venue actors + agent actors of each measured layout
    # the coordinator's serial time per event on Ray: its stages other than the round
    serial = {
        n: statistics.median(
            sum(v for k, v in g["stage_s"].items() if k != "signal") for g in runs[n]
        )
        / events
        for n in (1, 2)
    }
    # the round's transport per window and leaf: its wall on Ray less what its leaves
    # compute (in one process), over the leaves it waits on
    per_leaf = {
        n: max(
            0.0,
            statistics.median(g["stage_s"]["signal"] for g in runs[n])
            - (probes[n]["venue_s"] + probes[n]["agents_s"]),
        )
        / windows
        / leaves[n]
        for n in (1, 2)
    }
    r = statistics.mean(per_leaf.values())
    c_serial = statistics.mean(serial.values())

    def predict(n: int, n_leaves: int) -> float:
        t = events * c_serial + windows * r * n_leaves + events / n * c_shard
        return events / t

    print()
    print("model: T(N) = E * c_serial + W * r * L(N) + (E / N) * c_shard; inputs measured here:")
    print(f"  E = {events:,} events, W = {windows:,} windows")
    print(
        f"  c_serial = {c_serial * 1e6:.2f} us/event (coordinator on Ray, stages but the round; "
        f"{serial[1] * 1e6:.2f} / {serial[2] * 1e6:.2f} with 1 / 2 shards; its own stage in "
        f"one process: {c_coord * 1e6:.2f})"
    )
    print(f"  c_shard = {c_shard * 1e6:.2f} us/event (venues + agents, both symbols, one process)")
    print(
        f"  r = {r * 1e6:.0f} us per window and leaf ({per_leaf[1] * 1e6:.0f} with 3 leaves, "
        f"{per_leaf[2] * 1e6:.0f} with 4)"
    )
    print(
        f"  the model at the measured layouts: 1 shard {predict(1, 3):,.0f} events/s "
        f"(measured {rate[1]:,.0f}), 2 shards {predict(2, 4):,.0f} (measured {rate[2]:,.0f})"
    )
    print("predicted events/s with N shards of one venue and one agent actor each:")
    for n in (1, 2, 4, 8, 16):
        print(f"  N = {n:>2}: {predict(n, 2 * n):>10,.0f} events/s")


if __name__ == "__main__":
    main()
