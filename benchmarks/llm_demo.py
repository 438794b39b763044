"""The LLM demo on this machine, through the product's own command: ``sapphire run`` on
``configs/demo.yaml`` (baseline: the three demo agents) and on ``configs/demo_llm.yaml`` (the
same plus one LLM agent asking SmolLM2-135M on Ray Serve). Prints the wall-time ratio and,
from the stored ``llm_decisions`` rows, how many decisions arrived within their timeout and
what they cost.

    .venv/bin/python benchmarks/llm_demo.py
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
SAPPHIRE = str(Path(sys.executable).with_name("sapphire"))


def run(config: str, cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [SAPPHIRE, "run", "--config", str(REPO / config), "--no-progress"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_ADDRESS": "local"},
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{config}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    with tempfile.TemporaryDirectory() as base_dir, tempfile.TemporaryDirectory() as llm_dir:
        base = run("configs/demo.yaml", Path(base_dir))
        llm = run("configs/demo_llm.yaml", Path(llm_dir))
        files = glob.glob(f"{llm_dir}/runs/store/llm_decisions/**/*.parquet", recursive=True)
        rows = pl.read_parquet(files)
    answered = rows.filter(pl.col("valid"))
    model_calls = rows.filter(pl.col("prompt_tokens") > 0)
    lat = answered["latency_ns"] / 1e9
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"wall: demo {base:.1f} s, demo_llm {llm:.1f} s, ratio {llm / base:.2f}x")
    print(
        f"decisions stored {rows.height}: used (within timeout) {answered.height}, "
        f"fallback {rows.filter(pl.col('fallback') != '').height}, "
        f"late {rows.filter(pl.col('error').str.starts_with('late')).height}"
    )
    if answered.height:
        print(
            f"latency of used answers: p50 {lat.median():.2f} s, max {lat.max():.2f} s; "
            f"queue wait p50 {answered['queue_wait_ns'].median() / 1e6:.1f} ms"
        )
    if model_calls.height:
        print(
            f"per model call: prompt {model_calls['prompt_tokens'].mean():.0f} tokens, "
            f"completion {model_calls['completion_tokens'].mean():.1f} tokens, "
            f"CPU {model_calls['cpu_s'].mean():.2f} s, "
            f"cost {model_calls['cost'].cast(pl.Float64).sum():.9f} "
            f"{model_calls['cost_currency'][0]} in all"
        )


if __name__ == "__main__":
    main()
