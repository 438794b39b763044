from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.research.space import SpaceError, apply_params, grid_values, parse_space
from sapphire.research.tune_config import TuneConfigError, load_tune_config, parse_tune_config
from tests.conftest import REPO_ROOT


def test_parse_and_grid() -> None:
    space = parse_space(
        {
            "risk_factor": {"type": "loguniform", "low": 0.01, "high": 1.0},
            "strategy_params.fast": {"type": "int", "low": 3, "high": 9},
            "mode": {"type": "choice", "values": ["infinite", "finite"]},
        }
    )
    grid = grid_values(space["risk_factor"], 3)
    assert grid[0] == pytest.approx(0.01) and grid[1] == pytest.approx(0.1)
    assert grid_values(space["strategy_params.fast"], 4) == [3, 5, 7, 9]
    assert grid_values(space["mode"], 9) == ["infinite", "finite"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "uniform", "low": 2, "high": 1}, "low < high"),
        ({"type": "loguniform", "low": 0, "high": 1}, "low > 0"),
        ({"type": "choice"}, "non-empty"),
        ({"type": "uniform", "low": 1}, "'low' and 'high'"),
        ({"type": "normal", "low": 0, "high": 1}, "space.x"),
        # no whole number in [3.2, 3.8]: every trial got 3, outside the range
        ({"type": "int", "low": 3.2, "high": 3.8}, "whole numbers"),
        # Optuna sampled 23, 33, 43 and the random search 30, 40: one grid, the multiples
        ({"type": "int", "low": 23, "high": 43, "step": 10}, "multiples of step 10"),
        ({"type": "int", "low": 21, "high": 24, "step": 5}, "low and high must be multiples"),
        ({"type": "uniform", "low": 0.1, "high": 1.05, "step": 0.1}, "high must be multiples"),
        # Ray's log-integer sampler has no step: 103, 170, 121 came out of a step of 20
        ({"type": "logint", "low": 20, "high": 400, "step": 20}, "logint takes no step"),
    ],
)
def test_bad_entries_name_the_parameter(entry: dict[str, object], message: str) -> None:
    with pytest.raises(SpaceError, match=r"space\.x") as info:
        parse_space({"x": entry})
    assert message in str(info.value)


def test_steps_on_the_grid_are_accepted() -> None:
    space = parse_space(
        {
            "a": {"type": "int", "low": 20, "high": 40, "step": 10},
            "b": {"type": "uniform", "low": 0.1, "high": 0.7, "step": 0.1},
            "c": {"type": "int", "low": 3.0, "high": 9.0},
        }
    )
    assert space["a"].step == 10 and space["b"].high == 0.7


@given(st.dictionaries(st.sampled_from(["a", "b.c", "b.d", "e.f.g"]), st.integers(), min_size=1))
def test_apply_params_sets_paths_and_keeps_base(sampled: dict[str, int]) -> None:
    base = {"a": 0, "b": {"c": 1, "keep": 2}}
    out = apply_params(base, sampled)
    assert base == {"a": 0, "b": {"c": 1, "keep": 2}}  # not modified
    for path, value in sampled.items():
        node = out
        for part in path.split("."):
            node = node[part]
        assert node == value
    assert out["b"]["keep"] == 2


def test_example_configs_parse() -> None:
    for name in ("tune_avellaneda_stoikov.yaml", "tune_ema_cross.yaml"):
        cfg = load_tune_config(REPO_ROOT / "configs" / name)
        assert cfg.params_space
        assert cfg.search.num_samples > 0


def test_bad_config_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.yaml"
    path.write_text("name: x\nbacktest: {}\nspace: {}\nwalk_forward: {train: 1, test: 1}\n")
    with pytest.raises(TuneConfigError, match=r"t\.yaml"):
        load_tune_config(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # every trial scored the same: the bar objective reads only strategy_params
        ({"space": {"stake.stake_fraction": {"type": "uniform", "low": 0.1, "high": 1}}}, "stake"),
        ({"space": {"fast": {"type": "int", "low": 3, "high": 9}}}, "space.fast"),
        ({"space": {"strategy_params.fats": {"type": "int", "low": 3, "high": 9}}}, "fats"),
        # a momentum agent on bars passed the check, then tune crashed with an IndexError
        ({"kind": "momentum"}, "indicator strategy"),
    ],
)
def test_a_bar_tune_space_nothing_reads_is_refused(change: dict[str, Any], message: str) -> None:
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "tune_ema_cross.yaml").read_bytes())
    if "kind" in change:
        raw["backtest"]["agent"]["kind"] = change["kind"]
        raw["backtest"]["agent"]["params"] = {}
        raw["backtest"]["engine"] = "event"  # the event engine runs any agent on bars
    raw.update({k: v for k, v in change.items() if k != "kind"})
    with pytest.raises(TuneConfigError, match=message):
        parse_tune_config(raw, "t.yaml")
