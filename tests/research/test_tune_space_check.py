"""A tick tune's space is checked against its agent before Ray starts: a path the agent
does not take (``risk_factr``) or a choice it refuses failed every trial, found only once
Ray Tune had run all of them (24 trials, 42 s, then "every trial failed")."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.cli import main
from sapphire.research.space import ParamSpec
from sapphire.research.tune_config import TuneConfigError, _probes, parse_tune_config
from tests.conftest import REPO_ROOT
from tests.research.helpers import SAMPLE_SYSTEM


def _raw(space: dict[str, Any], system: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "as_test",
        "system": copy.deepcopy(system or SAMPLE_SYSTEM),
        "agent": "as_1",
        "space": space,
        "walk_forward": {"train": 30, "test": 15},
    }


@pytest.mark.parametrize(
    ("space", "said"),
    [
        (
            {"risk_factr": {"type": "loguniform", "low": 0.005, "high": 2.0}},
            "t.yaml: space.risk_factr: agent as_1: ",
        ),
        (
            {
                "risk_factor": {"type": "loguniform", "low": 0.005, "high": 2.0},
                "execution_timeframe": {"type": "choice", "values": ["infinite", "finte"]},
            },
            "t.yaml: space.execution_timeframe value 'finte': agent as_1: ",
        ),
        (
            # the whole range refused: order_amount must stay <= max_inventory (0.02)
            {"order_amount": {"type": "uniform", "low": 0.05, "high": 0.1}},
            "t.yaml: space.order_amount: agent as_1: ",
        ),
        (
            {"order_amount.size": {"type": "uniform", "low": 0.001, "high": 0.002}},
            "t.yaml: space.order_amount.size: ",
        ),
    ],
)
def test_a_space_the_agent_refuses_is_one_error_naming_its_key(
    space: dict[str, Any], said: str
) -> None:
    with pytest.raises(TuneConfigError) as info:
        parse_tune_config(_raw(space), "t.yaml")
    message = str(info.value)
    assert message.startswith(said), message
    assert "\n" not in message
    if "risk_factr" in said:
        assert "unknown field `risk_factr`" in message


def test_a_space_the_agent_takes_passes() -> None:
    cfg = parse_tune_config(
        _raw(
            {
                "risk_factor": {"type": "loguniform", "low": 0.005, "high": 2.0},
                "order_refresh_time": {"type": "uniform", "low": 0.2, "high": 3.0},
                "refit_every": {"type": "int", "low": 10, "high": 400, "step": 10},
                "execution_timeframe": {"type": "choice", "values": ["infinite", "finite"]},
            }
        )
    )
    assert set(cfg.params_space) == {
        "risk_factor",
        "order_refresh_time",
        "refit_every",
        "execution_timeframe",
    }


def test_a_bad_base_agent_is_blamed_on_the_system_not_the_space() -> None:
    system = copy.deepcopy(SAMPLE_SYSTEM)
    system["agents"][0]["params"]["bogus"] = 1
    with pytest.raises(TuneConfigError) as info:
        parse_tune_config(
            _raw({"risk_factor": {"type": "uniform", "low": 0.1, "high": 1}}, system), "t.yaml"
        )
    assert str(info.value).startswith("t.yaml: system: agent as_1: ")
    assert "space." not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        (ParamSpec(type="uniform", low=1.0, high=3.0), [2.0]),
        (ParamSpec(type="loguniform", low=0.01, high=1.0), [pytest.approx(0.1)]),
        (ParamSpec(type="int", low=10, high=420, step=10), [220]),  # on the grid
        (ParamSpec(type="logint", low=1, high=100), [10]),
        (ParamSpec(type="choice", values=["a", "b"]), ["a", "b"]),
    ],
)
def test_probes_are_values_the_searchers_may_give(spec: ParamSpec, values: list[Any]) -> None:
    probes = _probes(spec)
    assert probes == values
    if spec.type in ("int", "logint"):
        assert all(isinstance(v, int) for v in probes)


def test_sapphire_tune_refuses_the_typo_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for a tune that cannot run")

    monkeypatch.setattr(ray, "init", refuse)
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "tune_avellaneda_stoikov.yaml").read_bytes())
    raw["space"] = {("risk_factr" if k == "risk_factor" else k): v for k, v in raw["space"].items()}
    raw["system"]["data"]["instrument_files"] = [
        str(REPO_ROOT / p) for p in raw["system"]["data"]["instrument_files"]
    ]
    raw["output"] = {"storage_path": str(tmp_path / "tune")}
    config = tmp_path / "tune_typo.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    started = time.perf_counter()
    assert main(["tune", "--config", str(config)]) == 2
    assert time.perf_counter() - started < 10
    assert not ray.is_initialized()
    err = capsys.readouterr().err
    assert err.startswith(f"sapphire tune: {config}: space.risk_factr: agent as_1: ")
    assert "unknown field `risk_factr`" in err and err.count("\n") == 1
    assert not (tmp_path / "tune").exists()  # no experiment begun
