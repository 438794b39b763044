"""One market maker, the 2024-08-08 USDT-M BTCUSDT data: `sapphire backtest` vs hftbacktest.

    .venv/bin/python benchmarks/vs_hftbacktest.py [--queue conservative|prob_power]
        [--peer-python /tmp/peer-venv/bin/python]

Sapphire's side is the product command, as a user types it: ``sapphire backtest --config
configs/hftbacktest_mm.yaml`` (the trading kernel in one process: the ``grid_maker`` agent,
pre-trade risk, the paper exchange, storage), run as a subprocess and read back from its own
summary line and store. The peer runs in its own venv (default /tmp/peer-venv, hftbacktest
2.4.4) through ``_hftbacktest_mm.py`` in a subprocess; it is never imported here. Strategy on
both sides: every 100 ms, quote one post-only order per side at floor/ceil(mid -/+ 20 ticks),
10 lots, position limit 50 lots, cancel-and-replace when the price moves. Latencies: 10 ms
entry and 10 ms response. Prints fills, final position, PnL, events/s and the ratio.

Both sides replay converted data, as each product does by itself: hftbacktest times its runs
on data converted beforehand (its conversion, ``convert_s``, and its numba-compiling first run
are not timed), and ``sapphire backtest`` converts each file on its first read into its
replay cache (``data.cache``). So the command runs once cold (a fresh cache directory: the
CSV read, checked and converted) and then ``--runs`` times warm (read back converted); the
ratio uses the warm median, and every run must trade the same.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import msgspec
import polars as pl

from sapphire.storage.query import read_table

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "hftbacktest_mm.yaml"
HALF_TICKS, QTY_LOTS, MAX_POS, STEP_NS = 20, 10, 50, 100_000_000
ENTRY_NS = RESPONSE_NS = 10_000_000
LINE = re.compile(r"([\d,]+) events in ([\d,]+) steps, ([\d.]+) s \(([\d,]+) events/s\)")


def shared_data() -> Path:
    override = os.environ.get("SAPPHIRE_SHARED_DATA")
    return Path(override) if override else REPO.parent / "shared" / "data"


def run_sapphire(queue: str, cache_dir: Path) -> dict[str, object]:
    """``sapphire backtest`` on configs/hftbacktest_mm.yaml (the queue model swapped in),
    with its replay cache in ``cache_dir``."""
    raw = msgspec.yaml.decode(CONFIG.read_bytes())
    raw["exchange"]["params"]["queue"] = {"kind": queue}
    raw["data"]["cache_dir"] = str(cache_dir)
    with tempfile.TemporaryDirectory(prefix="sapphire-vs-hbt-") as tmp:
        raw["storage"] = {"root": str(Path(tmp) / "runs")}
        config = Path(tmp) / "mm.yaml"
        config.write_bytes(msgspec.yaml.encode(raw))
        argv = [sys.executable, "-m", "sapphire.cli", "backtest", "--config", str(config)]
        started = time.perf_counter()
        done = subprocess.run(
            [*argv, "--run-id", "vs-hbt", "--no-progress"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=1800,
        )
        total = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"sapphire backtest failed:\n{done.stdout}\n{done.stderr}")
        found = LINE.search(" ".join(done.stdout.split()))
        if found is None:
            raise SystemExit(f"no summary line:\n{done.stdout}")
        store = Path(tmp) / "runs" / "store"
        fills = read_table(store, "fills", "vs-hbt").collect()
        pnl = read_table(store, "pnl", "vs-hbt").collect().sort("seq")
    last = pnl.row(-1, named=True)
    return {
        "wall_s": float(found[3]),
        "command_s": total,
        "fills": fills.height,
        "position_lots": int(last["position_lots"]),
        "pnl": float(Decimal(str(last["equity_quote"]))),
        "fee": float(fills["fee_quote"].cast(pl.Float64).sum()),
        "events": int(found[1].replace(",", "")),
    }


def run_peer(python: str, queue: str) -> dict[str, object]:
    raw = shared_data() / "book" / "raw_hftbacktest" / "usdm_btcusdt_20240808.gz"
    cmd = [
        python,
        str(REPO / "benchmarks" / "_hftbacktest_mm.py"),
        str(raw),
        "auto",
        str(HALF_TICKS),
        str(QTY_LOTS),
        str(MAX_POS),
        str(STEP_NS),
        str(ENTRY_NS),
        str(RESPONSE_NS),
        queue,
        "0.0002",
        "0.0005",
    ]
    # cwd outside the package: hftbacktest ships a module named ``types``.
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd="/tmp")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue", choices=["conservative", "prob_power"], default="conservative")
    parser.add_argument("--peer-python", default="/tmp/peer-venv/bin/python")
    parser.add_argument("--runs", type=int, default=3, help="warm sapphire runs (median)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="sapphire-vs-hbt-cache-") as cache:
        cold = run_sapphire(args.queue, Path(cache))
        warm = sorted(
            (run_sapphire(args.queue, Path(cache)) for _ in range(max(1, args.runs))),
            key=lambda r: float(r["wall_s"]),  # type: ignore[arg-type]
        )
    traded = {(r["fills"], r["position_lots"], r["pnl"], r["events"]) for r in [cold, *warm]}
    if len(traded) != 1:
        raise SystemExit(f"cold and warm runs traded differently: {traded}")
    ours = warm[len(warm) // 2]

    def rate(r: dict[str, object]) -> str:
        return f"{int(r['events']) / float(r['wall_s']):,.0f}"  # type: ignore[call-overload,arg-type]

    print(
        "sapphire backtest cold (first read: CSV checked and converted into the cache): "
        f"{rate(cold)} events/s; warm runs: {', '.join(rate(r) for r in warm)} events/s"
    )
    peer = run_peer(args.peer_python, args.queue)
    convert_s = float(peer["convert_s"])  # type: ignore[arg-type]
    print(
        f"hftbacktest's own conversion of the raw file (not in its timed runs): {convert_s:.2f} s"
    )
    print(
        f"queue model: {args.queue}; constant latency entry {ENTRY_NS // 1_000_000} ms, "
        f"response {RESPONSE_NS // 1_000_000} ms; hftbacktest: median of its timed runs"
    )
    head = ("fills", "position", "pnl USDT", "fees", "events", "run s", "events/s")
    print(f"{'':22}" + "".join(f"{h:>11}" for h in head))
    rates = {}
    for name, r in (("sapphire backtest", ours), ("hftbacktest 2.4.4", peer)):  # warm, timed
        eps = float(r["events"]) / float(r["wall_s"])  # type: ignore[arg-type]
        rates[name] = eps
        print(
            f"{name:22}{r['fills']:>11}{r['position_lots']:>11}{float(r['pnl']):>11.2f}"  # type: ignore[arg-type]
            f"{float(r['fee']):>11.2f}{r['events']:>11}"  # type: ignore[arg-type]
            f"{float(r['wall_s']):>11.3f}{eps:>11,.0f}"  # type: ignore[arg-type]
        )
    ratio = rates["sapphire backtest"] / rates["hftbacktest 2.4.4"]
    fills_off = float(ours["fills"]) / float(peer["fills"]) - 1  # type: ignore[arg-type]
    pnl_off = float(ours["pnl"]) - float(peer["pnl"])  # type: ignore[arg-type]
    print(f"throughput ratio sapphire backtest / hftbacktest: {ratio:.4f}x (goal >= 1.0x)")
    print(f"fills {fills_off:+.1%} (tolerance +-10 %), PnL {pnl_off:+.2f} USDT (a few USDT)")
    print(
        f"sapphire backtest command wall (process start, loading, warm-up sessions): "
        f"{float(ours['command_s']):.1f} s; load average after: {os.getloadavg()}"  # type: ignore[arg-type]
    )
    return 0 if abs(fills_off) <= 0.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
