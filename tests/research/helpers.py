"""Small tune configs on real data (the bundled sample, or a slice of ../shared/data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sapphire.data.sample import SAMPLE_DIR
from sapphire.research.tune_config import TuneConfig, parse_tune_config

SAMPLE_SYSTEM: dict[str, Any] = {
    "data": {"source": "sample"},
    "agents": [
        {
            "id": "as_1",
            "kind": "avellaneda_stoikov",
            "symbol": "BTCUSDT",
            "params": {"order_amount": 0.002, "max_inventory": 0.02},
        }
    ],
    "exchange": {
        "kind": "paper",
        "params": {
            "balances": {"USDT": "1000000", "BTC": "10"},
            "latency": {"entry_ns": 20_000_000, "response_ns": 20_000_000},
        },
    },
    "capital_quote": "10000",
}


def as_config(storage: Path, **over: Any) -> TuneConfig:
    """A tune of the A-S maker's system config on the bundled sample (90 s)."""
    raw: dict[str, Any] = {
        "name": "as_test",
        "system": SAMPLE_SYSTEM,
        "agent": "as_1",
        "space": {
            "risk_factor": {"type": "loguniform", "low": 0.005, "high": 3.0},
            "order_refresh_time": {"type": "uniform", "low": 0.2, "high": 3.0},
        },
        "walk_forward": {"train": 30, "test": 15},
        "search": {"algorithm": "optuna", "num_samples": 6, "max_concurrent": 2, "seed": 3},
        "output": {"storage_path": str(storage)},
    }
    raw.update(over)
    return parse_tune_config(raw)


def resolve(text: str, shared: Path | None = None) -> Path:
    if text.startswith("sample:"):
        return SAMPLE_DIR / text.removeprefix("sample:")
    if text.startswith("shared:") and shared is not None:
        return shared / text.removeprefix("shared:")
    return Path(text)
