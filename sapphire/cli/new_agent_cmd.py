"""``sapphire new-agent NAME``: a tick agent (or ``--bar``: a bar strategy) and a runnable config.

Writes ``NAME.py`` (a copy of ``sapphire/templates/tick_agent.py`` or ``bar_strategy.py``
with its classes renamed) and ``NAME.yaml`` beside it, in the working directory unless
``--dir`` says otherwise. ``sapphire backtest --config NAME.yaml`` then runs it as it is: the
config names the agent ``NAME:Class``, and ``sapphire`` imports modules from the working
directory (no PYTHONPATH needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import keyword
import sys
from importlib import resources
from pathlib import Path
from typing import Any

TICK_CONFIG = """\
# Tick agent {name} on the bundled 90 s of Binance USDT-M BTCUSDT (depth, trades, book
# ticker) against the paper exchange. Run: sapphire backtest --config {name}.yaml
# (the same file runs on Ray with `sapphire run --config {name}.yaml`).
run_id: ""                 # empty: a fresh id per run
data:
  source: sample
  clock: exchange
  window_ns: 0             # the lookahead: exact at any window up to it
agents:
  - id: {name}
    kind: "{name}:{cls}"   # module {name}.py in the working directory, class {cls}
    symbol: BTCUSDT
    params: {{alpha: 0.05, threshold: 0.3, order_lots: 2, warmup_trades: 50}}
capital_quote: "100000"
risk:
  price_band_bps: 50
  max_firm_daily_loss_quote: "2000"
  default_agent:
    max_position_lots: 50
    max_notional_quote: "5000"
    max_order_lots: 20
    max_orders_per_second: 20
    max_daily_loss_quote: "500"
exchange:
  kind: paper
  params:
    balances: {{USDT: "100000", BTC: "0"}}
    latency:               # the run's timing: a client a few ms from the venue
      kind: constant
      feed_ns: 2000000
      decision_ns: 500000
      entry_ns: 20000000
      response_ns: 20000000
storage:
  backend: parquet
  root: runs               # relative to the working directory
"""

BAR_CONFIG = """\
# Bar strategy {name} on one day of real Bitstamp BTC-USD 1-minute bars, bar by bar.
# Run: sapphire backtest --config {name}.yaml   (engine: vectorized gives the same fills)
name: {name}
agent:
  kind: "indicator:{name}:{cls}"   # module {name}.py in the working directory, class {cls}
  id: {name}
  params:
    strategy_params: {{window: 20, margin: 0.001}}
instrument:
  symbol: BTCUSD           # tick and lot inferred from the file
engine: event
ohlcv:
  - shared:ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv
costs: {{fee_bps: 10, slippage_bps: 2}}
stake: {{stake_fraction: 0.5, initial_cash: 10000}}
output_dir: reports/{name}
"""

# template class names -> suffix of the new ones
_TICK_NAMES = {
    "TemplateTickParams": "Params",
    "TemplateTickState": "State",
    "TemplateTickAgent": "Agent",
}
_BAR_NAMES = {"TemplateBarParams": "Params", "TemplateBarStrategy": "Strategy"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "new-agent",
        help="write a tick agent (or --bar strategy) and its config",
        description=__doc__,
    )
    parser.add_argument("name", help="module name: lowercase letters, digits and '_'")
    parser.add_argument("--bar", action="store_true", help="a bar (OHLCV) strategy")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where (default: here)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.set_defaults(handler=handle)


def class_base(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def render(name: str, bar: bool) -> tuple[str, str]:
    """``(module source, config YAML)`` for an agent module called ``name``."""
    template = "bar_strategy.py" if bar else "tick_agent.py"
    source = resources.files("sapphire.templates").joinpath(template).read_text("utf-8")
    base = class_base(name)
    names = _BAR_NAMES if bar else _TICK_NAMES
    for old, suffix in names.items():
        source = source.replace(old, base + suffix)
    source = source.replace("NAME.yaml", f"{name}.yaml")
    main_class = base + ("Strategy" if bar else "Agent")
    config = (BAR_CONFIG if bar else TICK_CONFIG).format(name=name, cls=main_class)
    return source, config


def _taken(name: str, where: Path) -> bool:
    """A module of that name importable from elsewhere would be imported instead of ours (the
    working directory comes last on ``sys.path``)."""
    if name in sys.builtin_module_names or name in sys.stdlib_module_names:
        return True  # the standard library (os, abc, io are frozen: their origin is no path)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None or spec.origin in ("frozen", "built-in"):
        return spec is not None
    return Path(spec.origin).resolve().parent != where.resolve()


def handle(args: argparse.Namespace) -> int:
    name: str = args.name
    if not name.isidentifier() or keyword.iskeyword(name) or name != name.lower():
        print(
            f"sapphire new-agent: {name!r} is not a module name (use lowercase letters, digits "
            "and '_', not starting with a digit)",
            file=sys.stderr,
        )
        return 2
    from sapphire.agents.registry import INDICATOR_PREFIX

    if f"{name}:" == INDICATOR_PREFIX:
        print(
            f"sapphire new-agent: {name!r} is reserved: kind '{name}:...' names a built-in bar "
            "strategy; pick another",
            file=sys.stderr,
        )
        return 2
    if _taken(name, args.dir):
        print(
            f"sapphire new-agent: {name!r} is an installed module's name; pick another",
            file=sys.stderr,
        )
        return 2
    source, config = render(name, args.bar)
    module_path = args.dir / f"{name}.py"
    config_path = args.dir / f"{name}.yaml"
    existing = [str(p) for p in (module_path, config_path) if p.exists()]
    if existing and not args.force:
        # a refused argument, as the other refusals (2): 1 is a command that failed
        verb = "exists" if len(existing) == 1 else "exist"
        print(
            f"sapphire new-agent: {', '.join(existing)} {verb} (--force overwrites)",
            file=sys.stderr,
        )
        return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    module_path.write_text(source, encoding="utf-8")
    config_path.write_text(config, encoding="utf-8")
    print(f"wrote {module_path} and {config_path}")
    where = "" if args.dir == Path(".") else f"cd {args.dir} && "
    print(f"next: {where}sapphire backtest --config {name}.yaml")
    return 0
