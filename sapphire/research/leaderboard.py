"""Tuning results as tables: the leaderboard, the per-fold scores and the walk-forward check.

``trials`` has one row per trial (``trial_id``, ``status``, one ``param.<path>`` column per
searched parameter, the last reported ``mean_test_score``/``mean_train_score`` and
``folds_done``); ``folds`` has one row per (trial, fold) with ``train_score`` and
``test_score``. A trial that ASHA stopped early has fewer folds: the leaderboard ranks
trials that completed every fold first, because a mean over fewer folds is not comparable.

Trials are searched and ranked by their *train* mean over every fold. A fold's test window
is out of sample for that fold only: with rolling folds it lies inside the next fold's train
window, so the mean over all folds that ranks (and, with Optuna, proposes) trials has seen
every test window but the last. Only the last fold's test window comes after every train
window: ``holdout_test_score``, each trial's score there, is the one figure of the ranked
trials that no search or ranking saw. The exported best config is the leaderboard's first
row.

The walk-forward check answers "would tuning have helped out of sample": for every fold it
picks the trial with the best *train* score on that fold and records that trial's *test*
score. The pick sees no later window; the candidates it picks among do when Optuna proposed
them (its sampler reads the all-fold mean): with the random search, or ASHA (its rungs read
the folds in order), they do not.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

PARAM_PREFIX = "param."


def with_holdout(trials: pl.DataFrame, folds: pl.DataFrame, folds_total: int) -> pl.DataFrame:
    """``trials`` with ``holdout_test_score``: the trial's test score on the last fold (null
    for a trial that did not reach it)."""
    if trials.is_empty():
        return trials
    last = folds.filter(pl.col("fold") == folds_total - 1).select(
        "trial_id", pl.col("test_score").alias("holdout_test_score")
    )
    return trials.drop("holdout_test_score", strict=False).join(
        last, on="trial_id", how="left", maintain_order="left"
    )


def leaderboard(trials: pl.DataFrame, folds_total: int, top: int | None = None) -> pl.DataFrame:
    """Trials best first: complete ones by mean train score, then partial ones (the test
    scores are shown beside; ranking by them would make them in-sample)."""
    if trials.is_empty():
        return trials
    ranked = trials.with_columns((pl.col("folds_done") >= folds_total).alias("complete")).sort(
        ["complete", "mean_train_score"], descending=[True, True], nulls_last=True
    )
    ranked = ranked.with_row_index("rank", offset=1)
    return ranked.head(top) if top is not None else ranked


def param_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(PARAM_PREFIX)]


def best_params(board: pl.DataFrame) -> dict[str, Any]:
    """The searched params of the leaderboard's first row, by dotted path."""
    if board.is_empty():
        raise ValueError("no finished trials: nothing to pick")
    row = board.row(0, named=True)
    return {c.removeprefix(PARAM_PREFIX): row[c] for c in param_columns(board)}


def walk_forward_selection(folds: pl.DataFrame) -> pl.DataFrame:
    """Per fold: the trial with the best train score, its train and test scores, and the
    best test score any trial reached on that fold (the hindsight bound)."""
    if folds.is_empty():
        return pl.DataFrame(
            schema={
                "fold": pl.Int64,
                "trial_id": pl.String,
                "train_score": pl.Float64,
                "test_score": pl.Float64,
                "oracle_test_score": pl.Float64,
                "trials": pl.UInt32,
            }
        )
    picked = (
        folds.sort(["fold", "train_score", "trial_id"], descending=[False, True, False])
        .group_by("fold", maintain_order=True)
        .agg(
            pl.col("trial_id").first(),
            pl.col("train_score").first(),
            pl.col("test_score").first(),
            pl.col("test_score").max().alias("oracle_test_score"),
            pl.len().alias("trials"),
        )
    )
    return picked.with_columns(pl.col("fold").cast(pl.Int64))


def _num(value: object) -> float:
    """A polars scalar aggregate (``None`` on an empty column) as a float."""
    return float(value) if isinstance(value, int | float) else 0.0


def selection_summary(
    board: pl.DataFrame, selection: pl.DataFrame, folds_total: int
) -> dict[str, float]:
    """The best trial's in-sample edge against what survives out of sample, over the trials
    that ran every fold (a mean over the folds ASHA let a trial run is not comparable: its
    best could be one lucky fold). ``board``: the leaderboard, best first.

    - ``best_trial_holdout_score``: the leaderboard's first trial on the last test window,
      which nothing that ranked or proposed it saw (NaN where ``board`` has no
      ``holdout_test_score``: see :func:`with_holdout`);
    - ``hindsight_best_mean_test_score``: the best test mean of any trial, picked by its
      test scores (an upper bound, not a result);
    - ``walk_forward_oos_score`` / ``oracle_oos_score``: the per-fold pick's test mean and
      the best any trial reached per fold (see the module's note on Optuna)."""
    complete = board.filter(
        pl.col("mean_train_score").is_not_null() & (pl.col("folds_done") >= folds_total)
    )
    # NaN where not computed (a table without ``with_holdout``'s column, no complete
    # trial): a 0.0 read as the best trial breaking even on the holdout
    holdout = math.nan
    if "holdout_test_score" in complete.columns and complete.height:
        first = complete["holdout_test_score"][0]
        holdout = float(first) if isinstance(first, int | float) else math.nan
    return {
        "best_mean_train_score": _num(complete["mean_train_score"].max()),
        "best_trial_holdout_score": holdout,
        "hindsight_best_mean_test_score": _num(complete["mean_test_score"].max()),
        "median_mean_test_score": _num(complete["mean_test_score"].median()),
        "walk_forward_oos_score": _num(selection["test_score"].mean()),
        "oracle_oos_score": _num(selection["oracle_test_score"].mean()),
    }


def write_tables(out_dir: Path, trials: pl.DataFrame, folds: pl.DataFrame) -> list[Path]:
    """``trials``/``folds`` as both CSV and Parquet under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in (("trials", trials), ("folds", folds)):
        for ext in ("csv", "parquet"):
            path = out_dir / f"{name}.{ext}"
            if ext == "csv":
                frame.write_csv(path)
            else:
                frame.write_parquet(path)
            written.append(path)
    return written
