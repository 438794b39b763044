"""Tuning throughput: a 64-trial walk-forward sweep of the Avellaneda-Stoikov maker with 1 and
2 trials in parallel on the same local Ray cluster (2 CPUs), and the time to first result.

Each trial backtests 4 walk-forward folds (train 20 s, test 10 s) of the first 62 s of the
bundled Binance USDT-M BTCUSDT sample through the paper exchange. The data is loaded once
and shared through the object store. No early stopping (every trial does the same work).
A 4-trial warm-up sweep runs first so both measured sweeps find Ray's workers started.

    .venv/bin/python benchmarks/tune_bench.py [--trials 64] [--seconds 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray

from actors.tune import ensure_ray, prepare, run_tune
from sapphire.research.objective import evaluate
from tests.research.helpers import as_config, resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=62.0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    ensure_ray(2)
    print(f"ray.init: {time.perf_counter() - t0:.1f} s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for parallel, trials in ((2, 4), (1, args.trials), (2, args.trials)):
            base = as_config(Path(tmp))
            backtest = {
                **base.backtest,
                "ticks": {**base.backtest["ticks"], "seconds": args.seconds},
            }
            cfg = as_config(
                Path(tmp) / f"p{parallel}-{trials}",
                backtest=backtest,
                walk_forward={"train": 20, "test": 10},
                search={
                    "algorithm": "optuna",
                    "num_samples": trials,
                    "max_concurrent": parallel,
                    "seed": 1,
                },
                scheduler={"kind": "none"},
            )
            out = run_tune(cfg, resolve)
            done = out.trials.height
            if trials != args.trials:
                continue  # warm-up
            rows.append((parallel, done, out.wall_s, done / out.wall_s, out.first_result_s))
            print(
                f"parallel={parallel}: {done} trials x {out.n_folds} folds in {out.wall_s:.1f} s "
                f"= {done / out.wall_s:.2f} trials/s; first result after {out.first_result_s:.2f} s"
            )
    ray.shutdown()
    (_, _, _, r1, _), (_, _, _, r2, _) = rows
    print(f"speed-up 2 vs 1 parallel trials: {r2 / r1:.2f}x")
    # Baseline: the same trial's backtests in this process, without Ray or Tune.
    payload = prepare(cfg, resolve)
    times = []
    for rf in (0.01, 0.1, 1.0, 0.3, 0.03):
        params = {**payload.base_params, "risk_factor": rf}
        started = time.perf_counter()
        evaluate(payload.dataset, payload.backtest, params, payload.folds, payload.objective)
        times.append(time.perf_counter() - started)
    med = statistics.median(times)
    print(f"one trial without Ray: median {med:.3f} s = {1 / med:.2f} trials/s serial")


if __name__ == "__main__":
    main()
