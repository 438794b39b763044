"""Entry point of the main job, for ``ray job submit -- python -m actors.main --config F``."""

from __future__ import annotations

import argparse
import sys

from actors import cost
from actors.report import print_summary
from actors.system import run_system
from sapphire.config.system import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors.main")
    parser.add_argument("--config", required=True)
    parser.add_argument("--run-id", default=None)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_system(config, run_id=args.run_id)
    print_summary(result)
    if result.cost is not None:
        cost.print_cost(result.cost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
