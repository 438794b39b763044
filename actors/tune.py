"""Ray Tune over an agent's parameters: walk-forward backtests, Optuna search, ASHA stopping.

The driver loads the market data once; ``tune.with_parameters`` puts it (with the folds, the
backtest config and the objective) into the object store once, and every trial reads that
one copy. A trial backtests fold after fold and reports the running out-of-sample mean after
each, so ASHA can stop a poor trial after its first folds. The experiment lives in
``<output.storage_path>/<name>``: an interrupted run (Ctrl-C, a killed driver, or the
``interrupt_after`` callback used by the tests) continues with ``resume=True`` through
``Tuner.restore``, which keeps finished trials and runs only what is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import ray
from ray import tune
from ray.tune.callback import Callback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from actors.errors import root_cause
from sapphire.backtest.config import BacktestConfig
from sapphire.research import dataset as ds
from sapphire.research import export, leaderboard, system_tune
from sapphire.research.objective import FoldScore, WindowCache, fold_report
from sapphire.research.space import ParamSpec, apply_params
from sapphire.research.tune_config import ObjectiveSpec, TuneConfig
from sapphire.research.walkforward import Fold

# what the search maximises and ASHA stops on: the train (in-sample) mean; the test mean is
# only reported, so it stays out of sample
METRIC = "mean_train_score"
STARTS_FILE = "starts.log"


class TuneError(RuntimeError):
    """A tuning run that cannot start or continue (the message says why)."""


@dataclass
class TuneOutcome:
    experiment_path: Path
    trials: pl.DataFrame
    folds: pl.DataFrame
    board: pl.DataFrame
    selection: pl.DataFrame
    summary: dict[str, float]
    best: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    wall_s: float = 0.0
    first_result_s: float | None = None
    n_folds: int = 0


def sampler(spec: ParamSpec) -> Any:
    """The ``ray.tune`` search-space object for one parsed spec."""
    lo, hi = spec.low, spec.high
    if spec.type == "choice":
        return tune.choice(list(spec.values or []))
    assert lo is not None and hi is not None
    if spec.type == "uniform":
        return tune.quniform(lo, hi, spec.step) if spec.step else tune.uniform(lo, hi)
    if spec.type == "loguniform":
        return tune.qloguniform(lo, hi, spec.step) if spec.step else tune.loguniform(lo, hi)
    if spec.type == "int":
        return (
            tune.qrandint(int(lo), int(hi), int(spec.step))
            if spec.step
            else tune.randint(int(lo), int(hi) + 1)
        )
    return tune.lograndint(int(lo), int(hi) + 1)


def param_space(cfg: TuneConfig) -> dict[str, Any]:
    return {name: sampler(spec) for name, spec in cfg.params_space.items()}


@dataclass
class Payload:
    """Everything a trial needs besides its params; shipped once through the object store."""

    dataset: ds.Dataset | system_tune.SystemDataset
    backtest: BacktestConfig | None
    base_params: dict[str, Any]
    folds: list[Fold]
    objective: ObjectiveSpec
    # Each trial start appends its id here (single-node runs: the resume check reads it).
    start_log: Path | None = None


def prepare(cfg: TuneConfig, resolve: Callable[[str], Path]) -> Payload:
    wf = cfg.walk_forward
    if cfg.system is not None:
        try:
            system = system_tune.load_system(cfg.system, cfg.agent)
        except (system_tune.SystemTuneError, ValueError) as exc:
            raise TuneError(str(exc)) from None
        folds = ds.make_folds(
            system, wf.train, wf.test, wf.step, anchored=wf.anchored, max_folds=wf.max_folds
        )
        return Payload(system, None, system.base_params, folds, cfg.objective)
    bt = cfg.backtest_config
    data: ds.Dataset = ds.load_bars(bt, resolve)
    folds = ds.make_folds(
        data, wf.train, wf.test, wf.step, anchored=wf.anchored, max_folds=wf.max_folds
    )
    return Payload(data, bt, dict(bt.agent.params), folds, cfg.objective)


def trial(config: dict[str, Any], payload: Payload) -> None:
    """One trial: the folds in order, a report after each (ASHA may stop it in between)."""
    if payload.start_log is not None:
        with payload.start_log.open("a", encoding="utf-8") as fh:
            fh.write(f"{tune.get_context().get_trial_id()} {os.getpid()}\n")
    params = apply_params(payload.base_params, config)
    cache = WindowCache(payload.dataset, payload.backtest, params, payload.objective)
    done: list[FoldScore] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a resumed trial continues after its last reported fold
        with checkpoint.as_directory() as folder:
            done = msgspec.json.decode(
                (Path(folder) / "folds.json").read_bytes(), type=list[FoldScore]
            )
    for fold in payload.folds[len(done) :]:
        done.append(cache.fold(fold))
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "folds.json").write_bytes(msgspec.json.encode(done))
            tune.report(fold_report(done), checkpoint=tune.Checkpoint.from_directory(folder))


class FirstResult(Callback):
    """Wall time from the start of ``fit`` to the first reported result."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None

    def on_trial_result(
        self, iteration: int, trials: Any, trial: Any, result: Any, **info: Any
    ) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.started


class InterruptAfter(Callback):
    """Sends this driver SIGINT once ``n`` trials have completed: exactly what Ctrl-C does
    (Tune saves the experiment and returns; running and pending trials stay unfinished)."""

    def __init__(self, n: int) -> None:
        self.n: int | None = n
        self.completed = 0

    def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        self.completed += 1
        if self.n is not None and self.completed == self.n:
            os.kill(os.getpid(), signal.SIGINT)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config into the experiment: the restored copy stays quiet.
        return {**self.__dict__, "n": None}


def _search(cfg: TuneConfig) -> Searcher | BasicVariantGenerator:
    s = cfg.search
    if s.algorithm == "optuna":
        return ConcurrencyLimiter(
            OptunaSearch(metric=METRIC, mode="max", seed=s.seed), max_concurrent=s.max_concurrent
        )
    return BasicVariantGenerator(max_concurrent=s.max_concurrent, random_state=s.seed)


def _scheduler(cfg: TuneConfig, n_folds: int) -> TrialScheduler:
    sc = cfg.scheduler
    if sc.kind == "none" or n_folds < 2:
        return FIFOScheduler()  # type: ignore[no-untyped-call]
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=n_folds,
        grace_period=min(sc.grace_period, n_folds),
        reduction_factor=sc.reduction_factor,
    )


def ensure_ray(num_cpus: int = 2) -> None:
    if not ray.is_initialized():
        # A new local cluster ("local": never attach to a cluster someone started with
        # `ray start`); Ray picks a free GCS port (6379 is Redis's on these machines).
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
        )


CONFIG_FILE = "tune_config.json"


def _config_record(cfg: TuneConfig) -> dict[str, Any]:
    """What an experiment's results depend on (``max_concurrent`` only paces it)."""
    record: dict[str, Any] = msgspec.to_builtins(cfg)
    record.get("search", {}).pop("max_concurrent", None)
    return record


def check_same_config(path: Path, cfg: TuneConfig) -> None:
    """A resumed experiment must run the config it started with: its finished trials were
    scored on those folds, data and costs, and the best config is exported from the new
    one. Raises :class:`TuneError` naming the fields that changed."""
    try:
        started = msgspec.json.decode((path / CONFIG_FILE).read_bytes())
    except FileNotFoundError:
        return  # an experiment from before this record: nothing to compare
    except (OSError, msgspec.DecodeError) as exc:
        raise TuneError(f"{path / CONFIG_FILE}: unreadable ({exc}); --fresh starts over") from exc
    now = _config_record(cfg)
    changed = sorted(k for k in set(started) | set(now) if started.get(k) != now.get(k))
    if changed:
        raise TuneError(
            f"experiment {path} started with another config (changed: {', '.join(changed)}; "
            "--samples counts as search): resume it with the config it started with, or "
            "--fresh to start over"
        )


def experiment_path(cfg: TuneConfig, base: Path | None = None) -> Path:
    root = Path(cfg.output.storage_path)
    if base is not None and not root.is_absolute():
        root = base / root
    return (root / cfg.name).resolve()


def run_tune(
    cfg: TuneConfig,
    resolve: Callable[[str], Path],
    *,
    resume: bool = False,
    fresh: bool = False,
    num_cpus: int = 2,
    max_concurrent: int | None = None,
    interrupt_after: int | None = None,
    storage_base: Path | None = None,
    system_template: dict[str, Any] | None = None,
) -> TuneOutcome:
    """Run (or continue) the experiment; write its tables and the best configs."""
    started = time.perf_counter()
    path = experiment_path(cfg, storage_base)
    # --fresh: the previous experiment is deleted only below, once the new config and data
    # are checked; until then it counts as absent (a misspelled data file with --fresh wiped
    # the old results and then failed)
    restorable = not fresh and tune.Tuner.can_restore(str(path))
    if restorable and not resume:
        raise TuneError(
            f"experiment {path} exists: pass resume=True (--resume) to continue it or "
            "fresh=True (--fresh) to start over"
        )
    if not ray.is_initialized() and cfg.cpus_per_trial > num_cpus:
        # the local cluster this command makes could never place such a trial: Ray waits
        # for the resources forever, printing a warning a minute
        raise TuneError(
            f"cpus_per_trial {cfg.cpus_per_trial:g} > the {num_cpus} CPUs of the local cluster "
            "(--num-cpus): no trial could ever start"
        )
    if resume and restorable:
        check_same_config(path, cfg)
    payload = prepare(cfg, resolve)
    if fresh and path.exists():  # the new run can start: now the old one goes
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    if not restorable:
        (path / CONFIG_FILE).write_bytes(msgspec.json.encode(_config_record(cfg)))
    payload.start_log = path / STARTS_FILE
    if max_concurrent is not None:
        cfg = _with_concurrency(cfg, max_concurrent)
    ensure_ray(num_cpus)
    trainable = tune.with_resources(
        tune.with_parameters(trial, payload=payload), {"cpu": cfg.cpus_per_trial}
    )
    first = FirstResult()
    callbacks: list[Callback] = [first]
    if interrupt_after is not None:
        callbacks.append(InterruptAfter(interrupt_after))
    run_config = tune.RunConfig(
        name=cfg.name,
        storage_path=str(path.parent),
        callbacks=callbacks,
        verbose=0,
        log_to_file=True,
    )
    if resume and restorable:
        tuner = tune.Tuner.restore(
            str(path), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(cfg),
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="max",
                search_alg=_search(cfg),
                scheduler=_scheduler(cfg, len(payload.folds)),
                num_samples=cfg.search.num_samples,
                trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
                reuse_actors=True,
            ),
            run_config=run_config,
        )
    first.started = time.perf_counter()
    grid = tuner.fit()
    trials, folds = tables(grid, cfg)
    if not trials.is_empty() and (trials["status"] != "OK").all():
        # a space naming a parameter the agent does not have, a config every trial refuses:
        # no result, and nothing to export as the best
        raise TuneError(
            f"every trial failed ({trials.height}); the first: {trials['error'][0]} "
            f"(trial logs under {path})"
        )
    outcome = summarize(cfg, path, trials, folds, len(payload.folds))
    outcome.files = write_outputs(cfg, outcome, resolve, system_template, payload)
    outcome.wall_s = time.perf_counter() - started
    outcome.first_result_s = first.first
    return outcome


def _with_concurrency(cfg: TuneConfig, n: int) -> TuneConfig:
    return msgspec.structs.replace(
        cfg, search=msgspec.structs.replace(cfg.search, max_concurrent=n)
    )


def tables(grid: Any, cfg: TuneConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``trials`` and ``folds`` frames (see :mod:`sapphire.research.leaderboard`)."""
    names = list(cfg.params_space)
    starts = trial_starts(Path(grid.experiment_path) / STARTS_FILE)
    trial_rows: list[dict[str, Any]] = []
    fold_rows: list[dict[str, Any]] = []
    for result in grid:
        trial_id = Path(result.path).name.removeprefix("trial_")
        history = result.metrics_dataframe
        last = result.metrics or {}
        row: dict[str, Any] = {"trial_id": trial_id, "status": "ERROR" if result.error else "OK"}
        row["error"] = "" if result.error is None else root_cause(result.error)
        if not row["error"] and (result.metrics or {}).get("valid") is False:
            # the trial ran, but the agent refused its params (every fold scored as invalid)
            row["status"] = "INVALID"
            row["error"] = str((result.metrics or {}).get("error", ""))[:300]
        for name in names:
            row[leaderboard.PARAM_PREFIX + name] = (result.config or {}).get(name)
        if history is not None and "fold" not in history.columns:
            history = None  # failed before its first report: no fold scored
        row["folds_done"] = 0 if history is None else int(history["fold"].nunique())
        row["mean_train_score"] = last.get("mean_train_score")
        row["mean_test_score"] = last.get("mean_test_score")
        row["mean_test_pnl"] = last.get("mean_test_pnl")
        row["starts"] = starts.get(trial_id, 0)
        trial_rows.append(row)
        if history is not None:
            for rec in history.to_dict("records"):
                fold_rows.append(
                    {
                        "trial_id": trial_id,
                        "fold": int(rec["fold"]),
                        "train_score": float(rec["train_score"]),
                        "test_score": float(rec["test_score"]),
                        "test_pnl": float(rec["test_pnl"]),
                        "test_sharpe": float(rec["test_sharpe"]),
                        "test_fills": int(rec["test_fills"]),
                        "timestamp": float(rec.get("timestamp", 0) or 0),
                    }
                )
    fold_schema = {
        "trial_id": pl.String,
        "fold": pl.Int64,
        "train_score": pl.Float64,
        "test_score": pl.Float64,
        "test_pnl": pl.Float64,
        "test_sharpe": pl.Float64,
        "test_fills": pl.Int64,
        "timestamp": pl.Float64,
    }
    # A trial resumed without its last checkpoint may report a fold twice: keep the last.
    folds = pl.DataFrame(fold_rows, schema=fold_schema).unique(
        ["trial_id", "fold"], keep="last", maintain_order=True
    )
    trials = pl.DataFrame(trial_rows, infer_schema_length=None) if trial_rows else pl.DataFrame()
    return trials, folds


def trial_starts(log: Path) -> dict[str, int]:
    """How often each trial was started (from the start log)."""
    counts: dict[str, int] = {}
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except OSError:
        return counts
    for line in lines:
        if line.strip():
            trial_id = line.split()[0]
            counts[trial_id] = counts.get(trial_id, 0) + 1
    return counts


def summarize(
    cfg: TuneConfig, path: Path, trials: pl.DataFrame, folds: pl.DataFrame, n_folds: int
) -> TuneOutcome:
    # a failed trial's missing scores rank nowhere (its row stays in the trials table)
    ok = trials.filter(pl.col("status") == "OK") if not trials.is_empty() else trials
    ok = leaderboard.with_holdout(ok, folds, n_folds)
    board = leaderboard.leaderboard(ok, n_folds) if not ok.is_empty() else ok
    # a trial that crashed or that the agent refused is no candidate, whatever it scored
    # before (its folds stay in the folds table)
    ok_ids = ok["trial_id"] if not ok.is_empty() else pl.Series([], dtype=pl.String)
    selection = leaderboard.walk_forward_selection(
        folds.filter(pl.col("trial_id").is_in(ok_ids.to_list()))
    )
    summary = (
        leaderboard.selection_summary(board, selection, n_folds) if not board.is_empty() else {}
    )
    best = leaderboard.best_params(board) if not board.is_empty() else {}
    return TuneOutcome(path, trials, folds, board, selection, summary, best, n_folds=n_folds)


def write_outputs(
    cfg: TuneConfig,
    outcome: TuneOutcome,
    resolve: Callable[[str], Path],
    system_template: dict[str, Any] | None,
    payload: Payload | None = None,
) -> list[Path]:
    out = outcome.experiment_path / "results"
    files = leaderboard.write_tables(out, outcome.trials, outcome.folds)
    outcome.selection.write_csv(out / "walk_forward_selection.csv")
    files.append(out / "walk_forward_selection.csv")
    if not outcome.best:
        return files
    if payload is not None and isinstance(payload.dataset, system_tune.SystemDataset):
        return files + write_system_outputs(cfg, outcome, payload.dataset, payload.folds, out)

    def rewrite(p: str) -> str:
        return p if p.startswith("shared:") else str(resolve(p))

    header = f"best params of tune experiment {cfg.name}: {outcome.best}"
    bars = payload.dataset if payload is not None else None
    traded = bars.instrument if isinstance(bars, ds.BarDataset) else None
    best = export.backtest_dict(cfg, outcome.best, rewrite, traded)
    files.append(export.write_yaml(out / "best_backtest.yaml", best, header))
    if system_template is None and cfg.backtest_config.ohlcv:
        # the tuned bar strategy on the tuned bars, not the default system's sample ticks
        return files + export.write_bar_system(cfg, outcome.best, resolve, out, header)
    files.append(
        export.write_yaml(
            out / "best_system.yaml",
            export.system_dict(cfg, outcome.best, system_template),
            header,
        )
    )
    return files


def write_system_outputs(
    cfg: TuneConfig,
    outcome: TuneOutcome,
    dataset: system_tune.SystemDataset,
    folds: list[Fold],
    out: Path,
) -> list[Path]:
    """The best params as system configs that run unchanged: ``best_system.yaml`` (the whole
    data) and ``best_window.yaml`` (the best trial's last scored test window, with the PnL
    tune measured on it in ``best_window.json``: ``sapphire run`` reproduces it exactly)."""
    header = f"best params of tune experiment {cfg.name}: {outcome.best}"
    files = [
        export.write_yaml(
            out / "best_system.yaml",
            system_tune.system_dict(dataset.run_raw, dataset.agent_id, outcome.best),
            header,
        )
    ]
    best_id = str(outcome.board["trial_id"][0])
    mine = outcome.folds.filter(pl.col("trial_id") == best_id).sort("fold")
    if mine.is_empty():
        return files
    last = mine.row(-1, named=True)
    window = next(f for f in folds if f.index == int(last["fold"])).test
    files.append(
        export.write_yaml(
            out / "best_window.yaml",
            system_tune.system_dict(dataset.run_raw, dataset.agent_id, outcome.best, window),
            f"{header}\ntest window of fold {last['fold']}: tune measured PnL {last['test_pnl']}",
        )
    )
    expected = {
        "trial_id": best_id,
        "fold": int(last["fold"]),
        "agent": dataset.agent_id,
        "start_ns": window.start,
        "end_ns": window.end,
        "test_pnl": last["test_pnl"],
    }
    (out / "best_window.json").write_bytes(msgspec.json.encode(expected))
    files.append(out / "best_window.json")
    return files
