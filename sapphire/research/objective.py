"""One trial's work: backtest each walk-forward window with one parameter set, score it.

Tick agents run event-driven through a fresh :class:`PaperExchange` per window; bar
strategies run on the vectorized engine. A window is scored only on its own span (the
indicator warm-up bars in front of a bar window are traded through but not scored), and a
fold's score is its test window's (out-of-sample) score, next to its train (in-sample) one.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np

from sapphire.agents.base import AgentConfigError
from sapphire.agents.indicator import StrategyError, compute_signals, load_strategy
from sapphire.backtest import analytics
from sapphire.backtest.config import BacktestConfig
from sapphire.backtest.ledger import BacktestResult
from sapphire.backtest.vectorized import run_signals
from sapphire.research import system_tune
from sapphire.research.dataset import BarDataset, Dataset
from sapphire.research.tune_config import ObjectiveSpec
from sapphire.research.walkforward import Fold, Window


class WindowScore(msgspec.Struct, frozen=True, kw_only=True):
    pnl: float
    total_return: float
    sharpe: float
    sortino: float
    max_drawdown: float
    fills: int
    score: float
    valid: bool = True
    error: str = ""


class FoldScore(msgspec.Struct, frozen=True, kw_only=True):
    fold: int
    train: WindowScore
    test: WindowScore


def window_metrics(result: BacktestResult, from_ts: int, spec: ObjectiveSpec) -> WindowScore:
    """Metrics of the equity curve of the bars from ``from_ts`` (the open of the window's
    first bar) on: each point is stamped at its bar's close, so the window's first is the
    first after ``from_ts``, and the one at it (the bar before's close) opens the window."""
    ts = np.asarray(result.equity_ts, dtype=np.int64)
    first = int(np.searchsorted(ts, from_ts, side="right")) if ts.size else 0
    # The mark just before the window is its opening equity (when there is one).
    equity = result.equity[max(first - 1, 0) :] or [float(result.initial_cash)]
    start_eq = equity[0]
    pnl = equity[-1] - start_eq
    rets = analytics.returns(equity)
    ppy = result.periods_per_year
    dd = analytics.max_drawdown(equity)
    fills = sum(1 for f in result.fills if f.ts_event_ns >= from_ts)
    metrics = {
        "pnl": pnl,
        "total_return": pnl / start_eq if start_eq else 0.0,
        "sharpe": analytics.sharpe(rets, ppy),
        "sortino": analytics.sortino(rets, ppy),
        "max_drawdown": dd,
    }
    metrics["calmar"] = analytics.calmar(metrics["total_return"], dd)
    score = metrics[spec.metric] - spec.drawdown_penalty * dd
    if fills < spec.min_fills or not math.isfinite(score):
        score = 0.0
    return WindowScore(
        pnl=pnl,
        total_return=metrics["total_return"],
        sharpe=metrics["sharpe"],
        sortino=metrics["sortino"],
        max_drawdown=dd,
        fills=fills,
        score=score,
    )


def invalid(error: str) -> WindowScore:
    """Params the agent refuses: scored below any real result, never a crash."""
    return WindowScore(
        pnl=0.0,
        total_return=0.0,
        sharpe=0.0,
        sortino=0.0,
        max_drawdown=0.0,
        fills=0,
        score=-1e9,
        valid=False,
        error=error,
    )


def run_window(
    dataset: Dataset, bt: BacktestConfig, params: dict[str, Any], window: Window
) -> tuple[BacktestResult, int]:
    """The backtest of one window and the first position that is scored."""
    strategy = load_strategy(
        bt.agent.kind.split(":", 1)[1], dict(params.get("strategy_params", {}))
    )
    frame, lead = dataset.window_frame(window, strategy.startup_candle_count)
    result = run_signals(
        compute_signals(strategy, frame),
        dataset.instrument,
        bt.costs,
        bt.stake,
        startup=lead,
        stoploss=strategy.stoploss,
        can_short=strategy.can_short,
    )
    if frame.height > lead:
        return result, int(frame["ts_event_ns"][lead])
    # the whole window is the trial's warm-up: nothing in it is scored
    return result, int(frame["ts_event_ns"][-1]) + 1 if frame.height else 0


def system_score(result: system_tune.KernelWindow, spec: ObjectiveSpec) -> WindowScore:
    metrics = system_tune.window_metrics(result)
    score = metrics[spec.metric] - spec.drawdown_penalty * metrics["max_drawdown"]
    if result.fills < spec.min_fills or not math.isfinite(score):
        score = 0.0
    return WindowScore(
        pnl=metrics["pnl"],
        total_return=metrics["total_return"],
        sharpe=metrics["sharpe"],
        sortino=metrics["sortino"],
        max_drawdown=metrics["max_drawdown"],
        fills=result.fills,
        score=score,
    )


def score_window(
    dataset: Dataset | system_tune.SystemDataset,
    bt: BacktestConfig | None,
    params: dict[str, Any],
    window: Window,
    spec: ObjectiveSpec,
) -> WindowScore:
    if isinstance(dataset, system_tune.SystemDataset):
        # a window of the system config, run by the trading kernel (what `sapphire run` runs)
        try:
            kernel_result = system_tune.run_window(dataset, params, window)
        except (AgentConfigError, StrategyError, ValueError) as exc:
            return invalid(str(exc))
        return system_score(kernel_result, spec)
    assert bt is not None
    try:
        result, from_ts = run_window(dataset, bt, params, window)
    except (AgentConfigError, StrategyError, ValueError) as exc:
        return invalid(str(exc))
    return window_metrics(result, from_ts, spec)


class WindowCache:
    """Scores by window, so a window shared by two folds (a test window that is the next
    fold's train window) is backtested once per trial."""

    def __init__(
        self,
        dataset: Dataset | system_tune.SystemDataset,
        bt: BacktestConfig | None,
        params: dict[str, Any],
        spec: ObjectiveSpec,
    ) -> None:
        self.dataset, self.bt, self.params, self.spec = dataset, bt, params, spec
        self.scores: dict[Window, WindowScore] = {}

    def __call__(self, window: Window) -> WindowScore:
        if window not in self.scores:
            self.scores[window] = score_window(
                self.dataset, self.bt, self.params, window, self.spec
            )
        return self.scores[window]

    def fold(self, fold: Fold) -> FoldScore:
        return FoldScore(fold=fold.index, train=self(fold.train), test=self(fold.test))


def fold_report(done: list[FoldScore]) -> dict[str, float | int | bool | str]:
    """What a trial reports after each fold: the running means ASHA compares trials on."""
    last = done[-1]
    return {
        "fold": last.fold,
        "train_score": last.train.score,
        "test_score": last.test.score,
        "test_pnl": last.test.pnl,
        "test_sharpe": last.test.sharpe,
        "test_fills": last.test.fills,
        "mean_train_score": float(np.mean([f.train.score for f in done])),
        "mean_test_score": float(np.mean([f.test.score for f in done])),
        "mean_test_pnl": float(np.mean([f.test.pnl for f in done])),
        "valid": last.test.valid and last.train.valid,
        "error": last.train.error or last.test.error,  # why the params were refused ("": not)
    }


def evaluate(
    dataset: Dataset | system_tune.SystemDataset,
    bt: BacktestConfig | None,
    params: dict[str, Any],
    folds: list[Fold],
    spec: ObjectiveSpec,
) -> list[FoldScore]:
    """All folds at once, without Ray (notebooks, tests, a quick sanity check)."""
    cache = WindowCache(dataset, bt, params, spec)
    return [cache.fold(f) for f in folds]


__all__ = ["BarDataset", "FoldScore", "WindowScore", "evaluate", "fold_report", "run_window"]
