from __future__ import annotations

from pathlib import Path
from typing import Any

from sapphire.config.system import SystemConfig, parse_config

LATENCY = {
    "feed_ns": 2_000_000,
    "decision_ns": 500_000,
    "entry_ns": 20_000_000,
    "response_ns": 20_000_000,
}
DEMO_AGENTS: list[dict[str, Any]] = [
    {
        "id": "mm_as",
        "kind": "avellaneda_stoikov",
        "symbol": "BTCUSDT",
        "weight": 2.0,
        "params": {"order_amount": 0.002, "max_inventory": 0.02, "order_refresh_time": 0.5},
    },
    {
        "id": "momentum",
        "kind": "momentum",
        "symbol": "BTCUSDT",
        "params": {"order_lots": 2, "allow_short": True},
    },
    {
        "id": "meanrev",
        "kind": "mean_reversion",
        "symbol": "BTCUSDT",
        "params": {"order_lots": 2, "allow_short": True},
    },
]


def kernel_config(root: Path | str = "runs", **overrides: Any) -> SystemConfig:
    """The demo's agents and limits on a slice of the bundled sample."""
    raw: dict[str, Any] = {
        "data": {"source": "sample", "max_events": 30_000},
        "agents": DEMO_AGENTS,
        "risk": {
            "price_band_bps": 50,
            "default_agent": {
                "max_position_lots": 50,
                "max_notional_quote": "5000",
                "max_order_lots": 20,
                "max_orders_per_second": 20,
            },
        },
        "exchange": {
            "kind": "paper",
            "params": {"balances": {"USDT": "100000", "BTC": "0"}, "latency": LATENCY},
        },
        "storage": {"root": str(root)},
        # as the demo: opposing agents cross in the firm (parity and window tests cover it)
        "coordinator": {"crossing": "internal"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_config(raw)
