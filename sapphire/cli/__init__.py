"""The ``sapphire`` command. Each sub-command lives in its own module and registers itself.

The CLI is an edge of the pure package: commands that need Ray (``run``, ``tune``) import
``actors`` lazily inside their handler, so ``sapphire`` stays importable without Ray.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

# command -> the module that defines it (with ``register(subparsers)``)
_COMMAND_MODULES = {
    "data": "sapphire.cli.data_cmd",
    "run": "sapphire.cli.run_cmd",
    "backtest": "sapphire.cli.backtest_cmd",
    "query": "sapphire.cli.query_cmd",
    "tune": "sapphire.cli.tune_cmd",
    "report": "sapphire.cli.report_cmd",
    "kill-switch": "sapphire.cli.kill_switch_cmd",
    "stop": "sapphire.cli.stop_cmd",
    "new-agent": "sapphire.cli.new_agent_cmd",
    "config-reference": "sapphire.cli.config_reference",
}


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum`` (a count below it ran
    nothing and exited 0, hung Ray, or meant "all")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def one_line(exc: BaseException) -> str:
    """An error's first line: a store's client may say more on the lines after it
    (BigQuery: "Location: US", "Job ID: ..."), and a command's error is one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or, for a known ``command``, just that command: a backtest need not
    import the report's plotting libraries first (about a second of a short run)."""
    parser = argparse.ArgumentParser(prog="sapphire", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    if command in _COMMAND_MODULES:
        modules = [_COMMAND_MODULES[command]]
    else:  # help, or a mistyped command: argparse lists every command
        modules = list(_COMMAND_MODULES.values())
    for name in modules:
        importlib.import_module(name).register(subparsers)
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
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list[0] if args_list else None)
    args = parser.parse_args(args_list)
    try:
        result: int = args.handler(args)
    except OSError as exc:
        # a path the command cannot write or read (a folder that is a file, no permission,
        # a full disk) that no handler turned into its own message: one line, never a
        # traceback, never exit 0
        print(f"sapphire {args.command}: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
