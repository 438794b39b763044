"""The one trading kernel through its two product commands, side by side on one config:

    sapphire backtest --config C   (the kernel in one process)
    sapphire run --config C        (the kernel's stages in Ray actors: agents, coordinator,
                                    execution, storage sink)

Both are run as subprocesses exactly as a user types them, on configs/demo.yaml (the three
demo agents on the bundled 90 s sample) with the store in a temporary folder. Prints each
command's events/s (from its own end-of-run line), the ratio, and whether the two stored
runs are identical (every table but the run id).

    .venv/bin/python benchmarks/kernel_runners.py [--config configs/demo.yaml] [--max-events N]
        [--host NAME] [--transports sockets,compiled] [--rounds N] [--settle-s S]

``--host NAME`` puts every agent of the config in one agent actor (``AgentSpec.host``), as a
user does by writing ``host: NAME`` on each agent.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import polars as pl

from sapphire.storage.query import read_table

REPO = Path(__file__).resolve().parents[1]
TABLES = ("ticks", "signals", "intents", "orders", "fills", "positions", "pnl", "risk_decisions")
LINE = re.compile(r"([\d,]+) events in ([\d,]+) steps, ([\d.]+) s \(([\d,]+) events/s\)")
STEADY = re.compile(r"after start-up: ([\d,]+) events in ([\d.]+) s")


def run(command: str, config: Path, run_id: str) -> tuple[int, int, float, float, float]:
    argv = [sys.executable, "-m", "sapphire.cli", command, "--config", str(config)]
    argv += ["--run-id", run_id, "--no-progress"]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=1800)
    total = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    flat = " ".join(done.stdout.split())
    found = LINE.search(flat)
    if found is None:
        raise SystemExit(f"no summary line in the output of {command}:\n{done.stdout}")
    events, steps = int(found[1].replace(",", "")), int(found[2].replace(",", ""))
    wall = float(found[3])
    steady = STEADY.search(flat)  # the Ray system's pace after its actors' start-up
    pace = int(steady[1].replace(",", "")) / float(steady[2]) if steady else events / wall
    return events, steps, wall, total, pace


def stored(store: Path, run_id: str) -> dict[str, pl.DataFrame]:
    return {
        t: read_table(store, t, run_id).drop("run_id", "date").collect().sort("seq") for t in TABLES
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--max-events", type=int, default=None)
    parser.add_argument("--host", default="", help="every agent in this one agent actor")
    parser.add_argument(
        "--transports",
        default="",
        help="comma-separated ray.transport values to run side by side (default: the config's)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternated rounds (medians)")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=5.0,
        help="pause after each Ray run: its cluster's processes end for seconds after the "
        "command returns, and an in-process run started at once read ~10-40 %% slower",
    )
    args = parser.parse_args()
    raw = msgspec.yaml.decode(Path(args.config).read_bytes())
    transports = [t for t in args.transports.split(",") if t] or [""]
    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}")
    results: dict[str, list[tuple[int, int, float, float, float]]] = {}
    identical = True
    with tempfile.TemporaryDirectory(prefix="sapphire-runners-") as tmp:
        raw.setdefault("storage", {})["root"] = str(Path(tmp) / "runs")
        if args.max_events:
            raw.setdefault("data", {})["max_events"] = args.max_events
        for agent in raw.get("agents", []) if args.host else []:
            agent["host"] = args.host
        configs: dict[str, Path] = {}
        for transport in transports:
            if transport:
                raw.setdefault("ray", {})["transport"] = transport
            configs[transport] = Path(tmp) / f"config-{transport or 'default'}.yaml"
            configs[transport].write_bytes(msgspec.yaml.encode(raw))
        store = Path(tmp) / "runs" / "store"
        for r in range(args.rounds):
            results.setdefault("sapphire backtest", []).append(
                run("backtest", configs[transports[0]], f"bench-in-process-{r}")
            )
            local = stored(store, f"bench-in-process-{r}")
            for transport in transports:
                name = f"sapphire run {transport}".rstrip()
                run_id = f"bench-on-ray-{transport or 'default'}-{r}"
                results.setdefault(name, []).append(run("run", configs[transport], run_id))
                time.sleep(args.settle_s)
                ray = stored(store, run_id)
                same = {t: local[t].equals(ray[t]) for t in TABLES}
                identical = identical and all(same.values())
                rows = {t: local[t].height for t in TABLES}
                print(f"round {r}, {name}: stored tables identical (rows): {same} {rows}")
    head = f"{'command':<26}{'events':>10}{'steps':>8}{'run s':>9}{'events/s':>12}"
    print(head + f"{'after start-up':>16}{'wall s':>9}   (medians of {args.rounds})")
    medians: dict[str, tuple[float, float]] = {}
    for name, got in results.items():
        events, steps = got[0][0], got[0][1]
        wall = statistics.median(g[2] for g in got)
        total = statistics.median(g[3] for g in got)
        pace = statistics.median(g[4] for g in got)
        medians[name] = (events / wall, pace)
        print(
            f"{name:<26}{events:>10,}{steps:>8,}{wall:>9.2f}{events / wall:>12,.0f}"
            f"{pace:>16,.0f}{total:>9.1f}"
        )
    whole_l, pace_l = medians["sapphire backtest"]
    for name, (whole, pace) in medians.items():
        if name == "sapphire backtest":
            continue
        print(
            f"{name} / in-process events/s: whole run {whole / whole_l:.3f}x, "
            f"after start-up {pace / pace_l:.3f}x"
        )
    print(f"stored tables identical in every round: {identical}")
    print(f"load average after: {os.getloadavg()}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
