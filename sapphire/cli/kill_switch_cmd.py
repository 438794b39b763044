"""``sapphire kill-switch status|trip|reset``: the firm-wide kill switch, for operators.

It lives in the store root (``storage.root`` of the configs, ``runs`` by default). Tripped,
it stops every order of every run that uses that root, from their next step on, and of every
run started after; only ``reset`` clears it. Every command is stored in ``kill-switch.log``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from sapphire.adapters.kill_switch import (
    FirmKillSwitch,
    HalfApplied,
    root_used,
    system_kill_switch,
)
from sapphire.config.secrets import SecretError
from sapphire.model.times import utc_text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "kill-switch", help="trip, reset or show the firm-wide kill switch"
    )
    parser.add_argument("action", choices=["status", "trip", "reset"])
    parser.add_argument("--root", default="runs", help="the store root (storage.root)")
    parser.add_argument(
        "--config",
        default=None,
        help="a system config: its storage.root, and its Redis when kill_switch.redis is true",
    )
    parser.add_argument("--reason", default="", help="why (stored with the command)")
    parser.add_argument("--by", default="", help="operator name (default: the OS user)")
    parser.add_argument(
        "--pending",
        action="store_true",
        help="trip or reset it on a store root no run has used yet (without it, refused)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.config:
        from sapphire.config.system import ConfigError, load_config

        try:
            config = load_config(args.config)
            switch = system_kill_switch(config)
        except (ConfigError, SecretError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        args.root = str(switch.root)
    else:
        switch = FirmKillSwitch(args.root)
    by = args.by or getpass.getuser()
    # a mistyped root must not answer TRIPPED (or "off") for a switch no run reads; a
    # Redis-held one binds runs on other machines' roots, where this one cannot look
    unused = not root_used(switch.root) and switch.redis is None
    if unused and args.action != "status" and not args.pending:
        print(
            f"error: no run has used the store root {switch.root} (give the runs' --root or "
            f"--config; --pending {args.action}s it before any run starts)",
            file=sys.stderr,
        )
        return 2
    if args.action == "reset" and not args.reason:
        print("error: a reset needs --reason (it is stored with the command)", file=sys.stderr)
        return 2
    try:
        if args.action == "trip":
            state = switch.trip(args.reason, by)
        elif args.action == "reset":
            state = switch.reset(args.reason, by)
        else:
            state = switch.state()
    except HalfApplied as exc:  # this root's runs obey it, other machines' do not
        print(
            f"error: kill switch {args.action} only half done: {exc}; runs on {switch.root} "
            f"obey it, runs reading Redis elsewhere do not: run the command again",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # the file refused the command: it did not happen
        print(f"error: kill switch {args.action} failed: {exc}", file=sys.stderr)
        return 1
    when = utc_text(state.ts_ns)
    word = "TRIPPED" if state.tripped else "off"
    detail = f" since {when} by {state.by}: {state.reason}" if state.ts_ns else ""
    if not state.ts_ns and state.reason:  # no command wrote it: an unreadable file or key
        detail = f": {state.reason}"
    print(f"firm kill switch ({args.root}): {word}{detail}")
    if unused:
        print(f"  note: no run has used {switch.root}; is --root/--config the runs'?")
    return 0
