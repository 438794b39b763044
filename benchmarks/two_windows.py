"""configs/demo.yaml (30,000 events) through `sapphire backtest` and `sapphire run` at windows of
20 ms (the lookahead) and 5 ms; every stored fills/orders/pnl/risk table must be identical.

    .venv/bin/python benchmarks/two_windows.py
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec

from sapphire.storage.query import read_table

REPO = Path(__file__).resolve().parents[1]
raw = msgspec.yaml.decode((REPO / "configs/demo.yaml").read_bytes())
tmp = Path(tempfile.mkdtemp(prefix="two-windows-"))
raw["data"]["max_events"] = 30_000
raw["storage"] = {"root": str(tmp / "runs")}
runs = {}
for window in (20_000_000, 5_000_000):
    raw["data"]["window_ns"] = window
    cfg = tmp / f"w{window}.yaml"
    cfg.write_bytes(msgspec.yaml.encode(raw))
    for cmd in ("backtest", "run"):
        rid = f"{cmd}-{window // 1_000_000}ms"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sapphire.cli",
                cmd,
                "--config",
                str(cfg),
                "--run-id",
                rid,
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        line = " ".join(done.stdout.split()).split(" timing:")[0]
        print(f"{rid}: exit {done.returncode}; {line}")
        runs[rid] = {
            t: read_table(tmp / "runs" / "store", t, rid)
            .drop("run_id", "date")
            .collect()
            .sort("seq")
            for t in ("fills", "orders", "pnl", "risk_decisions")
        }
base = runs["backtest-20ms"]
for rid, tables in runs.items():
    same = {t: tables[t].equals(base[t]) for t in base}
    print(rid, "fills", tables["fills"].height, "identical to backtest-20ms:", same)
