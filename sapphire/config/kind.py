"""Which of Sapphire's three config files a YAML mapping is, from its top-level keys.

A system config (``sapphire run``, and ``sapphire backtest`` in one process), a bar-backtest
config (``sapphire backtest``) and a tune config (``sapphire tune``) share almost no
top-level key. Given to the wrong command, a file was refused about its first key the
command did not know ("unknown field 'name'", "Expected 'object', got 'str' - at '$.agent'"),
which names no mistake the user made; every command asks this module instead and says which
command runs the file.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

ConfigKind = Literal["system", "bar-backtest", "tune"]

# the command that runs each kind (what an error tells the user to type instead)
RUNS_WITH: dict[ConfigKind, str] = {
    "system": "`sapphire run` (or `sapphire backtest`, in one process)",
    "bar-backtest": "`sapphire backtest`",
    "tune": "`sapphire tune`",
}


@cache
def _own_keys() -> dict[ConfigKind, frozenset[str]]:
    """Each kind's top-level keys that no other kind has, read from the config structs so a
    field added to one is recognised here too. Imported here, not at the top: the tune
    config imports the kernel, which imports this package."""
    from sapphire.backtest.config import BacktestConfig
    from sapphire.config.system import SystemConfig
    from sapphire.research.tune_config import TuneConfig

    fields: dict[ConfigKind, frozenset[str]] = {
        "system": frozenset(SystemConfig.__struct_fields__),
        "bar-backtest": frozenset(BacktestConfig.__struct_fields__),
        "tune": frozenset(TuneConfig.__struct_fields__),
    }
    # ``name`` and ``agent`` are a bar backtest's and a tune's: they tell neither
    return {
        kind: own - frozenset().union(*(f for k, f in fields.items() if k != kind))
        for kind, own in fields.items()
    }


def config_kind(raw: object) -> ConfigKind | None:
    """The kind whose own keys ``raw`` has most of (ties: system, tune, bar-backtest, the
    order the commands that take several kinds try them); None when it has none of any
    kind's (not a mapping, empty, or only shared or unknown keys). A most-keys vote, not
    "any key": a config with one stray key of another kind is still its own kind, and its
    stray key is then refused by name."""
    if not isinstance(raw, dict):
        return None
    keys = {k for k in raw if isinstance(k, str)}
    counts = {kind: len(keys & own) for kind, own in _own_keys().items()}
    order: tuple[ConfigKind, ...] = ("system", "tune", "bar-backtest")
    best = max(order, key=lambda k: counts[k])  # max keeps the first of equals
    return best if counts[best] else None


def wrong_kind(raw: object, origin: str, *accepted: ConfigKind) -> str | None:
    """One line naming ``origin``'s kind and the command that runs it, when that kind is
    recognised and is not one of ``accepted``; None otherwise (the command reads the file
    and says what is wrong with it)."""
    kind = config_kind(raw)
    if kind is None or kind in accepted:
        return None
    wanted = " or ".join(sorted(accepted))
    return f"{origin} is a {kind} config, not a {wanted} config: run it with {RUNS_WITH[kind]}"
