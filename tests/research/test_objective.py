from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from actors.tune import prepare
from sapphire.config.system import parse_config
from sapphire.kernel.runner import InProcessKernel
from sapphire.research import leaderboard, system_tune
from sapphire.research.objective import evaluate
from tests.research.helpers import as_config, resolve


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cfg = as_config(tmp_path_factory.mktemp("tune"))
    return cfg, prepare(cfg, resolve)


@pytest.mark.slow
def test_folds_score_in_and_out_of_sample(payload) -> None:  # type: ignore[no-untyped-def]
    cfg, p = payload
    assert len(p.folds) == 3  # 90 s: 30 s train + 15 s test, moving by 15 s
    params = {**p.base_params, "risk_factor": 0.1}
    scores = evaluate(p.dataset, p.backtest, params, p.folds, cfg.objective)
    assert [s.fold for s in scores] == [0, 1, 2]
    assert sum(s.test.fills + s.train.fills for s in scores) > 0  # the maker really trades
    for s in scores:
        assert s.test.valid and s.test.score == pytest.approx(s.test.pnl)
    # Same params, same data: deterministic.
    again = evaluate(p.dataset, p.backtest, params, p.folds, cfg.objective)
    assert again == scores
    # Params the agent refuses score as invalid, never crash the trial.
    bad = evaluate(p.dataset, p.backtest, {**params, "order_amount": 1.0}, p.folds, cfg.objective)
    assert all(not s.test.valid and s.test.score < -1e8 for s in bad)
    assert "order_amount" in bad[0].test.error


@pytest.mark.slow
def test_a_window_trades_only_inside_it_on_a_synced_book(payload) -> None:  # type: ignore[no-untyped-def]
    _, p = payload
    window = p.folds[1].test
    result = system_tune.run_window(p.dataset, p.base_params, window)
    raw = system_tune.system_dict(p.dataset.run_raw, p.dataset.agent_id, p.base_params, window)
    kernel = InProcessKernel(parse_config(raw), "w", events=iter(p.dataset.events()))
    kernel.run()
    rows = kernel.coordinator.rows.take_new()
    assert rows["ticks"]["ts_ns"].min() >= window.start
    assert rows["ticks"]["ts_ns"].max() < window.end
    venue: Any = kernel.venue.gateway
    book = venue.book("BTCUSDT")
    assert book.is_synced and book.gaps == 0  # the window starts on the book built before it
    assert result.fills == kernel.summary()["fills"]


def test_walk_forward_selection_uses_train_scores_only() -> None:
    folds = pl.DataFrame(
        {
            "trial_id": ["a", "b", "a", "b"],
            "fold": [0, 0, 1, 1],
            "train_score": [1.0, 2.0, 5.0, 0.0],
            "test_score": [9.0, -1.0, 0.5, 3.0],
        }
    )
    picked = leaderboard.walk_forward_selection(folds)
    assert picked["trial_id"].to_list() == ["b", "a"]
    assert picked["test_score"].to_list() == [-1.0, 0.5]
    assert picked["oracle_test_score"].to_list() == [9.0, 3.0]
    trials = pl.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "param.x": [1.0, 2.0, 3.0],
            "folds_done": [2, 2, 1],
            "mean_train_score": [3.0, 1.0, 9.0],
            "mean_test_score": [1.0, 4.75, 99.0],
        }
    )
    board = leaderboard.leaderboard(leaderboard.with_holdout(trials, folds, 2), folds_total=2)
    # Ranked by the train mean (b's better test mean picks nothing: that would make it
    # in-sample); a trial stopped early (c) ranks after every complete one.
    assert board["trial_id"].to_list() == ["a", "b", "c"]
    assert leaderboard.best_params(board) == {"x": 1.0}
    # the last fold's test window is the one no ranking saw: a's score there
    assert board["holdout_test_score"].to_list() == [0.5, 3.0, None]
    summary = leaderboard.selection_summary(board, picked, folds_total=2)
    # the partial trial's one-fold means are no best
    assert summary["best_mean_train_score"] == 3.0
    assert summary["hindsight_best_mean_test_score"] == 4.75
    assert summary["best_trial_holdout_score"] == 0.5
    assert summary["walk_forward_oos_score"] == pytest.approx(-0.25)
    assert summary["oracle_oos_score"] >= summary["walk_forward_oos_score"]


def test_written_tables(tmp_path: Path) -> None:
    trials = pl.DataFrame({"trial_id": ["a"], "mean_test_score": [1.0]})
    folds = pl.DataFrame({"trial_id": ["a"], "fold": [0]})
    paths = leaderboard.write_tables(tmp_path, trials, folds)
    assert {p.name for p in paths} == {"trials.csv", "trials.parquet", "folds.csv", "folds.parquet"}
    assert pl.read_parquet(tmp_path / "trials.parquet").equals(trials)


def test_a_window_is_scored_from_the_close_before_its_first_bar() -> None:
    # equity points are stamped at their bar's close: searched at the first bar's open time,
    # the scored curve started a bar early and added a flat return to its Sharpe
    from decimal import Decimal

    from sapphire.agents.bar_policy import StakeConfig
    from sapphire.agents.indicator import compute_signals, load_strategy
    from sapphire.backtest import analytics
    from sapphire.backtest.bar_gateway import BarCosts
    from sapphire.backtest.vectorized import run_signals
    from sapphire.research.objective import window_metrics
    from sapphire.research.tune_config import ObjectiveSpec
    from tests.agents.streams import ohlcv

    inst, frame = ohlcv("basana_bitstamp_BTC-USD_1m_2020-01-01.csv", None)
    lead, start, length = 30, 300, 200
    window = frame.slice(start - lead, length + lead)
    strategy = load_strategy("EmaCross", {"fast": 5, "slow": 13})
    stake = StakeConfig(stake_lots=2_000_000, initial_cash=Decimal(10_000))
    result = run_signals(compute_signals(strategy, window), inst, BarCosts(), stake, startup=lead)
    scored = window_metrics(result, int(window["ts_event_ns"][lead]), ObjectiveSpec())
    own = result.equity[lead - 1 :]  # the close before the window, then its own bars
    assert len(own) == length + 1
    assert scored.sharpe == analytics.sharpe(analytics.returns(own), result.periods_per_year)
    assert scored.pnl == own[-1] - own[0]


def test_calmar_ranks_a_gain_without_drawdown_first() -> None:
    from sapphire.backtest import analytics

    steady, dipped, flat = (
        analytics.calmar(0.03, 0.0),
        analytics.calmar(0.015, 0.005),
        analytics.calmar(0.0, 0.0),
    )
    assert steady > dipped > flat == 0.0  # the steady gain tied with never trading
