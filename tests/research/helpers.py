"""Small tune configs on real data (the bundled sample, or a slice of ../shared/data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sapphire.data.sample import SAMPLE_DIR
from sapphire.research.tune_config import TuneConfig, parse_tune_config

SAMPLE_TICKS = {
    "depth": "sample:hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz",
    "bbo": "sample:hftbacktest_binance-usdm_BTCUSDT_bbo.csv.gz",
    "trades": "sample:hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz",
    "session": "2024-08-08",
    "seconds": 90,
}

SAMPLE_INSTRUMENT = {
    "symbol": "BTCUSDT",
    "base": "BTC",
    "quote": "USDT",
    "tick_size": "0.1",
    "lot_size": "0.001",
    "maker_fee_bps": "2",
    "taker_fee_bps": "5",
}


def as_config(storage: Path, **over: Any) -> TuneConfig:
    raw: dict[str, Any] = {
        "name": "as_test",
        "backtest": {
            "name": "as",
            "agent": {
                "kind": "avellaneda_stoikov",
                "id": "as-1",
                "params": {"order_amount": 0.002, "max_inventory": 0.02},
            },
            "instrument": SAMPLE_INSTRUMENT,
            "engine": "event",
            "ticks": SAMPLE_TICKS,
            "paper": {"balances": {"USDT": "1000000", "BTC": "10"}},
        },
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
