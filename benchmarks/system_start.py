"""CPU a system start costs, per actor: what every `sapphire run` (and every Ray test) pays
before its first window.

    .venv/bin/python benchmarks/system_start.py [--rounds 3] [--events 100]

Starts the Ray system of ``tests/actors/harness.make_config`` (two agent actors, the venue,
the market data, the sink and the coordinator) through ``actors.system.start_system``, the
path `sapphire run` takes, on one local cluster, and runs it to the end of ``--events``
events (a few windows: the start dominates). For each round it prints the CPU seconds every
process of the cluster spent from just before the start to the end of the run (utime +
stime from /proc, the actors by their Ray names), and their sum. Linux only. Read the sum on a
quiet host: another process's work is not counted, but it slows these.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TICK = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[str, float]]:
    """pid -> (name, CPU seconds so far) of every process this user can read."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = cmd if cmd.startswith("ray::") else Path(cmd).name or "?"
        out[int(entry)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def main() -> None:
    import ray

    from actors.system import drive, finish, shutdown_system, start_system
    from tests.actors.harness import make_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=100)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR")
    time.sleep(3)  # the cluster's own start-up (prestarted workers) is not a system start's
    sums = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="sapphire-start-") as root:
            data = {"source": "sample", "batch_events": 1000, "max_events": args.events}
            config = make_config(Path(root), data=data)
            before = processes()
            started = time.perf_counter()
            handles = start_system(config, f"start-{r}")
            steps = drive(handles)
            finish(handles, steps, 0.0)
            wall = time.perf_counter() - started
            after = processes()
            shutdown_system(handles)
        spent: collections.Counter[str] = collections.Counter()
        for pid, (name, cpu) in after.items():
            delta = cpu - before.get(pid, (name, 0.0))[1]
            if delta > 0.01:
                spent[name] += delta
        total = sum(spent.values())
        sums.append(total)
        parts = ", ".join(f"{n} {s:.2f}" for n, s in spent.most_common(8))
        print(f"round {r}: {steps} steps, {wall:.2f} s wall, CPU {total:.2f} s ({parts})")
        time.sleep(1)
    ray.shutdown()
    print(
        f"CPU per system start and run, median of {len(sums)}: {sorted(sums)[len(sums) // 2]:.2f} s"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
