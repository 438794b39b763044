"""The ``sapphire`` command. Each sub-command lives in its own module and registers itself.

The CLI is an edge of the pure package: commands that need Ray (``run``, ``tune``) import
``actors`` lazily inside their handler, so ``sapphire`` stays importable without Ray.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# module name -> it defines ``register(subparsers)``
_COMMAND_MODULES = (
    "sapphire.cli.data_cmd",
    "sapphire.cli.run_cmd",
    "sapphire.cli.backtest_cmd",
    "sapphire.cli.query_cmd",
    "sapphire.cli.tune_cmd",
    "sapphire.cli.report_cmd",
    "sapphire.cli.kill_switch_cmd",
    "sapphire.cli.stop_cmd",
    "sapphire.cli.new_agent_cmd",
    "sapphire.cli.config_reference",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sapphire", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # command not built yet
        module.register(subparsers)
    return parser


def _import_from_cwd() -> None:
    """Agents named ``module:Class`` in a config import from the working directory, as
    ``python -m`` would, without PYTHONPATH. Last on the path, so a stray ``ray.py`` there
    never hides an installed package."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def main(argv: Sequence[str] | None = None) -> int:
    _import_from_cwd()
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
