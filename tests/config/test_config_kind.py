"""Which config a file is, from its top-level keys: every config the repository ships is
recognised as what it is, and a stray key of another kind does not change a file's kind."""

from __future__ import annotations

import msgspec
import pytest

from sapphire.config.kind import config_kind, wrong_kind
from sapphire.config.system import ConfigError, load_config
from tests.conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"


def _kind_by_name(name: str) -> str:
    # the repository's naming: tune_*, a bar config is one with `ohlcv`/`ticks` of the bar
    # engines (backtest_ema_cross, run_ema_cross_bars, ...), the rest are system configs
    if name.startswith("tune_"):
        return "tune"
    raw = msgspec.yaml.decode((CONFIGS / name).read_bytes())
    return "bar-backtest" if "engine" in raw or "ohlcv" in raw else "system"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_is_recognised_as_its_kind(name: str) -> None:
    raw = msgspec.yaml.decode((CONFIGS / name).read_bytes())
    assert config_kind(raw) == _kind_by_name(name)


def test_the_three_kinds_are_each_recognised() -> None:
    # guards the parametrised test above against a naming rule that calls everything one kind
    kinds = {config_kind(msgspec.yaml.decode(p.read_bytes())) for p in CONFIGS.glob("*.yaml")}
    assert kinds == {"system", "bar-backtest", "tune"}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ({}, None),
        ([1, 2], None),
        ({"name": "x", "agent": "a"}, None),  # shared by a bar backtest and a tune: neither
        ({"bogus": 1}, None),
        ({"storage": {}}, "system"),
        # a system config with one stray bar key is a system config (its key refused by name)
        ({"data": {}, "agents": [], "engine": "event"}, "system"),
        ({"name": "x", "space": {}, "walk_forward": {}}, "tune"),
        ({"name": "x", "ohlcv": [], "instrument": {}}, "bar-backtest"),
    ],
)
def test_kind_from_the_top_level_keys(raw: object, kind: str | None) -> None:
    assert config_kind(raw) == kind


def test_wrong_kind_names_the_file_its_kind_and_its_command() -> None:
    raw = msgspec.yaml.decode((CONFIGS / "backtest_ema_cross.yaml").read_bytes())
    message = wrong_kind(raw, "b.yaml", "system")
    assert message == (
        "b.yaml is a bar-backtest config, not a system config: run it with `sapphire backtest`"
    )
    assert wrong_kind(raw, "b.yaml", "system", "bar-backtest") is None
    assert wrong_kind({"bogus": 1}, "b.yaml", "system") is None  # unknown: the parser says


def test_load_config_says_which_command_runs_another_kind() -> None:
    # it said "Object contains unknown field `name`": nothing the user got wrong in the file
    path = CONFIGS / "tune_ema_cross.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path} is a tune config, not a system config: run it with `sapphire tune`"
    )
