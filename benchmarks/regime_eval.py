"""Does the LLM regime classifier anticipate stress better than rules? Held-back recorded data.

Data: the recorded BTC-PERP 1-minute bars (2021-12-31 .. 2022-02-01, ``ohlcv/nautilus_*``),
loaded by Sapphire's own loader. Every hour on the hour, ``RegimeTracker`` (the coordinator's
feature code) gives the features of the past hour, from bars closed by then only. Target:
the *next* hour's realised volatility (standard deviation of the 1-minute returns, the same
unit as the feature); an hour is "stressed" when it is at or above the training period's
80th percentile.

* train (2022-01-01 .. 2022-01-15): the rule thresholds are fitted here (stressed: the
  trailing-volatility level with the best F1 on train; calm: its 30th percentile), and the
  target's 80th percentile is fixed here;
* test (2022-01-16 .. 2022-02-01, held back; includes the 21-24 January sell-off): every
  classifier is scored on it. The LLM sees at most ``--llm-points`` (default 60) evenly
  spaced test hours (about 1 s a decision on 2 cores); the rules and "always normal" are
  scored on the same hours (paired) and on every test hour.

Scores: precision / recall / F1 / accuracy of "stressed" against the next hour's stress, the
next hour's mean volatility when called stressed vs not, and what the regime's limit scale
(stressed 0.5, else 1) does to a position held through the next hour: exposure kept (mean
scale), its next-hour volatility and its worst next-hour drawdown.

Run: ``.venv/bin/python benchmarks/regime_eval.py [--llm-points 60] [--no-llm]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sapphire.data.registry import stream_events
from sapphire.model.events import Bar
from sapphire.risk.regime import (
    NS,
    RegimeCall,
    RegimeFeatures,
    RegimeScales,
    RegimeThresholds,
    RegimeTracker,
    RuleClassifier,
)

REPO = Path(__file__).resolve().parents[1]
BARS = "ohlcv/nautilus_btc-perp_1m_2021-12-31_2022-02-01.csv.gz"
HOUR = 3600 * NS
SPLIT = dt.datetime(2022, 1, 16, tzinfo=dt.UTC)
SCALES = RegimeScales(calm=1.0, normal=1.0, stressed=0.5)


def shared_data() -> Path:
    return Path(os.environ.get("SAPPHIRE_SHARED_DATA", REPO.parent / "shared" / "data"))


class Point(NamedTuple):
    features: RegimeFeatures
    next_vol_bps: float
    next_drawdown_bps: float


def _vol(closes: Sequence[float]) -> float:
    rets = [(b / a - 1.0) * 1e4 for a, b in itertools.pairwise(closes)]
    if len(rets) < 2:
        return 0.0
    mean = sum(rets) / len(rets)
    return math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))


def _drawdown(closes: Sequence[float]) -> float:
    peak, worst = closes[0], 0.0
    for c in closes:
        peak = max(peak, c)
        worst = max(worst, (1.0 - c / peak) * 1e4)
    return worst


def hourly_points(path: Path) -> list[Point]:
    """Features at each hour from the past (the product's tracker), targets from the next."""
    bars = [e for e in stream_events(path) if isinstance(e, Bar)]
    tracker = RegimeTracker(lookback_ns=HOUR, sample_interval_ns=60 * NS)
    closes = {b.ts_event_ns: float(b.close_ticks) for b in bars}  # a bar is stamped at its close
    points: list[Point] = []
    for b in bars:
        tracker.observe(b)  # known at t: the bar that closes then counts
        t = b.ts_event_ns
        if t % HOUR == 0:
            f = tracker.features(b.symbol, t)
            path_ = [closes.get(t + m * 60 * NS) for m in range(61)]
            if f is not None and f.samples >= 50 and all(c is not None for c in path_):
                nxt = [c for c in path_ if c is not None]
                points.append(Point(f, _vol(nxt), _drawdown(nxt)))
    return points


def quantile(values: Sequence[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def scores(points: Sequence[Point], calls: Sequence[str], stress_bps: float) -> dict[str, Any]:
    truth = [p.next_vol_bps >= stress_bps for p in points]
    said = [c == "stressed" for c in calls]
    tp = sum(t and s for t, s in zip(truth, said, strict=True))
    fp = sum(s and not t for t, s in zip(truth, said, strict=True))
    fn = sum(t and not s for t, s in zip(truth, said, strict=True))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    scale = [SCALES.of(c) for c in calls]  # type: ignore[arg-type]
    paired = list(zip(scale, points, strict=True))
    stressed_vol = [p.next_vol_bps for p, s in zip(points, said, strict=True) if s]
    other_vol = [p.next_vol_bps for p, s in zip(points, said, strict=True) if not s]
    return {
        "n": len(points),
        "stressed_calls": sum(said),
        "true_stress": sum(truth),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": sum(t == s for t, s in zip(truth, said, strict=True)) / len(points),
        "vol_if_stressed": statistics.fmean(stressed_vol) if stressed_vol else float("nan"),
        "vol_otherwise": statistics.fmean(other_vol) if other_vol else float("nan"),
        "exposure": statistics.fmean(scale),
        "scaled_vol": statistics.fmean(s * p.next_vol_bps for s, p in paired),
        "scaled_worst_dd": max(s * p.next_drawdown_bps for s, p in paired),
        "scaled_dd_sum": sum(s * p.next_drawdown_bps for s, p in paired),
        "by_regime": {r: calls.count(r) for r in ("calm", "normal", "stressed")},
    }


def fit_rules(train: Sequence[Point], stress_bps: float) -> RegimeThresholds:
    """The stressed threshold with the best F1 on train (trailing-volatility percentiles
    50..95), calm at the 30th percentile."""
    trailing = [p.features.volatility_bps for p in train]
    best: tuple[float, float] = (-1.0, 0.0)
    for q in range(50, 96, 5):
        level = quantile(trailing, q / 100)
        calls = ["stressed" if v >= level else "normal" for v in trailing]
        f1 = scores(train, calls, stress_bps)["f1"]
        if not math.isnan(f1) and f1 > best[0]:
            best = (f1, level)
    calm = min(quantile(trailing, 0.30), best[1])
    return RegimeThresholds(stressed_volatility_bps=round(best[1], 2), calm_volatility_bps=calm)


def _row(name: str, s: dict[str, Any]) -> str:
    def f(x: float, d: int = 2) -> str:
        return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.{d}f}"

    return (
        f"| {name} | {s['n']} | {s['stressed_calls']} / {s['true_stress']} | {f(s['precision'])} "
        f"| {f(s['recall'])} | {f(s['f1'])} | {f(s['accuracy'])} | {f(s['vol_if_stressed'], 1)} "
        f"/ {f(s['vol_otherwise'], 1)} | {f(s['exposure'])} | {f(s['scaled_vol'], 2)} "
        f"| {f(s['scaled_worst_dd'], 0)} | {f(s['scaled_dd_sum'], 0)} |"
    )


HEADER = (
    "| classifier | hours | called / truly stressed | precision | recall | F1 | accuracy "
    "| next-hour vol bps if called stressed / not | exposure kept | scaled next-hour vol "
    "| scaled worst next-hour drawdown bps | scaled drawdown sum bps |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llm-points", type=int, default=60)
    parser.add_argument("--no-llm", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--on",
        choices=("test", "train"),
        default="test",
        help="where the LLM is scored: train only to choose a prompt, test for the figures",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    points = hourly_points(shared_data() / BARS)
    split_ns = int(SPLIT.timestamp()) * NS
    train = [p for p in points if p.features.ts_event_ns < split_ns]
    test = [p for p in points if p.features.ts_event_ns >= split_ns]
    stress_bps = quantile([p.next_vol_bps for p in train], 0.80)
    th = fit_rules(train, stress_bps)
    rules = RuleClassifier(th)
    print(f"train {len(train)} hours, test {len(test)} hours (from {SPLIT.date()})")
    print(
        f"stress: next-hour vol >= {stress_bps:.2f} bps (train p80); rules fitted on train: "
        f"stressed >= {th.stressed_volatility_bps:.2f} bps, calm < {th.calm_volatility_bps:.2f}"
    )

    def rule_calls(ps: Sequence[Point]) -> list[str]:
        return [c.regime for c in rules.classify([p.features for p in ps])]

    print(HEADER)
    print(_row("rules, train (in-sample)", scores(train, rule_calls(train), stress_bps)))
    print(_row("always normal, all test", scores(test, ["normal"] * len(test), stress_bps)))
    print(_row("rules, all test", scores(test, rule_calls(test), stress_bps)))
    scored = test if args.on == "test" else train
    n = min(args.llm_points, len(scored))
    step = len(scored) / n
    sample = [scored[int(i * step)] for i in range(n)]
    print(f"LLM hours: {n} evenly spaced {args.on} hours")
    print(_row("always normal, LLM hours", scores(sample, ["normal"] * n, stress_bps)))
    print(_row("rules, LLM hours", scores(sample, rule_calls(sample), stress_bps)))
    if args.no_llm:
        print(f"load average {load_before} -> {os.getloadavg()}")
        return
    from sapphire.agents.regime import llm_regime_classifier

    started = time.perf_counter()
    llm = llm_regime_classifier({"n_threads": args.threads, "max_parallel": 8}, rules)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    calls: list[RegimeCall] = []
    for i in range(0, n, 8):  # batches of 8 through the engine's batched decoding
        calls += llm.classify([p.features for p in sample[i : i + 8]])
    llm_s = time.perf_counter() - started
    regimes = [c.regime for c in calls]
    print(_row("LLM (SmolLM2-135M Q4), LLM hours", scores(sample, regimes, stress_bps)))
    agree = sum(a == b for a, b in zip(regimes, rule_calls(sample), strict=True))
    said = {r: regimes.count(r) for r in ("calm", "normal", "stressed")}
    st = llm.stats
    print(
        f"LLM: {n} decisions in {llm_s:.1f} s ({llm_s / n:.2f} s each, model load {load_s:.1f} s); "
        f"valid {st.ok}, fallback to rules {st.fallbacks} (malformed {st.malformed_json}, "
        f"schema {st.schema_violation}, errors {st.errors}, refused {st.refused}); "
        f"said {said}; agrees with the rules on {agree}/{n}"
    )
    print(f"load average {load_before} -> {os.getloadavg()}")


if __name__ == "__main__":
    main()
