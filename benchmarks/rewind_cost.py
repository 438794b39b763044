"""What a peer's failure costs the coordinator late in a replay: the step that recovers.

A venue actor killed mid-step makes the coordinator go back to its last barrier (every actor
reloads its checkpoint there) and step on. Before session 13 the coordinator then reopened
its replay feed: one market data fast-forwarded the whole replay again up to the barrier, and
the shard readers' merge read every event again from the start. Now the feed gives the events
since the barrier again from memory (``actors.coordinator.RewindableFeed``).

    .venv/bin/python benchmarks/rewind_cost.py [--kill-step 4000] [--config FILE]

Runs the config through ``actors.system.start_system`` (what ``sapphire run`` starts), steps it
one window at a time, kills shard 1's venue (or the only one) at ``--kill-step``, and prints
the wall time of that step and the 9 after it (the recovery) against the median step, with
the stored fills compared to an unfaulted run of the same config.
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

from actors.system import finish, shutdown_system, start_system
from sapphire.config.system import parse_config
from sapphire.storage.query import read_table

REPO = Path(__file__).resolve().parents[1]


def drive(config: Any, run_id: str, kill_step: int | None) -> dict[str, Any]:
    handles = start_system(config, run_id)
    walls: list[float] = []
    recover = 0.0
    try:
        step = 0
        while True:
            started = time.perf_counter()
            ref = handles.coordinator.run_step.remote(step)
            if kill_step is not None and step == kill_step:
                time.sleep(0.01)
                ray.kill(handles.venues[-1], no_restart=False)
            progress = ray.get(ref, timeout=600)
            wall = time.perf_counter() - started
            if kill_step is not None and kill_step <= step < kill_step + 10:
                recover += wall  # the kill's step and the ones that find the venue restarted
            elif step > 0:
                walls.append(wall)
            step += 1
            if progress.done:
                break
        feed = ray.get(handles.coordinator.feed_stats.remote())
        finish(handles, step, 0.0)
    finally:
        shutdown_system(handles)
    fills = read_table(handles.storage_root / "store", "fills", run_id).collect().sort("seq")
    return {
        "steps": step,
        "median_ms": statistics.median(walls) * 1e3,
        "recover_s": recover,
        "fills": fills.drop("run_id", "date"),
        "rewinds_from_memory": feed.get("rewinds", "n/a"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(REPO / "configs" / "demo_shards.yaml"))
    parser.add_argument("--kill-step", type=int, default=4000)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}")
    ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="rewind-cost")
    try:
        with tempfile.TemporaryDirectory(prefix="sapphire-rewind-") as tmp:
            raw = yaml.safe_load(Path(args.config).read_text())
            raw["storage"]["root"] = tmp
            raw["console"] = {"enabled": False}
            raw.setdefault("ray", {})["agent_timeout_s"] = 20.0
            config = parse_config(raw)
            clean = drive(config, "clean", None)
            faulted = drive(config, "faulted", args.kill_step)
    finally:
        ray.shutdown()
    same = clean["fills"].equals(faulted["fills"])
    print(
        f"{args.config}: {faulted['steps']:,} steps, median step {faulted['median_ms']:.2f} ms; "
        f"venue killed at step {args.kill_step:,}: that step and the 9 after it took "
        f"{faulted['recover_s']:.2f} s "
        f"(rewinds served from memory: {faulted['rewinds_from_memory']}); "
        f"fills identical to the unfaulted run: {same}"
    )
    print(f"load average after: {os.getloadavg()}")
    if not same:
        raise SystemExit("the faulted run's fills differ from the unfaulted run's")


if __name__ == "__main__":
    main()
