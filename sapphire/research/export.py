"""The best parameters as configs ready to run: a backtest YAML and a system YAML.

The backtest YAML is the tune config's own backtest with the agent's params replaced, so
``sapphire backtest --config`` reproduces the tuned run on the whole span. The system YAML
(``sapphire run --config``) is either ``output.system_template`` with the tuned agent's
params swapped in (agents of the same kind), or a minimal one-agent system on the bundled
sample; either way it is validated with the system config's own parser before it is
written.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from sapphire.config.system import parse_config as parse_system
from sapphire.research.space import apply_params
from sapphire.research.tune_config import TuneConfig

_DATA_KEYS = ("depth", "bbo", "trades")


def _backtest(cfg: TuneConfig) -> dict[str, Any]:
    """The bar-strategy backtest of the tune config (system tunes export through
    ``sapphire.research.system_tune``)."""
    if cfg.backtest is None:
        raise ValueError(f"tune config {cfg.name} has no 'backtest'")
    return cfg.backtest


def tuned_agent_params(cfg: TuneConfig, best: dict[str, Any]) -> dict[str, Any]:
    return apply_params(dict(_backtest(cfg).get("agent", {}).get("params", {})), best)


def backtest_dict(
    cfg: TuneConfig, best: dict[str, Any], rewrite: Callable[[str], str] = str
) -> dict[str, Any]:
    """The backtest config with the tuned params; data paths passed through ``rewrite``
    (relative paths must be made absolute when the file is written elsewhere)."""
    raw = copy.deepcopy(_backtest(cfg))
    raw["name"] = f"{cfg.name}-best"
    raw.setdefault("agent", {})["params"] = tuned_agent_params(cfg, best)
    if "ohlcv" in raw:
        raw["ohlcv"] = [rewrite(p) for p in raw["ohlcv"]]
    if isinstance(raw.get("ticks"), dict):
        for key in _DATA_KEYS:
            if key in raw["ticks"]:
                raw["ticks"][key] = rewrite(raw["ticks"][key])
    raw.pop("output_dir", None)
    return raw


def system_dict(
    cfg: TuneConfig, best: dict[str, Any], template: dict[str, Any] | None = None
) -> dict[str, Any]:
    agent = _backtest(cfg).get("agent", {})
    kind = str(agent.get("kind", ""))
    params = tuned_agent_params(cfg, best)
    if template is not None:
        raw = copy.deepcopy(template)
        agents = raw.setdefault("agents", [])
        matched = [a for a in agents if a.get("kind") == kind]
        for spec in matched:
            spec["params"] = copy.deepcopy(params)
        if not matched:
            agents.append(_agent_spec(agent, kind, params, cfg))
    else:
        paper = _backtest(cfg).get("paper", {})
        raw = {
            "data": {"source": "sample", "batch_events": 2000},
            "agents": [_agent_spec(agent, kind, params, cfg)],
            "exchange": {"kind": "paper", "params": {"balances": paper.get("balances", {})}},
            "storage": {"backend": "parquet", "root": "runs"},
        }
    parse_system(raw, f"tuned system config for {cfg.name}")  # raises with the reason
    return raw


def _agent_spec(
    agent: dict[str, Any], kind: str, params: dict[str, Any], cfg: TuneConfig
) -> dict[str, Any]:
    symbol = _backtest(cfg).get("instrument", {}).get("symbol", "BTCUSDT")
    agent_id = str(agent.get("id", "tuned")).replace("-", "_")
    return {"id": agent_id, "kind": kind, "symbol": symbol, "params": params}


def write_yaml(path: Path, data: dict[str, Any], header: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
    path.write_text(text + msgspec.yaml.encode(data).decode("utf-8"), encoding="utf-8")
    return path
