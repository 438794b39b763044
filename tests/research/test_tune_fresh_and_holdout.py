"""``--fresh`` deletes the previous experiment only once the new one can start, and the
selection summary reports no holdout score where none was computed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import polars as pl
import pytest

from sapphire.cli import main
from sapphire.research import leaderboard
from tests.conftest import REPO_ROOT


def test_fresh_keeps_the_previous_experiment_when_the_new_data_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the experiment folder was deleted first, then the misspelled file failed: the old
    # results were gone and nothing replaced them
    import ray

    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "tune_ema_cross.yaml").read_bytes())
    raw["backtest"]["ohlcv"] = [str(tmp_path / "misspelled.csv.gz")]
    raw["output"] = {"storage_path": str(tmp_path / "tune")}
    config = tmp_path / "tune.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    previous = tmp_path / "tune" / raw["name"] / "results" / "trials.csv"
    previous.parent.mkdir(parents=True)
    previous.write_text("trial_id,mean_test_score\nold,1.5\n")
    assert main(["tune", "--config", str(config), "--fresh"]) == 2
    assert "misspelled.csv.gz" in capsys.readouterr().err
    assert previous.read_text() == "trial_id,mean_test_score\nold,1.5\n"
    assert not ray.is_initialized()


def _board(**extra: list[float | None]) -> pl.DataFrame:
    trials = pl.DataFrame(
        {
            "trial_id": ["a", "b"],
            "folds_done": [2, 2],
            "mean_train_score": [3.0, 1.0],
            "mean_test_score": [1.0, 2.0],
            **extra,
        }
    )
    return leaderboard.leaderboard(trials, folds_total=2)


def test_a_holdout_score_that_was_not_computed_is_nan_not_zero() -> None:
    # notebook 3 passed its trials without `with_holdout`: "best_trial_holdout_score: 0.0",
    # read as the best trial breaking even on the holdout
    selection = pl.DataFrame({"test_score": [0.5], "oracle_test_score": [1.0]})
    summary = leaderboard.selection_summary(_board(), selection, folds_total=2)
    assert math.isnan(summary["best_trial_holdout_score"])
    assert summary["best_mean_train_score"] == 3.0  # the rest is computed as before
    missing = leaderboard.selection_summary(
        _board(holdout_test_score=[None, 4.0]), selection, folds_total=2
    )
    assert math.isnan(missing["best_trial_holdout_score"])
    given = leaderboard.selection_summary(
        _board(holdout_test_score=[-0.5, 4.0]), selection, folds_total=2
    )
    assert given["best_trial_holdout_score"] == -0.5  # the best trial's, not the best one


def test_notebook_3_summarises_the_leaderboard_with_its_holdout() -> None:
    book = json.loads((REPO_ROOT / "notebooks" / "03_tune_avellaneda_stoikov.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in book["cells"] if c["cell_type"] == "code")
    assert "leaderboard.selection_summary(board," in code
    assert "leaderboard.with_holdout(trials, fold_scores, len(folds))" in code
