"""Entry point of the main job, for ``ray job submit -- python -m actors.main --config F``."""

from __future__ import annotations

import argparse
import sys

from actors import cost
from actors.report import print_summary
from actors.system import RayStartFailed, RunFailed, run_system
from sapphire.config.system import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors.main")
    parser.add_argument("--config", required=True)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--resume", metavar="RUN_ID", default=None)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_system(config, run_id=args.resume or args.run_id, resume=bool(args.resume))
    except ValueError as exc:  # config, wiring, data and timing errors: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RunFailed, RayStartFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_summary(result)
    if result.cost is not None:
        cost.print_cost(result.cost)
    if result.failure:
        print(f"error: run {result.run_id} failed: {result.failure}", file=sys.stderr)
        return 1
    if result.unacked_rows:
        print(f"error: {result.unacked_rows} rows were never committed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
