"""LLM decision throughput on the CPU: batched (8) vs unbatched, in one run.

Prompts come from real data: an LlmAgent replays Binance spot bookTicker updates
(hftbacktest 2023-04-05 session) and its decision requests are collected. Each prompt is then
answered by SmolLM2-135M (GGUF Q4_1, and its Q4_0 copy) in llama.cpp with JSON-schema grammar:

* unbatched: one ``generate_batch([prompt])`` at a time (latency = its own call);
* batched:   ``generate_batch(8 prompts)`` through the continuous-batching loop (8 slots);
* reference: llama-cpp-python's own ``create_chat_completion`` loop (the sequential path);
* ``--serve``: the same prompts through the Ray Serve deployment, ``max_batch_size`` 1 vs 8,
  with 8 concurrent callers (each sends its next request when its answer returns, so
  requests arrive while others decode), in alternated rounds (``--rounds``);
  ``--serve-only`` runs just that comparison (``SAPPHIRE_LLM_REPACK=1`` in the environment
  gives the replicas llama.cpp's repacked Q4_0 kernels on AMX CPUs, see LlamaCppEngine);
  ``--serve-only --serve-config serve_configs/llm_cpu.yaml`` takes the engine, batch size
  and wait from the shipped Serve YAML instead of the flags (both replicas are deployed at
  once with half a CPU each, threads as the YAML writes them: neither decodes while the
  other is measured, so each runs as a replica granted two CPUs);
* ``--sweep``: engine settings (threads, flash attention, prefill placement, ubatch)
  compared in alternated rounds.

Prints decisions/s, completion tokens/s, p50/p95 decision latency, the malformed-JSON and
schema-violation rates, the machine's load average, and model memory: GGUF file size and RSS
growth (4-bit) against parameters x 2 bytes (16-bit). Run: ``.venv/bin/python
benchmarks/llm_bench.py``
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import statistics
import time
from pathlib import Path
from typing import Any

from sapphire.agents.llm_agent import LlmAgent
from sapphire.llm.decision import DecisionStats, parse_decision
from sapphire.llm.engines import Generation, LlamaCppConfig
from sapphire.llm.llamacpp import LlamaCppEngine
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig
from sapphire.model.events import Quote
from sapphire.model.instrument import Instrument

REPO = Path(__file__).resolve().parents[1]
BBO = "book/hftbacktest_binance-spot_BTCUSDT_bbo.csv.gz"
BTC = Instrument(symbol="BTCUSDT", tick_size="0.01", lot_size="0.00001")


def shared_data() -> Path:
    return Path(os.environ.get("SAPPHIRE_SHARED_DATA", REPO.parent / "shared" / "data"))


def real_prompts(n: int) -> list[DecisionPrompt]:
    agent = LlmAgent("bench", BTC, {"decision_interval_ns": 2_000_000_000})
    prompts: list[DecisionPrompt] = []
    with gzip.open(shared_data() / BBO, "rt") as fh:
        for row in csv.DictReader(fh):
            q = Quote(
                ts_event_ns=int(row["local_ts_ns"]),
                symbol="BTCUSDT",
                bid_ticks=BTC.price_to_ticks(row["bid_px"]),
                bid_lots=BTC.qty_to_lots(row["bid_qty"]),
                ask_ticks=BTC.price_to_ticks(row["ask_px"]),
                ask_lots=BTC.qty_to_lots(row["ask_qty"]),
            )
            agent.on_event(q, q.ts_event_ns)
            for req in agent.drain_requests():
                prompts.append(req.prompt)
                agent.on_decision(req.request_id, "hold", q.ts_event_ns)  # unblock the next
            if len(prompts) >= n:
                return prompts
    return prompts


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Mode:
    """One way of answering prompts; accumulates its outputs and latencies."""

    def __init__(self, engine: LlamaCppEngine, batch: int) -> None:
        self.engine, self.batch = engine, batch
        self.gens: list[Generation] = []
        self.latencies: list[float] = []
        self.wall = 0.0

    def answer(self, prompts: list[DecisionPrompt]) -> None:
        for start in range(0, len(prompts), self.batch):
            chunk = prompts[start : start + self.batch]
            t = time.perf_counter()
            self.gens += self.engine.generate_batch_detailed(chunk)
            dt = time.perf_counter() - t
            self.latencies += [dt] * len(chunk)
            self.wall += dt


def summarize(gens: list[Generation], latencies: list[float], wall: float) -> dict[str, float]:
    stats = DecisionStats()
    for g in gens:
        stats.record(parse_decision(g.text))
    answered = max(1, len(gens))
    return {
        "decisions_per_s": len(gens) / wall,
        "tokens_per_s": sum(g.completion_tokens for g in gens) / wall,
        "p50_ms": 1e3 * pct(latencies, 0.5),
        "p95_ms": 1e3 * pct(latencies, 0.95),
        "malformed_rate": stats.malformed_json / answered,
        "schema_violation_rate": stats.schema_violation / answered,
        "mean_completion_tokens": statistics.fmean(g.completion_tokens for g in gens),
        "wall_s": wall,
    }


def load_average() -> str:
    """The 1-minute load average (what ``uptime`` prints first): the machine is shared."""
    return f"{os.getloadavg()[0]:.2f}"


def serve_modes(prompts: list[DecisionPrompt], args: argparse.Namespace) -> dict[str, Any]:
    """The same prompts through the Ray Serve deployment with ``max_batch_size`` 1
    (unbatched) and ``args.batch`` (continuous batching): ``args.batch`` concurrent callers,
    each sending its next request as soon as its answer returns, so requests arrive while
    others decode. Both apps stay deployed and the rounds alternate which runs first, so
    load from other processes falls on both alike; the ratio reported is the median of the
    per-round ratios."""
    import asyncio

    import msgspec
    import ray
    from ray import serve

    from actors.serve.llm_app import build_app

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    engine = args.engine or {
        "kind": "llamacpp",
        "n_threads": args.threads,
        "n_threads_batch": args.threads_batch,
        "max_parallel": args.batch,
        "requantize": "q4_0",
        "flash_attn": not args.no_flash_attn,
        "kv_type": args.kv_type,
        "sampling": {"max_tokens": args.max_tokens},
    }
    bodies = [msgspec.to_builtins(p) for p in prompts]
    sizes = (1, args.batch)
    names = {size: f"serve max_batch_size={size}" for size in sizes}
    acc: dict[int, dict[str, Any]] = {
        size: {"gens": [], "lats": [], "wall": 0.0, "per_round": [], "batch": [], "wait": []}
        for size in sizes
    }
    ratios: list[float] = []
    loads: list[str] = [load_average()]
    out: dict[str, Any] = {}
    try:
        handles: dict[int, Any] = {}
        for size in sizes:
            app = build_app(
                {
                    "engine": engine,
                    "max_batch_size": size,
                    "batch_wait_timeout_s": args.batch_wait,
                    # both replicas deployed at once on the 2-CPU cluster; neither decodes
                    # while the other is measured
                    "ray_actor_options": {"num_cpus": 0.5},
                }
            )
            handles[size] = serve.run(app, name=f"bench-{size}", route_prefix=None)
            handles[size].remote(bodies[0]).result()  # warm-up

        async def drive(h: Any) -> tuple[list[dict[str, Any]], list[float]]:
            queue = list(reversed(bodies))
            replies: list[dict[str, Any]] = []
            lats: list[float] = []

            async def caller() -> None:
                while queue:
                    body = queue.pop()
                    t = time.perf_counter()
                    replies.append(await h.remote(body))
                    lats.append(time.perf_counter() - t)

            await asyncio.gather(*(caller() for _ in range(args.batch)))
            return replies, lats

        for r in range(args.rounds):
            rate: dict[int, float] = {}
            for size in sizes if r % 2 == 0 else tuple(reversed(sizes)):
                t0 = time.perf_counter()
                replies, lats = asyncio.run(drive(handles[size]))
                wall = time.perf_counter() - t0
                a = acc[size]
                a["gens"] += [
                    Generation(text=x["text"], completion_tokens=int(x.get("completion_tokens", 0)))
                    for x in replies
                ]
                a["lats"] += lats
                a["wall"] += wall
                a["batch"] += [float(x.get("batch_size_mean", 0.0)) for x in replies]
                a["wait"] += [int(x.get("queue_wait_ns", 0)) / 1e6 for x in replies]
                rate[size] = len(replies) / wall
                a["per_round"].append(rate[size])
            ratios.append(rate[args.batch] / rate[1])
            loads.append(load_average())
            print(
                f"  round {r + 1}: serve 1 {rate[1]:.2f}/s, {args.batch} "
                f"{rate[args.batch]:.2f}/s, ratio {ratios[-1]:.2f}x (load {loads[-1]})",
                flush=True,
            )
        for size in sizes:
            a = acc[size]
            res = summarize(a["gens"], a["lats"], a["wall"])
            res["median_round_decisions_per_s"] = statistics.median(a["per_round"])
            res["mean_batch"] = statistics.fmean(a["batch"])
            res["p50_queue_wait_ms"] = pct(a["wait"], 0.5)
            out[names[size]] = res
        out["serve_ratios"] = ratios
        out["serve_loads"] = loads
        for size in sizes:
            serve.delete(f"bench-{size}")
    finally:
        serve.shutdown()
        ray.shutdown()
    return out


SWEEP: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (LlamaCppConfig fields, LlamaCppEngine tuning arguments)
    "t1 fa mixed": ({"n_threads": 1}, {}),
    "t1 fa separate-prefill": ({"n_threads": 1}, {"mixed_prefill": False}),
    "t1 fa repack": ({"n_threads": 1}, {"repack": True}),
    "t1 no-fa": ({"n_threads": 1, "flash_attn": False}, {}),
    "t1 no-fa ctx1536": ({"n_threads": 1, "flash_attn": False, "n_ctx": 1536}, {}),
    "t1 fa ctx1536": ({"n_threads": 1, "n_ctx": 1536}, {}),
    "t1 fa kv-q8": ({"n_threads": 1, "kv_type": "q8_0"}, {}),
    "t1 ubatch128": ({"n_threads": 1}, {"n_ubatch": 128}),
    "t2 fa mixed": ({"n_threads": 2}, {}),
    "t1 batch-threads2": ({"n_threads": 1}, {"n_threads_batch": 2}),
    "t1 kv-q8 batch-threads2": ({"n_threads": 1, "kv_type": "q8_0"}, {"n_threads_batch": 2}),
}


def sweep(args: argparse.Namespace) -> None:
    """Engine settings (Q4_0) compared in alternated rounds: per round and variant, the same
    prompts one at a time (unbatched) and through the continuous-batching loop with
    ``args.batch`` slots; medians of the per-round figures."""
    prompts = real_prompts(args.prompts)
    sampling = SamplingConfig(max_tokens=args.max_tokens)
    chosen = args.sweep.split(",") if args.sweep != "all" else list(SWEEP)
    engines = {}
    for name in chosen:
        fields, tuning = SWEEP[name]
        cfg = {"max_parallel": args.batch, "requantize": "q4_0", "flash_attn": True, **fields}
        engines[name] = LlamaCppEngine(LlamaCppConfig(sampling=sampling, **cfg), **tuning)
        engines[name].generate_batch(prompts[:1])  # warm-up
    rates: dict[str, dict[str, list[float]]] = {n: {"1": [], "b": []} for n in chosen}
    loads = [load_average()]
    for r in range(args.rounds):
        order = chosen if r % 2 == 0 else list(reversed(chosen))
        for name in order:
            eng = engines[name]
            for mode in ("1", "b") if r % 2 == 0 else ("b", "1"):
                t = time.perf_counter()
                if mode == "1":
                    for p in prompts:
                        eng.generate_batch([p])
                else:
                    eng.generate_batch(prompts)
                rates[name][mode].append(len(prompts) / (time.perf_counter() - t))
        loads.append(load_average())
        print(f"  round {r + 1} done (load {loads[-1]})", flush=True)
    print(f"sweep: {len(prompts)} prompts, {args.batch} slots, load {' -> '.join(loads)}")
    for name in chosen:
        one, bat = rates[name]["1"], rates[name]["b"]
        ratios = [b / o for o, b in zip(one, bat, strict=True)]
        t = engines[name].timings
        print(
            f"{name:26s} unbatched {statistics.median(one):6.2f}/s  batched "
            f"{statistics.median(bat):6.2f}/s  ratio {statistics.median(ratios):.2f}x "
            f"(rounds {', '.join(f'{x:.2f}' for x in ratios)})  grammar "
            f"{t.overhead:.1%} of decode"
        )


def _decode_pass(engine: Any, tokens: list[int], seqs: list[int], pos: list[int]) -> float:
    """Seconds of one ``llama_decode`` of ``tokens`` (one per sequence) in the engine's
    own context and batch, logits for each."""
    raw = engine._batch.batch
    for j, (tok, seq, p) in enumerate(zip(tokens, seqs, pos, strict=True)):
        raw.token[j], raw.pos[j], raw.n_seq_id[j] = tok, p, 1
        raw.seq_id[j][0], raw.logits[j] = seq, 1
    raw.n_tokens = len(tokens)
    t = time.perf_counter()
    engine._ctx.decode(engine._batch)
    return time.perf_counter() - t


def step_costs(args: argparse.Namespace) -> None:
    """What bounds batching on this CPU: one forward pass carrying the next token of ``n``
    sequences (n = 1..16), each sequence holding ``kv`` cached tokens (the shared prompt
    prefix, copied as the engine copies it), with and without flash attention. The engine's
    own context and batch (Q4_0 copy, ``--threads``); medians of 10 passes."""
    for flash in (True, False):
        cfg = LlamaCppConfig(
            n_threads=args.threads,
            requantize="q4_0",
            flash_attn=flash,
            max_parallel=16,
            n_ctx=8192,
        )
        engine = LlamaCppEngine(cfg)
        ctx = engine._ctx

        def decode(tokens: list[int], seqs: list[int], pos: list[int], e: Any = engine) -> float:
            return _decode_pass(e, tokens, seqs, pos)

        for kv in (8, 500):
            for seq in range(17):
                ctx.kv_cache_seq_rm(seq, -1, -1)
            decode([100 + i % 50 for i in range(kv)], [0] * kv, list(range(kv)))
            for seq in range(1, 16):
                ctx.kv_cache_seq_cp(0, seq, 0, kv)
            nxt = [kv] * 16
            for n in (1, 2, 4, 8, 16):
                times = []
                for _ in range(12):
                    times.append(decode([200] * n, list(range(n)), nxt[:n]))
                    for seq in range(n):
                        nxt[seq] += 1
                ms = statistics.median(times[2:]) * 1e3
                print(
                    f"flash_attn {flash!s:5}  cached tokens {kv:3}  sequences {n:2}: "
                    f"{ms:7.2f} ms a pass, {ms / n:6.2f} ms a token",
                    flush=True,
                )
    print(f"load average {load_average()}")


def print_serve(results: dict[str, Any], batch: int) -> None:
    for size in (1, batch):
        r = results[f"serve max_batch_size={size}"]
        print(
            f"serve max_batch_size={size}: {r['decisions_per_s']:.2f} decisions/s overall "
            f"(median round {r['median_round_decisions_per_s']:.2f}), {r['tokens_per_s']:.1f} "
            f"tok/s, p50/p95 {r['p50_ms']:.0f}/{r['p95_ms']:.0f} ms, queue wait p50 "
            f"{r['p50_queue_wait_ms']:.0f} ms, mean batch {r['mean_batch']:.2f}, malformed "
            f"{r['malformed_rate']:.1%}, {r['mean_completion_tokens']:.1f} tok/decision"
        )
    ratios = results["serve_ratios"]
    s1 = results["serve max_batch_size=1"]["median_round_decisions_per_s"]
    sb = results[f"serve max_batch_size={batch}"]["median_round_decisions_per_s"]
    print(
        f"Serve batched/unbatched throughput: median of rounds {statistics.median(ratios):.2f}x "
        f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}; ratio of median rates "
        f"{sb / s1:.2f}x); load average {' -> '.join(results['serve_loads'])}"
    )


def shipped_args(path: str) -> tuple[dict[str, Any], int, float]:
    """The first application's engine args, ``max_batch_size`` and batch wait in a Serve
    YAML (``serve_configs/llm_cpu.yaml``): the setting a user deploys."""
    import yaml

    with open(path) as fh:
        app_args = yaml.safe_load(fh)["applications"][0]["args"]
    return (
        dict(app_args["engine"]),
        int(app_args.get("max_batch_size", 8)),
        float(app_args.get("batch_wait_timeout_s", 0.02)),
    )


def serve_only(args: argparse.Namespace) -> None:
    prompts = real_prompts(args.prompts)
    if args.serve_config:
        args.engine, args.batch, args.batch_wait = shipped_args(args.serve_config)
        print(f"Serve only: {args.serve_config} engine {args.engine}")
        print(f"  prompts {len(prompts)} (real BBO)  callers {args.batch}  rounds {args.rounds}")
    else:
        print(
            f"Serve only: threads {args.threads}  prompts {len(prompts)} (real BBO)  "
            f"callers {args.batch}  rounds {args.rounds}  flash_attn {not args.no_flash_attn}  "
            f"kv {args.kv_type}"
        )
    print_serve(serve_modes(prompts, args), args.batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--threads-batch", type=int, default=0, help="Serve: n_threads_batch (0: --threads)"
    )
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--no-reference", action="store_true", help="skip the sequential path")
    ap.add_argument("--serve", action="store_true", help="also through Ray Serve (1 vs batch)")
    ap.add_argument("--serve-only", action="store_true", help="only the Serve comparison")
    ap.add_argument(
        "--serve-config",
        default="",
        help="--serve-only with the engine, batch size and wait of this Serve YAML "
        "(e.g. serve_configs/llm_cpu.yaml) instead of the flags",
    )
    ap.add_argument("--rounds", type=int, default=3, help="alternated Serve rounds")
    ap.add_argument("--batch-wait", type=float, default=0.02, help="Serve batch_wait_timeout_s")
    ap.add_argument("--no-flash-attn", action="store_true")
    ap.add_argument(
        "--kv-type", default="f16", choices=["f16", "q8_0"], help="KV cache type (Serve)"
    )
    ap.add_argument(
        "--sweep", default="", help=f"engine settings to compare: all or some of {list(SWEEP)}"
    )
    ap.add_argument(
        "--step-costs",
        action="store_true",
        help="time one llama_decode of 1..16 sequences' next tokens at short and long contexts",
    )
    args = ap.parse_args()
    args.engine = None
    if args.step_costs:
        step_costs(args)
        return
    if args.sweep:
        sweep(args)
        return
    if args.serve_only:
        serve_only(args)
        return

    prompts = real_prompts(args.prompts)
    sampling = SamplingConfig(max_tokens=args.max_tokens)
    rss0 = rss_bytes()
    engine = LlamaCppEngine(
        LlamaCppConfig(n_threads=args.threads, max_parallel=args.batch, sampling=sampling)
    )
    rss_model = rss_bytes() - rss0
    fast = LlamaCppEngine(
        LlamaCppConfig(
            n_threads=args.threads,
            max_parallel=args.batch,
            sampling=sampling,
            requantize="q4_0",
            flash_attn=True,
        )
    )
    print(f"model {engine.model_id}  threads {args.threads}  prompts {len(prompts)} (real BBO)")
    modes = {
        "Q4_1 unbatched": Mode(engine, 1),
        f"Q4_1 batched({args.batch})": Mode(engine, args.batch),
        "Q4_0+flash-attn unbatched": Mode(fast, 1),
        f"Q4_0+flash-attn batched({args.batch})": Mode(fast, args.batch),
    }
    if not args.no_reference:
        ref = LlamaCppEngine(
            LlamaCppConfig(n_threads=args.threads, parallel=False, sampling=sampling)
        )
        modes["Q4_1 reference create_chat_completion"] = Mode(ref, 1)
    for mode in modes.values():
        mode.engine.generate_batch(prompts[:1])  # warm-up: page in the weights
    # Interleave the modes group by group: on a shared machine, load from other processes
    # then falls on every mode alike instead of on whichever ran during a busy minute.
    for start in range(0, len(prompts), args.batch):
        group = prompts[start : start + args.batch]
        for mode in modes.values():
            mode.answer(group)
    results = {name: summarize(m.gens, m.latencies, m.wall) for name, m in modes.items()}
    serve: dict[str, Any] = serve_modes(prompts, args) if args.serve else {}
    results.update({k: v for k, v in serve.items() if k.startswith("serve max")})
    head = f"{'mode':36s} {'dec/s':>7s} {'tok/s':>7s} {'p50 ms':>8s} {'p95 ms':>8s}"
    print(head + f" {'malformed':>9s} {'schema':>7s} {'tok/dec':>7s}")
    for name, r in results.items():
        print(
            f"{name:36s} {r['decisions_per_s']:7.2f} {r['tokens_per_s']:7.1f} "
            f"{r['p50_ms']:8.0f} {r['p95_ms']:8.0f} {r['malformed_rate']:9.1%} "
            f"{r['schema_violation_rate']:7.1%} {r['mean_completion_tokens']:7.1f}"
        )
    for q in ("Q4_1", "Q4_0+flash-attn"):
        un, ba = results[f"{q} unbatched"], results[f"{q} batched({args.batch})"]
        ratio = ba["decisions_per_s"] / un["decisions_per_s"]
        print(f"{q}: batched/unbatched throughput {ratio:.2f}x")
    # structured output: the grammar's share of the decode loop (both modes of an engine)
    for q, eng in (("Q4_1", engine), ("Q4_0+flash-attn", fast)):
        t = eng.timings
        per = 1e6 / max(1, t.tokens)
        print(
            f"{q}: grammar sampling {t.sample_s * per:.0f} us/token vs forward passes "
            f"{t.decode_s * per:.0f} us/token over {t.tokens:,} tokens: structured-output "
            f"overhead <= {t.overhead:.1%} of decode time (goal < 10 %)"
        )
    if args.serve:
        print_serve(serve, args.batch)
    n_params, mib = engine.n_params, 2**20
    print(f"memory: 16-bit = {n_params:,} params x 2 B = {n_params * 2 / mib:.1f} MiB")
    for name, eng in (("Q4_1", engine), ("Q4_0", fast)):
        weights = eng.weights_bytes
        print(
            f"  4-bit {name}: weights {weights / mib:.1f} MiB, GGUF file "
            f"{eng.model_file_bytes / mib:.1f} MiB -> {n_params * 2 / weights:.2f}x smaller"
        )
    print(f"  process RSS growth loading Q4_1 engine: {rss_model / mib:.1f} MiB (+KV, buffers)")


if __name__ == "__main__":
    main()
