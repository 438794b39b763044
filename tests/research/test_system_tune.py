"""What a system tune replays is what ``sapphire backtest`` of the same config replays."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

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


def test_an_agent_with_legs_in_two_assets_is_scored_in_the_firms_currency(
    tmp_path: Path,
) -> None:
    """The cross-venue basis agent's inverse leg settles in BTC, its hedge in USDT: its
    score is the firm's figure (BTC at its mark plus USDT), never 0.000002 BTC read as
    USDT."""
    from decimal import Decimal

    from sapphire.kernel.assembly import data_path

    if not data_path("shared:book/cryptofeed_bybit_inverse_ws_2021-04-17.log.gz").exists():
        import pytest

        pytest.skip("shared recorded data not present")
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo_cross_venue.yaml").read_bytes())
    raw["storage"] = {"root": str(tmp_path)}
    for venue in raw["data"]["venues"]:
        venue["instrument_files"] = [str(REPO_ROOT / f) for f in venue["instrument_files"]]
    dataset = system_tune.load_system(raw, "basis")
    window = system_tune.run_window(dataset, {}, dataset.span)

    kernel = InProcessKernel(parse_config(raw), "basis-check")
    kernel.run()
    settle = {s: i.settle_asset for s, i in kernel.instruments.items()}
    by_asset: dict[str, Decimal] = {}
    for key, row in kernel.summary()["agents"].items():
        agent, _, symbol = key.partition("/")
        if agent == "basis":
            asset = settle[symbol]
            by_asset[asset] = by_asset.get(asset, Decimal(0)) + Decimal(row["pnl_quote"])
    assert set(by_asset) == {"BTC", "USDT"}
    assert by_asset["BTC"] != 0
    btc_price = kernel.coordinator.firm_pnl().rates["BTC"]
    assert 50_000 < btc_price < 70_000
    # the summary's rows are rounded to 8 decimals: 5e-9 BTC is ~0.0003 USDT here
    want = by_asset["BTC"] * btc_price + by_asset["USDT"]
    assert abs(window.pnl_quote - want) < Decimal("0.001")
    assert abs(window.pnl_quote - sum(by_asset.values())) > Decimal("0.01")
    # the curve ends at the same figure (its last point: capital plus the converted equity)
    assert abs(window.equity[-1] - float(window.capital + window.pnl_quote)) < 0.01


def test_a_bad_file_in_the_system_block_is_named_where_the_tune_file_has_it(
    tmp_path: Path,
) -> None:
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw["data"] = {"source": "files", "files": ["sample:x.csv"], "instrument_files": ["nope"]}
    with pytest.raises(system_tune.SystemTuneError, match=r"^system\.data\.instrument_files: "):
        system_tune.load_system(raw, "mm_as")
