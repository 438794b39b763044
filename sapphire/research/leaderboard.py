"""Tuning results as tables: the leaderboard, the per-fold scores and the walk-forward check.

``trials`` has one row per trial (``trial_id``, ``status``, one ``param.<path>`` column per
searched parameter, the last reported ``mean_test_score``/``mean_train_score`` and
``folds_done``); ``folds`` has one row per (trial, fold) with ``train_score`` and
``test_score``. A trial that ASHA stopped early has fewer folds: the leaderboard ranks
trials that completed every fold first, because a mean over fewer folds is not comparable.

Trials are searched and ranked by their *train* (in-sample) mean: the test windows are
never what picks a trial, or its test mean would be in-sample too. The exported best
config is the leaderboard's first row.

The walk-forward check answers "would tuning have helped out of sample": for every fold it
picks the trial with the best *train* score and records that trial's *test* score, so the
selection never sees the data it is judged on. Its mean next to the best in-sample mean
shows how much of the in-sample edge survives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

PARAM_PREFIX = "param."


def leaderboard(trials: pl.DataFrame, folds_total: int, top: int | None = None) -> pl.DataFrame:
    """Trials best first: complete ones by mean train score, then partial ones (the test
    scores are shown beside, out of sample: ranking by them would make them in-sample)."""
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
    trials: pl.DataFrame, selection: pl.DataFrame, folds_total: int
) -> dict[str, float]:
    """In-sample edge of the best trial vs what the walk-forward choice kept out of sample,
    over the trials that ran every fold (a mean over the folds ASHA let a trial run is not
    comparable: its best could be one lucky fold)."""
    complete = trials.filter(
        pl.col("mean_train_score").is_not_null() & (pl.col("folds_done") >= folds_total)
    )
    return {
        "best_mean_train_score": _num(complete["mean_train_score"].max()),
        "best_mean_test_score": _num(complete["mean_test_score"].max()),
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
