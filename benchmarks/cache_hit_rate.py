"""Cache hit rate per level (L1 in process -> L2 Redis -> L3 source) on two workloads, and
whether sharing per-window marks between agents through the hierarchy could pay.

Workloads, both through the product's own ``run_system`` (what ``sapphire run`` calls):
  demo      configs/demo.yaml (3 agents on the bundled BTCUSDT sample): a cold run (an empty
            cache prefix), then the same replay again (warm: what a rerun or redeploy sees),
            then once more with Redis unreachable (the trading outcome must not change)
  restart   6 agents on the same symbol; one agent actor is killed after step --kill-step
            and restarted by Ray (it must be served from Redis), cold prefix

  llm       three LLM agents with one config on the same symbol (configs/demo_llm.yaml's agent,
            the real 4-bit model through Ray Serve, at the recorded pace): their questions
            are identical while their positions are, so the hierarchy can answer two of three
            from L2 (a lease in Redis lets one process ask while the others wait for its
            answer); one of them is killed after step --llm-kill-step and restarted; then the
            same replay again (warm)

Marks: per window of the demo replay, the time to compute the marks momentum and mean
reversion both compute (``reference_price`` of every event) against a hierarchy hit of the
same marks published under run/symbol/window end (L2: another process's read, L1: a repeat).

    .venv/bin/python benchmarks/cache_hit_rate.py [--max-events 0] [--kill-step 40]

Redis: the ``redis`` settings of the config (default 127.0.0.1:6379); keys under a prefix of
this run's own, deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import ray

from actors.system import RunResult, run_system
from sapphire.adapters.bq_emulator import free_port
from sapphire.adapters.redis_cache import RedisCache
from sapphire.agents.features import reference_price
from sapphire.config.system import AgentSpec, SystemConfig, load_config
from sapphire.data import sample
from sapphire.kernel.assembly import open_replay, timing, window_ns
from sapphire.storage.cache import L1Cache
from sapphire.storage.tiered import TieredCache

REPO = Path(__file__).resolve().parents[1]

EXTRA_AGENTS = (
    {
        "id": "mm_as2",
        "kind": "avellaneda_stoikov",
        "symbol": "BTCUSDT",
        "params": {"order_amount": 0.002, "max_inventory": 0.02, "risk_factor": 0.3},
    },
    {
        "id": "momentum2",
        "kind": "momentum",
        "symbol": "BTCUSDT",
        "params": {"order_lots": 2, "allow_short": True, "fast_span": 5, "slow_span": 30},
    },
    {
        "id": "meanrev2",
        "kind": "mean_reversion",
        "symbol": "BTCUSDT",
        "params": {"order_lots": 2, "allow_short": True},
    },
)
VICTIM = "momentum2"


def pct(values: list[int] | list[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def configured(
    base: SystemConfig, root: str, prefix: str, *, max_events: int, redis_port: int = 0
) -> SystemConfig:
    redis = msgspec.structs.replace(base.redis, cache_prefix=prefix)
    if redis_port:
        redis = msgspec.structs.replace(redis, port=redis_port)
    data = (
        base.data if not max_events else msgspec.structs.replace(base.data, max_events=max_events)
    )
    return msgspec.structs.replace(
        base,
        data=data,
        storage=msgspec.structs.replace(base.storage, root=root),
        ray=msgspec.structs.replace(base.ray, namespace=f"cache-bench-{os.getpid()}", num_cpus=4),
        redis=redis,
    )


def run(
    config: SystemConfig, run_id: str, on_step: Callable[[Any], None] | None = None
) -> RunResult:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    result = run_system(config, run_id=run_id, on_step=on_step)
    wall = time.perf_counter() - started
    result.summary["bench"] = {"load_before": load, "load_after": os.getloadavg()[0], "wall": wall}
    return result


def outcome(result: RunResult) -> tuple[Any, ...]:
    s = result.summary
    agents = {k: (v["position_lots"], v["pnl_quote"]) for k, v in s["agents"].items()}
    return s["fills"], s["counters"]["orders"], s["orders_by_status"], agents


def show(name: str, result: RunResult) -> None:
    cache = result.summary["cache"]
    bench = result.summary["bench"]
    print(
        f"\n{name}: {result.summary['counters']['events']:,} events, {result.steps:,} steps, "
        f"{bench['wall']:.1f} s, fills {result.summary['fills']}, "
        f"load average {bench['load_before']:.1f} -> {bench['load_after']:.1f}"
    )
    print(
        f"  {'cache':<14} {'lookups':>7} {'L1 hit/miss':>12} {'L2 hit/miss':>12} "
        f"{'L2 err':>6} {'L3 loads':>8} {'L1 %':>6} {'L2 %':>6} {'combined':>8}"
    )
    for cache_name, r in cache.items():
        if not isinstance(r, dict):
            print(f"  {cache_name}: {r}")
            continue
        l1, l2, l3 = r["l1"], r["l2"], r["l3"]
        print(
            f"  {cache_name:<14} {r['lookups']:>7} {l1['hits']:>5}/{l1['misses']:<6} "
            f"{l2['hits']:>5}/{l2['misses']:<6} {l2['errors']:>6} {l3['loads']:>8} "
            f"{l1['hit_ratio']:>6.1%} {l2['hit_ratio']:>6.1%} {r['combined_hit_ratio']:>8.1%}"
        )


def demo(base: SystemConfig, root: str, prefix: str, max_events: int) -> None:
    cold = run(configured(base, root, prefix, max_events=max_events), f"demo-cold-{os.getpid()}")
    show("demo replay, cold cache", cold)
    warm = run(configured(base, root, prefix, max_events=max_events), f"demo-warm-{os.getpid()}")
    show("demo replay, warm (same replay again)", warm)
    down = configured(base, root, prefix, max_events=max_events, redis_port=free_port())
    no_redis = run(down, f"demo-noredis-{os.getpid()}")
    show("demo replay, Redis unreachable", no_redis)
    same = outcome(cold) == outcome(warm) == outcome(no_redis)
    print(f"  identical fills, orders, positions and PnL in all three: {same}")
    if not same:
        raise SystemExit("the cache changed a trading outcome")


def restart(base: SystemConfig, root: str, prefix: str, max_events: int, kill_step: int) -> None:
    agents = (*base.agents, *(msgspec.convert(a, AgentSpec) for a in EXTRA_AGENTS))
    config = msgspec.structs.replace(
        configured(base, root, prefix, max_events=max_events), agents=agents
    )
    run_id = f"multi-restart-{os.getpid()}"
    seen: dict[str, Any] = {}

    def on_step(progress: Any) -> None:
        if progress.step not in (kill_step, kill_step + 5):
            return
        # Any: Ray 2.60 types a handle's methods as Never (see actors/coordinator.py)
        victim: Any = ray.get_actor(f"{run_id}:agent-{VICTIM}", namespace=config.ray.namespace)
        if progress.step == kill_step:
            # between two steps: the next step's call waits for Ray to restart the actor,
            # which restores its checkpoint and recomputes nothing it had answered
            ray.kill(victim, no_restart=False)
        else:
            stats = ray.get(victim.stats.remote())
            seen.update(restored=stats["restored"], own=stats["cache_incarnation"])

    result = run(config, run_id, on_step)
    show(f"{len(agents)} agents, {VICTIM} killed after step {kill_step} and restarted", result)
    own = seen.get("own", {}).get("instruments", {})
    levels = {lv: (c["hits"], c["misses"]) for lv, c in own.items()}
    print(f"  restarted {VICTIM}: restored={seen.get('restored')}, its own lookups {levels}")
    if not seen.get("restored") or levels.get("l2") != (1, 0) or levels.get("l3") != (0, 0):
        raise SystemExit("the restarted agent actor was not served from Redis")


LLM_AGENTS = ("llm", "llm2", "llm3")


def llm(base: SystemConfig, root: str, prefix: str, max_events: int, kill_step: int) -> None:
    template = next(a for a in base.agents if a.kind == "llm")
    agents = tuple(msgspec.structs.replace(template, id=agent_id) for agent_id in LLM_AGENTS)
    config = msgspec.structs.replace(
        configured(base, root, prefix, max_events=max_events), agents=agents
    )
    victim_id = LLM_AGENTS[-1]
    cold_id = f"llm-cold-{os.getpid()}"
    killed: list[int] = []  # the step the victim was killed after

    def on_step(progress: Any) -> None:
        if progress.step != kill_step or killed:
            return
        victim: Any = ray.get_actor(f"{cold_id}:agent-{victim_id}", namespace=config.ray.namespace)
        ray.kill(victim, no_restart=False)
        killed.append(progress.step)

    cold = run(config, cold_id, on_step)
    show(f"{len(agents)} LLM agents, {victim_id} killed after step {kill_step}, cold", cold)
    print(f"  LLM decisions: {_llm_counts(cold)}")
    warm = run(config, f"llm-warm-{os.getpid()}")
    show(f"{len(agents)} LLM agents, same replay again (warm)", warm)
    print(f"  LLM decisions: {_llm_counts(warm)}")
    if not killed:
        raise SystemExit(f"the run ended before step {kill_step}: nothing was killed")


def _llm_counts(result: RunResult) -> str:
    per_agent = result.summary.get("llm") or {}
    return "; ".join(
        f"{agent}: " + ", ".join(f"{k} {v}" for k, v in sorted(s.items()) if isinstance(v, int))
        for agent, s in sorted(per_agent.items())
        if isinstance(s, dict)
    )


def _never_loaded(key: str) -> Any:
    raise SystemExit(f"{key}: the reader was meant to find the published marks")


def marks(base: SystemConfig, prefix: str, windows: int) -> None:
    """Could one agent publish a window's marks and the others read them? Cost of computing
    them vs reading them through the hierarchy, on the demo replay's real windows."""
    width = window_ns(base)
    instrument = sample.sample_instrument()
    feed = open_replay(sample.event_files(), {instrument.symbol: instrument}, base.data.clock)
    by_window: dict[int, list[Any]] = {}
    for event in feed:
        by_window.setdefault(event.ts_event_ns // width, []).append(event)
    sizes = [len(v) for v in by_window.values()]
    chosen = list(by_window.items())[:windows]
    compute_ns: list[int] = []
    for _, events in chosen:
        t0 = time.perf_counter_ns()
        _ = [reference_price(e) for e in events]  # what momentum and mean reversion compute
        compute_ns.append(time.perf_counter_ns() - t0)
    l2 = RedisCache(prefix=prefix + "marks:", client_kwargs=base.redis.client_kwargs())
    publisher = TieredCache(L1Cache(clock=time.monotonic_ns), l2)
    reader = TieredCache(L1Cache(clock=time.monotonic_ns), l2)  # another agent's process
    set_ns: list[int] = []
    l2_ns: list[int] = []
    l1_ns: list[int] = []
    for start, events in chosen:
        key = f"bench:{instrument.symbol}:{(start + 1) * width}"
        values = [reference_price(e) for e in events]
        t0 = time.perf_counter_ns()
        publisher.set(key, values)
        set_ns.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        reader.get(key, _never_loaded)
        l2_ns.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        reader.get(key, _never_loaded)
        l1_ns.append(time.perf_counter_ns() - t0)
    if reader.loads or reader.stats["l2"].hits != len(chosen):
        raise SystemExit("every read was meant to be an L2 or an L1 hit")
    t = timing(base)
    print(
        f"\nmarks: {len(by_window):,} windows of {width / 1e6:g} ms (feed {t.feed_ns / 1e6:g} ms)"
        f" in the demo replay; events per window p50 {pct(sizes, 0.5):.0f}, p99 "
        f"{pct(sizes, 0.99):.0f}, max {max(sizes)}; measured on the first {len(chosen):,}"
    )
    for name, values_ns in (
        ("compute the window's marks", compute_ns),
        ("publish them (L1 + Redis SET)", set_ns),
        ("read them from L2 (Redis GET)", l2_ns),
        ("read them from L1 (repeat)", l1_ns),
    ):
        print(
            f"  {name:<32} p50 {pct(values_ns, 0.5) / 1e3:8.1f} us  "
            f"p99 {pct(values_ns, 0.99) / 1e3:8.1f} us  "
            f"mean {statistics.mean(values_ns) / 1e3:8.1f} us"
        )
    l2.clear_prefix()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--max-events", type=int, default=0, help="0: the whole replay")
    parser.add_argument("--kill-step", type=int, default=40)
    parser.add_argument("--mark-windows", type=int, default=5000)
    parser.add_argument("--llm-config", default=str(REPO / "configs" / "demo_llm.yaml"))
    parser.add_argument(
        "--llm-max-events", type=int, default=43_100, help="43,100: the first 30 s of the sample"
    )
    parser.add_argument("--llm-kill-step", type=int, default=600)
    parser.add_argument("--only", choices=("demo", "restart", "llm", "marks"), default=None)
    args = parser.parse_args()
    base = load_config(args.config)
    prefix = f"bench:cache:{uuid.uuid4().hex[:8]}:"
    print(f"host cores {os.cpu_count()}, load average {os.getloadavg()}, cache prefix {prefix}")
    cleanup = RedisCache(prefix=prefix, client_kwargs=base.redis.client_kwargs())
    try:
        with tempfile.TemporaryDirectory(prefix="sapphire-cache-") as root:
            if args.only in (None, "demo"):
                demo(base, root, prefix + "demo:", args.max_events)
            if args.only in (None, "restart"):
                restart(base, root, prefix + "multi:", args.max_events, args.kill_step)
            if args.only in (None, "llm"):
                llm_base = load_config(args.llm_config)
                llm(llm_base, root, prefix + "llm:", args.llm_max_events, args.llm_kill_step)
        if args.only in (None, "marks"):
            marks(base, prefix, args.mark_windows)
    finally:
        cleanup.clear_prefix()
        if ray.is_initialized():
            ray.shutdown()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
