from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
import pytest
import yaml

from sapphire.cli import tune_cmd
from sapphire.data.sample import SAMPLE_DIR
from tests.conftest import REPO_ROOT


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    tune_cmd.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_bad_config_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nbacktest: {name: b}\nspace: {a: {type: uniform}}\n")
    args = _parse(["tune", "--config", str(path)])
    assert args.handler(args) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_resolver_prefixes(tmp_path: Path) -> None:
    resolve = tune_cmd.resolver(tmp_path / "cfg.yaml")
    assert resolve("sample:x.csv") == SAMPLE_DIR / "x.csv"
    assert resolve("rel/x.csv") == tmp_path.resolve() / "rel" / "x.csv"
    assert resolve("shared:ohlcv/a.csv").parts[-2:] == ("ohlcv", "a.csv")


def test_leaderboard_prints_params_and_scores(capsys: pytest.CaptureFixture[str]) -> None:
    board = pl.DataFrame(
        {
            "rank": [1, 2],
            "trial_id": ["aaa", "bbb"],
            "param.risk_factor": [0.5, 0.1],
            "folds_done": [3, 1],
            "mean_train_score": [1.0, 2.0],
            "mean_test_score": [0.25, -1.0],
        }
    )
    tune_cmd.print_board(board, 3, top=1)
    out = capsys.readouterr().out
    assert "risk_factor" in out and "aaa" in out and "bbb" not in out


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--samples", "0"], "--samples: must be at least 1"),
        (["--num-cpus", "0"], "--num-cpus: must be at least 1"),
        (["--resume", "--fresh"], "not allowed with argument"),
    ],
)
def test_tune_options_that_cannot_run_are_refused_before_ray_starts(
    args: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # --samples 0 ran nothing and exited 0; --num-cpus 0 hung Ray; --fresh beat --resume
    from sapphire.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--config", str(REPO_ROOT / "configs" / "tune_ema_cross.yaml"), *args])
    assert exit_info.value.code == 2
    assert why in capsys.readouterr().err


def test_a_trial_larger_than_the_local_cluster_is_refused_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # cpus_per_trial 4 on a 2-CPU cluster: Ray waited forever, warning once a minute
    import ray

    from sapphire.cli import main

    raw = yaml.safe_load((REPO_ROOT / "configs" / "tune_ema_cross.yaml").read_text())
    raw["cpus_per_trial"] = 4
    raw["output"] = {**raw.get("output", {}), "storage_path": str(tmp_path)}
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["tune", "--config", str(config), "--num-cpus", "2"]) == 2
    assert "cpus_per_trial 4 > the 2 CPUs" in capsys.readouterr().err
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("system", r"walk_forward: train \+ test = 900 s, but the data spans \d+(\.\d+)? s"),
        ("bars", r"walk_forward: train \+ test = 900000 bars, but the data spans \d+ bars"),
    ],
)
def test_data_shorter_than_one_fold_is_said_in_the_configs_unit(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    kind: str,
    said: str,
) -> None:
    # "span 184991000001 is shorter than one train + test window (600000000000 +
    # 300000000000)": nanoseconds for lengths written in seconds, and no field named
    import re

    import ray

    from sapphire.cli import main
    from tests.research.helpers import SAMPLE_SYSTEM

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for a tune that cannot run")

    monkeypatch.setattr(ray, "init", refuse)
    if kind == "system":
        raw = {
            "name": "short",
            "system": SAMPLE_SYSTEM,
            "agent": "as_1",
            "space": {"risk_factor": {"type": "uniform", "low": 0.1, "high": 1.0}},
            "walk_forward": {"train": 600, "test": 300},
        }
    else:
        request.getfixturevalue("shared_data")  # its bars are the shared recordings
        raw = yaml.safe_load((REPO_ROOT / "configs" / "tune_ema_cross.yaml").read_text())
        raw["walk_forward"] = {"train": 600_000, "test": 300_000}
    raw["output"] = {"storage_path": str(tmp_path / "tune")}
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["tune", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(f"sapphire tune: {re.escape(str(config))}: {said}\n", err), err
    assert not ray.is_initialized()
