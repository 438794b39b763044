"""What a system tune replays is what ``sapphire backtest`` of the same config replays."""

from __future__ import annotations

from pathlib import Path

import msgspec

from sapphire.config.system import parse_config
from sapphire.kernel.runner import InProcessKernel
from sapphire.research import system_tune
from tests.conftest import REPO_ROOT


def test_a_capped_replay_spans_the_same_data_in_tune_and_backtest(tmp_path: Path) -> None:
    # data.max_events counts rows (a depth message its levels) in every runner: the tune cut
    # events, so its folds spanned about 90 s of the sample where the backtest stops near 24 s
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw["data"]["max_events"] = 30_000
    raw["storage"] = {"root": str(tmp_path)}
    dataset = system_tune.load_system(raw, "mm_as")
    kernel = InProcessKernel(parse_config(raw), "cap")
    kernel.run()
    assert dataset.end == kernel.cutter.state.last_end_ns


def test_ratios_are_annualised_on_the_runs_pnl_grid() -> None:
    # one curve, read as 1 s rows and as 5 s rows: a 5 s grid has a fifth of the periods a
    # year, so its Sharpe is sqrt(5) smaller (it was annualised as 1 s rows either way)
    from decimal import Decimal

    from sapphire.research.system_tune import KernelWindow, window_metrics

    curve = [1000.0, 1001.0, 1000.5, 1002.0, 1001.0, 1003.0]
    one = window_metrics(KernelWindow(Decimal(3), curve, 4, Decimal(1000), 1_000_000_000))
    five = window_metrics(KernelWindow(Decimal(3), curve, 4, Decimal(1000), 5_000_000_000))
    assert one["sharpe"] > 0
    assert abs(one["sharpe"] / five["sharpe"] - 5**0.5) < 1e-9
    assert abs(one["sortino"] / five["sortino"] - 5**0.5) < 1e-9


def test_a_bar_systems_ratios_are_annualised_at_its_bar_interval(tmp_path: Path) -> None:
    """A bar system writes one PnL row a bar: its window was annualised as if the rows were
    pnl_interval_s (1 s) apart, a 1 m bar run's Sharpe sqrt(60) too large."""
    from sapphire.research.walkforward import Window

    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "run_ema_cross_bars.yaml").read_bytes())
    raw["storage"] = {"root": str(tmp_path)}
    agent = raw["agents"][0]["id"]
    dataset = system_tune.load_system(raw, agent)
    window = system_tune.run_window(
        dataset, dataset.base_params, Window(dataset.start, dataset.end)
    )
    assert window.interval_ns == 60_000_000_000  # one row a 1 m bar
    assert len(window.equity) > 100
