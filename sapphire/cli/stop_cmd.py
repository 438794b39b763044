"""``sapphire stop RUN_ID``: halt one run from its next step (``--all``: every run on the store).

A stopped run sends no new order and cancels its resting ones; it keeps recording market
data and reports until it ends or is ended (Ctrl-C, ``ray job stop``), so every fill still
reaches the store. The request is a file in the run's folder of the store root
(``<storage.root>/<run_id>/kill-switch.json``, and a Redis key of that store root and run
id when ``kill_switch.redis`` is set), which ``sapphire run`` and ``sapphire backtest`` read
before every step: it binds across crashes and ``--resume``; ``sapphire stop RUN_ID --reset
--reason ...`` clears the request (a run it already halted stays halted). ``--all`` trips
the firm-wide switch (``sapphire kill-switch trip``): every run on that store root halts.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from sapphire.adapters.kill_switch import (
    FirmKillSwitch,
    HalfApplied,
    RunKillSwitch,
    is_run_folder,
    root_used,
    run_kill_switch,
    system_kill_switch,
)
from sapphire.kernel.assembly import run_is_live
from sapphire.model.times import utc_text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stop", help="halt a run (no new orders, resting ones cancelled)", description=__doc__
    )
    parser.add_argument("run_id", nargs="?", default=None, help="the run to stop")
    parser.add_argument(
        "--all", action="store_true", help="every run on the store root (the firm kill switch)"
    )
    parser.add_argument("--config", default=None, help="the run's system config (its store)")
    parser.add_argument("--root", default="runs", help="the store root (storage.root)")
    parser.add_argument("--reason", default="", help="why (stored with the command)")
    parser.add_argument("--by", default="", help="operator name (default: the OS user)")
    parser.add_argument(
        "--reset",
        action="store_true",
        help="clear a stop request (needs --reason); a run it halted stays halted",
    )
    parser.add_argument(
        "--pending",
        action="store_true",
        help="stop a run id (with --all: a store root) before any run started there (it starts "
        "halted); without it an id with no run on the store root is refused",
    )
    parser.set_defaults(handler=handle)


def _switch(args: argparse.Namespace) -> FirmKillSwitch:
    if args.config:
        from sapphire.config.system import load_config

        config = load_config(args.config)
        if args.all:
            return system_kill_switch(config)
        return run_kill_switch(config, args.run_id)
    if args.all:
        return FirmKillSwitch(args.root)
    return RunKillSwitch(Path(args.root).resolve() / args.run_id)


def handle(args: argparse.Namespace) -> int:
    from sapphire.config.secrets import SecretError
    from sapphire.config.system import ConfigError, check_run_id

    if bool(args.run_id) == bool(args.all):
        print("sapphire stop: give a RUN_ID, or --all for every run", file=sys.stderr)
        return 2
    if args.reset and not args.reason:
        print("sapphire stop: --reset needs --reason (it is stored)", file=sys.stderr)
        return 2
    try:
        if args.run_id:
            check_run_id(args.run_id)
        switch = _switch(args)
    except (ConfigError, SecretError) as exc:
        print(f"sapphire stop: {exc}", file=sys.stderr)
        return 2
    by = args.by or getpass.getuser()
    # a run's folder (a store root for --all) is made when a run starts; a Redis-held switch
    # binds runs on other machines' roots, where this one cannot look
    used = root_used(switch.root) if args.all else switch.root.is_dir()
    started = used or switch.redis is not None
    if not started and not args.pending:
        # a mistyped id or root must not answer STOPPED while the runs meant go on trading
        why = (
            f"no run has used the store root {switch.root}"
            if args.all
            else _unknown(switch.root, args.run_id)
        )
        print(f"sapphire stop: {why}; nothing stopped", file=sys.stderr)
        return 2
    what = "every run on this store (firm kill switch)" if args.all else f"run {args.run_id}"
    try:
        if args.reset:
            state = switch.reset(args.reason, by)
        else:
            state = switch.trip(args.reason or "sapphire stop", by)
    except HalfApplied as exc:
        print(
            f"sapphire stop: {what}: only half done: {exc}; runs on this machine's store root "
            "obey it, the same run id on other machines does not: run the command again",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # the file refused: nothing was stopped, say so
        print(f"sapphire stop: {what}: failed, NOT stopped: {exc}", file=sys.stderr)
        return 1
    when = utc_text(state.ts_ns)
    if args.reset:
        print(f"{what}: stop lifted at {when} by {by} ({state.reason})")
        print("  the request is cleared; a run it already halted stays halted")
        return 0
    print(f"{what}: STOPPED at {when} by {by} ({state.reason})")
    if not args.all and started and not run_is_live(switch.root):
        # the run's claim (made at its start, released at its end) is not there
        print(
            f"  run {args.run_id} is not running on this machine now (finished, or running "
            "on another): the stop binds its --resume, and a run of that id elsewhere"
        )
    else:
        print(
            "  from its next step no new order leaves and resting orders are cancelled; it "
            "keeps recording until it ends (Ctrl-C or `ray job stop` ends it now)"
        )
    print(f"  switch: {switch.root / 'kill-switch.json'}")
    if switch.redis is not None:  # the key the run reads (run_kill_switch: the same for both)
        print(f"  redis key: {switch.redis.key}")
    if not started:
        if args.all:
            print(f"  pending: no run has used {switch.root} yet; runs started there start halted")
        else:
            where = switch.root.parent
            print(f"  pending: no run {args.run_id} has started on {where}; it starts halted")
    return 0


def _unknown(run_dir: Path, run_id: str) -> str:
    """Why ``run_id`` is refused: no run folder (made when a run starts) on that store root,
    and the runs that are there, so the operator sees the id or the root they meant."""
    root = run_dir.parent
    if not root.is_dir():
        return f"no store root at {root} (give the run's --config, or its --root)"
    if not root_used(root):
        return (
            f"no run has used {root} as its store root (storage.root: the folder holding "
            "store/, not store/ itself; or give the run's --config)"
        )
    folders = [p for p in root.iterdir() if is_run_folder(p)]
    runs = [p.name for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]
    shown = ", ".join(runs[:10]) if runs else "none"
    more = f" (the 10 latest of {len(runs)})" if len(runs) > 10 else ""
    return (
        f"no run {run_id!r} on store root {root}: runs there{more}: {shown} "
        "(--pending stops an id before its run starts)"
    )
