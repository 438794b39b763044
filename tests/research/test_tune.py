"""Ray Tune end to end: a small walk-forward sweep on real data, and interrupt + resume."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest
import ray

from actors.system import run_system
from actors.tune import STARTS_FILE, run_tune, trial_starts
from sapphire.backtest.config import parse_config as parse_backtest
from sapphire.backtest.runner import run_config
from sapphire.cli import main
from sapphire.config.system import load_config as load_system
from sapphire.research.tune_config import parse_tune_config
from sapphire.storage.query import read_table
from tests.conftest import REPO_ROOT
from tests.ray_local import init_local
from tests.research.helpers import as_config, resolve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    init_local(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def test_sweep_on_shared_data_beats_worst_out_of_sample(tmp_path: Path, shared_data: Path) -> None:
    system = msgspec.yaml.decode(
        (REPO_ROOT / "configs" / "tune_avellaneda_stoikov.yaml").read_bytes()
    )["system"]
    start = system["data"]["start_ns"]
    system["data"]["end_ns"] = start + 60_000_000_000
    system["agents"][0]["params"] = {"order_amount": 0.001, "max_inventory": 0.01}
    system["storage"] = {"root": str(tmp_path / "runs")}
    cfg = as_config(
        tmp_path,
        system=system,
        agent="as_1",
        walk_forward={"train": 20, "test": 10},
        search={"algorithm": "optuna", "num_samples": 6, "max_concurrent": 2, "seed": 11},
    )
    out = run_tune(cfg, lambda p: resolve(p, shared_data))
    assert out.n_folds == 3  # 60 s of data (less the first event's offset): 20 s + 10 s, by 10 s
    assert out.trials.height == 6
    assert out.first_result_s is not None and out.first_result_s < out.wall_s
    # ASHA ran: every trial reported at least one fold, and the per-fold table matches.
    assert out.trials["folds_done"].min() >= 1
    assert out.folds.height == int(out.trials["folds_done"].sum())
    complete = out.board.filter(pl.col("complete"))
    assert complete.height >= 1
    best, worst = complete["mean_train_score"].max(), out.board["mean_train_score"].min()
    spread = out.folds.group_by("trial_id").agg(pl.col("test_fills").sum())
    if best == worst:  # pragma: no cover - reported, not hidden
        pytest.fail(f"every trial scored {best}: fills per trial {spread.to_dicts()}")
    assert best > worst
    # ranked (and searched) by the train mean: the test mean stays out of sample
    assert out.board["rank"][0] == 1 and out.board["mean_train_score"][0] == best
    # The walk-forward pick never beats hindsight.
    assert out.summary["oracle_oos_score"] >= out.summary["walk_forward_oos_score"]
    results = out.experiment_path / "results"
    for name in ("trials.csv", "trials.parquet", "folds.parquet", "walk_forward_selection.csv"):
        assert (results / name).stat().st_size > 0
    tuned = load_system(results / "best_system.yaml")
    assert tuned.agents[0].params["risk_factor"] == pytest.approx(out.best["risk_factor"])
    assert tuned.data.start_ns == start  # the whole tuned span
    # its files resolved: it runs from any working directory, as tune_cmd says
    exported = [*tuned.data.files, *tuned.data.instrument_files]
    assert exported and all(Path(f).is_absolute() for f in exported), exported

    # Tune -> run: the exported window config, through `sapphire run` (Ray actors), gives the
    # PnL tune measured on that window, exactly.
    expected = msgspec.json.decode((results / "best_window.json").read_bytes())
    window_config = load_system(results / "best_window.yaml")
    assert (window_config.data.start_ns, window_config.data.end_ns) == (
        expected["start_ns"],
        expected["end_ns"],
    )
    ran = run_system(window_config, run_id="tuned-window")
    pnl = sum(
        Decimal(row["pnl_quote"])
        for key, row in ran.summary["agents"].items()
        if key.startswith(f"{expected['agent']}/")
    )
    assert float(pnl) == expected["test_pnl"]


def test_interrupted_run_resumes_without_redoing_finished_trials(tmp_path: Path) -> None:
    cfg = as_config(
        tmp_path,
        search={"algorithm": "optuna", "num_samples": 6, "max_concurrent": 1, "seed": 5},
        scheduler={"kind": "none"},
    )
    first = run_tune(cfg, resolve, interrupt_after=2)
    n_first = first.trials.height
    assert 2 <= n_first < 6, "the interruption left trials to do"
    finished = set(first.trials.filter(pl.col("folds_done") == 3)["trial_id"].to_list())
    assert len(finished) >= 2
    with pytest.raises(RuntimeError, match="resume"):
        run_tune(cfg, resolve)  # an existing experiment is never silently overwritten
    second = run_tune(cfg, resolve, resume=True)
    assert second.trials.height == 6
    assert second.trials["folds_done"].to_list() == [3] * 6  # no scheduler: all folds ran
    starts = trial_starts(second.experiment_path / STARTS_FILE)
    assert set(starts) == set(second.trials["trial_id"].to_list())
    for trial_id in finished:
        assert starts[trial_id] == 1, f"finished trial {trial_id} was started again"
    # Each fold reported once per trial, even for the trial cut mid-way.
    assert second.folds.height == 6 * 3
    assert second.folds.unique(["trial_id", "fold"]).height == 6 * 3
    kept = second.trials.filter(pl.col("trial_id").is_in(list(finished)))
    before = first.trials.filter(pl.col("trial_id").is_in(list(finished)))
    assert kept.sort("trial_id")["mean_test_score"].to_list() == pytest.approx(
        before.sort("trial_id")["mean_test_score"].to_list()
    )


def test_bar_strategy_tune_writes_a_system_config_that_trades(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tune an EMA crossover on real bars, then `sapphire backtest` the best_system.yaml it
    wrote: the kernel loads the bars, risk marks at them, the bar venue fills the orders."""
    cfg = parse_tune_config(
        {
            "name": "ema_bars",
            "backtest": {
                "name": "ema",
                "agent": {"kind": "indicator:EmaCross", "id": "ema-1", "params": {}},
                "instrument": {"symbol": "BTCUSD"},
                "ohlcv": ["shared:ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv"],
                "costs": {"fee_bps": 5, "slippage_bps": 1},
                "stake": {"stake_fraction": 0.5, "initial_cash": 10000},
                "max_bars": 600,
            },
            "space": {"strategy_params.fast": {"type": "int", "low": 3, "high": 10}},
            "walk_forward": {"train": 120, "test": 80},
            "search": {"algorithm": "random", "num_samples": 1, "max_concurrent": 1, "seed": 1},
            "scheduler": {"kind": "none"},
            "output": {"storage_path": str(tmp_path / "tune")},
        }
    )
    out = run_tune(cfg, lambda p: resolve(p, shared_data))
    results = out.experiment_path / "results"
    tuned = load_system(results / "best_system.yaml")
    [agent] = tuned.agents
    assert agent.params["strategy_params"]["fast"] == out.best["strategy_params.fast"]
    assert agent.symbol == "BTCUSD" and tuned.data.max_events == 600
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data))
    monkeypatch.chdir(tmp_path)  # the exported storage root is relative ("runs")
    args = ["backtest", "--config", str(results / "best_system.yaml"), "--run-id", "tuned"]
    assert main([*args, "--no-progress"]) == 0
    store = tmp_path / "runs" / "store"
    risk = read_table(store, "risk_decisions", "tuned").collect()
    fills = read_table(store, "fills", "tuned").collect()
    assert risk.height > 0 and risk["accepted"].all(), risk["reason"].unique().to_list()
    assert fills.height > 0 and fills.height == risk.height
    # ... and trades what the bar engine trades on the exported backtest: same fills
    bt = parse_backtest(msgspec.yaml.decode((results / "best_backtest.yaml").read_bytes()))
    [engine] = run_config(bt, lambda p: resolve(p, shared_data))
    stored = fills.sort("ts_ns")
    assert [f.price_ticks for f in engine.result.fills] == stored["price_ticks"].to_list()
    assert [f.qty_lots for f in engine.result.fills] == stored["qty_lots"].to_list()
    # at the same bar's open; the kernel's order reaches the venue its latency after the
    # bar it was decided on closed (a bar is an event at its close), and fills then
    lat = tuned.exchange.params["latency"]
    reach = lat.get("feed_ns", 0) + lat.get("decision_ns", 0) + lat.get("entry_ns", 0)
    late = [k - f.ts_event_ns for f, k in zip(engine.result.fills, stored["ts_ns"], strict=True)]
    assert reach > 0 and set(late) == {reach}
    # and ends with the same PnL: the kernel's run ends when its last bar is visible, so the
    # final valuation marks at the last close, as the bar engine does (it ended a bar short)
    pnl = read_table(store, "pnl", "tuned").collect().sort("ts_ns", "seq")
    result = engine.result
    engine_pnl = result.final_equity - result.initial_cash
    # the store keeps money at 9 decimals, rounded as each amount is booked
    assert abs(pnl["equity_quote"][-1] - engine_pnl) < Decimal("1e-7"), engine_pnl
    # (tests/kernel/test_bars.py: the same where the run ends holding a position)


def test_a_tune_whose_every_trial_fails_is_an_error_not_a_best(tmp_path: Path) -> None:
    # a space naming a parameter the agent does not have: each trial fails; the tune used
    # to rank the failures, print a board and export one of them as the best, exit 0
    from actors.tune import TuneError

    cfg = as_config(
        tmp_path,
        search={"algorithm": "random", "num_samples": 2, "max_concurrent": 1, "seed": 1},
        scheduler={"kind": "none"},
    )
    # set past parse_tune_config, which refuses this space before Ray starts now
    # (test_tune_space_check.py): run_tune must still refuse whatever fails every trial
    cfg = msgspec.structs.replace(
        cfg, space={"risk_facter": {"type": "uniform", "low": 0.1, "high": 0.5}}
    )
    with pytest.raises(TuneError, match="every trial failed"):
        run_tune(cfg, resolve)
    assert not list(tmp_path.rglob("best_system.yaml"))


def test_a_resume_with_another_config_is_refused(tmp_path: Path) -> None:
    # the finished trials were scored on the first config's folds and costs; resumed with
    # other folds and a 10x fee, the run mixed both and exported the new fee as the best
    from actors.tune import CONFIG_FILE, TuneError, _config_record, check_same_config
    from sapphire.research.tune_config import load_tune_config

    cfg = load_tune_config(REPO_ROOT / "configs" / "tune_ema_cross.yaml")
    check_same_config(tmp_path, cfg)  # no record (an older experiment): nothing to compare
    (tmp_path / CONFIG_FILE).write_bytes(msgspec.json.encode(_config_record(cfg)))
    check_same_config(tmp_path, cfg)
    paced = msgspec.structs.replace(
        cfg, search=msgspec.structs.replace(cfg.search, max_concurrent=1)
    )
    check_same_config(tmp_path, paced)  # the pace is no result
    more = msgspec.structs.replace(cfg, search=msgspec.structs.replace(cfg.search, num_samples=64))
    with pytest.raises(TuneError, match="changed: search"):
        check_same_config(tmp_path, more)
    raw = msgspec.to_builtins(cfg)
    raw["walk_forward"] = {"train": 300, "test": 200}
    raw["backtest"]["costs"]["fee_bps"] = 50
    with pytest.raises(TuneError, match="changed: backtest, walk_forward"):
        check_same_config(tmp_path, parse_tune_config(raw))


def _bar_tune(tmp_path: Path, **over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "bars",
        "backtest": {
            "name": "ema",
            "agent": {
                "kind": "indicator:tests.research.flaky_strategy:FlakyEmaCross",
                "id": "ema-1",
                "params": {"strategy_params": {"fast": 3, "slow": 26}},
            },
            "instrument": {"symbol": "BTCUSD"},
            "ohlcv": ["shared:ohlcv/basana_bitstamp_BTC-USD_1m_2020-01-01.csv"],
            "costs": {"fee_bps": 5, "slippage_bps": 1},
            "stake": {"stake_fraction": 0.5, "initial_cash": 10000},
            "max_bars": 1000,
        },
        "space": {"strategy_params.fast": {"type": "choice", "values": [3, 4, 9, 10]}},
        "walk_forward": {"train": 200, "test": 100},
        "search": {"algorithm": "random", "num_samples": 4, "max_concurrent": 2, "seed": 1},
        "scheduler": {"kind": "none"},
        "output": {"storage_path": str(tmp_path / "tune")},
    }
    raw.update(over)
    return raw


def test_a_trial_that_crashes_is_reported_and_the_others_written(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # two of four trials raise before their first report: the sweep ended with a
    # KeyError traceback and no results (and --resume again), or, crashing later, exit 0
    import yaml

    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data))
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(_bar_tune(tmp_path)))
    assert main(["tune", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "trials failed" in err and "IndexError" in err, err
    results = next((tmp_path / "tune").glob("bars/results"))
    trials = pl.read_csv(results / "trials.csv")
    pairs = list(zip(trials["param.strategy_params.fast"], trials["status"], strict=True))
    assert all(status == ("ERROR" if fast > 6 else "OK") for fast, status in pairs), pairs
    assert {status for _, status in pairs} == {"OK", "ERROR"}, pairs
    picks = pl.read_csv(results / "walk_forward_selection.csv")
    ok = set(trials.filter(pl.col("status") == "OK")["trial_id"])
    assert picks.height > 0 and set(picks["trial_id"]) <= ok  # a crashed trial is no pick
    assert (results / "best_backtest.yaml").exists()
    assert main(["tune", "--config", str(config), "--resume"]) == 1  # no traceback either


def test_a_bar_tune_warms_each_trial_up_as_the_backtest_does(
    tmp_path: Path, shared_data: Path
) -> None:
    # the base slow 26 warms up 400 bars; a trial with slow 90 needs 1,244: it traded on
    # unsettled EMAs from bar 400, where `sapphire backtest` with its params waits (slow 120
    # needs 1,658, more than the day's 1,440 bars: a backtest of it is an error now)
    from sapphire.research import dataset as ds
    from sapphire.research.objective import run_window

    raw = _bar_tune(tmp_path)
    raw["backtest"]["agent"]["kind"] = "indicator:EmaCross"
    raw["backtest"]["max_bars"] = None
    cfg = parse_tune_config(raw)
    bt = cfg.backtest_config
    data = ds.load_bars(bt, lambda p: resolve(p, shared_data))
    assert data.warmup == 400
    window = ds.Window(400, data.frame.height)
    params = {"strategy_params": {"fast": 12, "slow": 90}}
    result, scored_from = run_window(data, bt, params, window)
    full = msgspec.structs.replace(
        bt, agent=msgspec.structs.replace(bt.agent, params=params), max_bars=None
    )
    [whole] = run_config(full, lambda p: resolve(p, shared_data))
    assert [f.price_ticks for f in result.fills] == [f.price_ticks for f in whole.result.fills]
    assert whole.result.fills  # the comparison is of trades, not of two empty runs
    assert scored_from > int(data.frame["ts_event_ns"][400])
