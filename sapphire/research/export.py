"""The best parameters as configs ready to run: a backtest YAML and a system YAML.

The backtest YAML is the tune config's own backtest with the agent's params replaced, so
``sapphire backtest --config`` reproduces the tuned run on the whole span. The system YAML
(``sapphire run --config``) is either ``output.system_template`` with the tuned agent's
params swapped in (agents of the same kind), or (:func:`bar_system`) a one-agent system on
the tuned OHLCV file, its instrument inferred from that file and written beside it, and the
bar venue (fills at the next bar's open, the backtest's costs); either way it is validated
with the system config's own parser before it is written.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from sapphire.config.system import parse_config as parse_system
from sapphire.data.instruments import infer_frame_instrument, instrument_json
from sapphire.data.registry import detect
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError
from sapphire.model.instrument import Instrument
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
    cfg: TuneConfig,
    best: dict[str, Any],
    rewrite: Callable[[str], str] = str,
    instrument: Instrument | None = None,
) -> dict[str, Any]:
    """The backtest config with the tuned params; data paths passed through ``rewrite``
    (relative paths must be made absolute when the file is written elsewhere).
    ``instrument``: the one the tune traded on, whose grid is written where the config
    left it to be inferred: inferred again from a slice of the file (a fold's window cut
    out to check its score), the lot came out 10,000 times coarser and the score moved."""
    raw = copy.deepcopy(_backtest(cfg))
    raw["name"] = f"{cfg.name}-best"
    raw.setdefault("agent", {})["params"] = tuned_agent_params(cfg, best)
    if instrument is not None:
        grid = raw.setdefault("instrument", {})
        grid.setdefault("tick_size", instrument.tick_size)
        grid.setdefault("lot_size", instrument.lot_size)
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


BAR_VENUE = "sapphire.backtest.bar_gateway:bar_venue"
# A bar is an event at its close; the venue fills an order at the open of the bar after the
# one it was decided on, when that bar comes: the feed delay (longer than the response) hands
# the agent that fill before the bar itself, as the bar engines do, so the strategy never
# skips a bar waiting for its own fill.
BAR_LATENCY = {
    "kind": "constant",
    "feed_ns": 2_000_000,
    "entry_ns": 1_000_000,
    "response_ns": 1_000_000,
}


def bar_instrument(cfg: TuneConfig, resolve: Callable[[str], Path]) -> Instrument:
    """The instrument of the tuned OHLCV file as the system's loader reads it: its symbol
    from the file, a tick and lot that represent every value (the loader rejects values off
    the grid), the base and quote the backtest config names."""
    bt = _backtest(cfg)
    path = resolve(str(bt["ohlcv"][0]))
    try:
        frames = detect(path).load(path)
    except (DataFileError, OSError) as exc:
        raise ValueError(f"tune config {cfg.name}: ohlcv: {exc}") from None
    bars = frames.get(FrameKind.BARS)
    if bars is None or bars.is_empty():
        raise ValueError(f"tune config {cfg.name}: ohlcv {path} holds no bars")
    inst = infer_frame_instrument(bars)
    spec = bt.get("instrument", {})
    return msgspec.structs.replace(
        inst, base=spec.get("base") or inst.base, quote=spec.get("quote") or inst.quote
    )


def bar_system(
    cfg: TuneConfig, best: dict[str, Any], instrument_file: Path, inst: Instrument
) -> dict[str, Any]:
    """A system config that runs the tuned bar strategy on the tuned OHLCV file (what
    ``sapphire backtest`` ran), through the kernel: risk marks at the bars, the bar venue
    fills at the next bar's open with the backtest's costs."""
    bt = _backtest(cfg)
    agent = bt.get("agent", {})
    params = tuned_agent_params(cfg, best)
    stake = dict(bt.get("stake", {}))
    if str(agent.get("kind", "")).startswith("indicator:"):
        params.setdefault("stake", stake)
    cash = str(stake.get("initial_cash", "10000"))
    data: dict[str, Any] = {
        "source": "files",
        "files": [str(bt["ohlcv"][0])],
        "instrument_files": [str(instrument_file)],
    }
    if bt.get("max_bars"):
        data["max_events"] = int(bt["max_bars"])
    # Stakes are a fraction of equity: caps at 10x the starting cash never bind a bar strategy,
    # while lots of a fine-grained instrument (1e-8 BTC) exceed any count-based default.
    notional = str(10 * Decimal(cash))
    unbounded = 10**15
    raw: dict[str, Any] = {
        "data": data,
        "agents": [
            {
                "id": str(agent.get("id", "tuned")).replace("-", "_"),
                "kind": str(agent.get("kind", "")),
                "symbol": inst.symbol,
                "params": params,
            }
        ],
        "exchange": {
            "factory": BAR_VENUE,
            "params": {**dict(bt.get("costs", {})), "latency": dict(BAR_LATENCY)},
        },
        "risk": {
            "max_firm_daily_loss_quote": notional,
            "default_agent": {
                "max_position_lots": unbounded,
                "max_order_lots": unbounded,
                "max_notional_quote": notional,
                "max_daily_loss_quote": notional,
            },
        },
        "capital_quote": cash,
        "storage": {"backend": "parquet", "root": "runs"},
    }
    parse_system(raw, f"tuned system config for {cfg.name}")
    return raw


def write_bar_system(
    cfg: TuneConfig,
    best: dict[str, Any],
    resolve: Callable[[str], Path],
    out: Path,
    header: str = "",
) -> list[Path]:
    """``best_system.yaml`` and the instrument it reads (``best_instrument.json``)."""
    inst = bar_instrument(cfg, resolve)
    out.mkdir(parents=True, exist_ok=True)
    instrument_file = out / "best_instrument.json"
    instrument_file.write_bytes(instrument_json(inst))
    raw = bar_system(cfg, best, instrument_file.resolve(), inst)
    data = raw["data"]
    data["files"] = [p if p.startswith("shared:") else str(resolve(p)) for p in data["files"]]
    return [instrument_file, write_yaml(out / "best_system.yaml", raw, header)]


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
