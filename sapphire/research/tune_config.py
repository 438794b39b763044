"""The tuning configuration (``sapphire tune --config FILE``), validated once.

``backtest`` is a complete backtest config (the format of ``configs/backtest_*.yaml``): it
names the agent, its base params, the instrument, the data and the execution costs. The
search varies some of the agent's params (``space``, dotted paths into ``agent.params``);
every trial runs that backtest on each walk-forward window.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from sapphire.agents.indicator import StrategyError, load_strategy
from sapphire.backtest.config import BacktestConfig, BacktestConfigError, parse_config
from sapphire.config.kind import wrong_kind
from sapphire.config.system import SystemConfig
from sapphire.config.yaml_text import describe, load_yaml
from sapphire.kernel import assembly
from sapphire.kernel.builders import WiringError
from sapphire.research import system_tune
from sapphire.research.space import ParamSpec, SpaceError, parse_space

Metric = Literal["pnl", "sharpe", "sortino", "total_return", "calmar"]


class TuneConfigError(ValueError):
    """A tune config that cannot be run; the message names the field."""


class WalkForwardSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Lengths in seconds for tick data, in bars for OHLCV data."""

    train: Annotated[float, msgspec.Meta(gt=0)]  # each fold's in-sample span, searched
    test: Annotated[float, msgspec.Meta(gt=0)]  # the out-of-sample span after it, scored
    step: Annotated[float, msgspec.Meta(gt=0)] | None = None  # between folds; null: test
    anchored: bool = False  # every fold trains from the data's start (expanding window)
    max_folds: Annotated[int, msgspec.Meta(gt=0)] | None = None  # the first n; null: all


class ObjectiveSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metric: Metric = "pnl"
    # Score = metric - drawdown_penalty * max drawdown (fraction): prefers smoother curves.
    drawdown_penalty: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    min_fills: Annotated[int, msgspec.Meta(ge=0)] = 0  # windows with fewer fills score 0


class SearchSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    algorithm: Literal["optuna", "random"] = "optuna"  # Optuna TPE, or random sampling
    num_samples: Annotated[int, msgspec.Meta(gt=0)] = 16  # trials (parameter sets)
    max_concurrent: Annotated[int, msgspec.Meta(gt=0)] = 2  # trials at once on the cluster
    seed: int = 0  # the searcher's seed: the same file samples the same trials


class SchedulerSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["asha", "none"] = "asha"  # ASHA stops trials that lag their rung's best
    grace_period: Annotated[int, msgspec.Meta(gt=0)] = 1  # folds before ASHA may stop a trial
    reduction_factor: Annotated[float, msgspec.Meta(gt=1)] = 2.0  # ASHA keeps 1/this a rung


class OutputSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    storage_path: str = "runs/tune"  # the experiment lives in <storage_path>/<name>
    system_template: str | None = None  # a system YAML to put the best params into


class TuneConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]+$")]  # the experiment's folder
    # Exactly one of: a system config (tick agents: every window is a run of the trading
    # kernel, what `sapphire run` runs) with the id of the agent to tune, or a bar-strategy
    # backtest config (OHLCV, vectorized).
    system: dict[str, Any] | None = None
    agent: str = ""  # the system's agent to tune ("": its only agent)
    backtest: dict[str, Any] | None = None  # a bar backtest config (its data: OHLCV)
    # param path -> {type: uniform|loguniform|int|logint|choice, low, high, step, values}
    space: dict[str, Any]
    walk_forward: WalkForwardSpec
    objective: ObjectiveSpec = ObjectiveSpec()
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    output: OutputSpec = OutputSpec()
    cpus_per_trial: Annotated[float, msgspec.Meta(gt=0)] = 1.0  # Ray resources of a trial

    @property
    def backtest_config(self) -> BacktestConfig:
        if self.backtest is None:
            raise TuneConfigError("this tune config has no 'backtest' (it tunes a 'system')")
        return parse_config(self.backtest)

    @property
    def params_space(self) -> dict[str, ParamSpec]:
        return parse_space(self.space)


def parse_tune_config(raw: object, origin: str = "<dict>") -> TuneConfig:
    misfiled = wrong_kind(raw, origin, "tune")
    if misfiled:  # a system config was refused about its first key ("unknown field 'run_id'")
        raise TuneConfigError(misfiled)
    try:
        cfg = msgspec.convert(raw, TuneConfig, strict=False)
        if (cfg.system is None) == (cfg.backtest is None):
            raise TuneConfigError(f"{origin}: set exactly one of 'system' and 'backtest'")
        cfg.params_space  # noqa: B018
        if cfg.system is not None:
            # Validate the embedded parts now, so a bad file fails before Ray starts.
            try:
                system = system_tune.parse_system(cfg.system, f"{origin}: system")
            except system_tune.SystemTuneError as exc:
                raise TuneConfigError(str(exc)) from None  # it names the file already
            agent_id = system_tune.tuned_agent_id(cfg.system, cfg.agent)
            _check_system_space(cfg, cfg.system, system, agent_id, origin)
            return cfg
        bt = cfg.backtest_config
    except msgspec.ValidationError as exc:
        raise TuneConfigError(f"{origin}: {exc}") from None
    except (BacktestConfigError, SpaceError, system_tune.SystemTuneError) as exc:
        raise TuneConfigError(f"{origin}: {exc}") from None
    if bt.ticks is not None and bt.engine != "event":
        raise TuneConfigError(f"{origin}: tick data runs on the event engine")
    if bt.ohlcv and len(bt.ohlcv) != 1:
        raise TuneConfigError(f"{origin}: tuning takes exactly one OHLCV file")
    if bt.ohlcv:
        _check_bar_space(cfg, bt, origin)
    return cfg


def _check_bar_space(cfg: TuneConfig, bt: BacktestConfig, origin: str) -> None:
    """A bar tune scores an indicator strategy on its bars and reads nothing of the agent's
    params but ``strategy_params``: a path elsewhere (``stake.stake_fraction``, a typo such
    as ``fast``) varied nothing, every trial scored the same, and the sweep said nothing."""
    kind, _, name = bt.agent.kind.partition(":")
    if kind != "indicator" or not name:
        raise TuneConfigError(
            f"{origin}: backtest.agent.kind: a bar tune runs an indicator strategy "
            f"('indicator:<Strategy>'), got {bt.agent.kind!r}"
        )
    try:
        strategy = load_strategy(name, dict(bt.agent.params.get("strategy_params", {})))
    except (StrategyError, ValueError) as exc:
        raise TuneConfigError(f"{origin}: backtest.agent: {exc}") from None
    fields = set(type(strategy.params).__struct_fields__)
    for path in cfg.params_space:
        head, _, field = path.partition(".")
        if head != "strategy_params" or field not in fields:
            raise TuneConfigError(
                f"{origin}: space.{path}: a bar tune varies the strategy's parameters only "
                f"(strategy_params.<one of {', '.join(sorted(fields))}>): nothing reads "
                f"{path!r}"
            )


def _check_system_space(
    cfg: TuneConfig, raw: dict[str, Any], system: SystemConfig, agent_id: str, origin: str
) -> None:
    """A tick tune's trials build the agent with their sampled params: a path the agent does
    not take (``risk_factr``) failed every trial, found only once Ray Tune had run them all.
    The agent is built here with each path set to a value of its range (each value of a
    choice), before Ray starts; the base config's agents first, so that a bad base is not
    blamed on the space."""
    try:
        instruments = assembly.load_instruments(system.data)
    except WiringError:
        return  # loading the tune's data says so, naming the file, before Ray starts too
    try:
        assembly.check_agents(system, instruments)
    except WiringError as exc:
        raise TuneConfigError(f"{origin}: system: {exc}") from None
    for path, spec in cfg.params_space.items():
        for value in _probes(spec):
            try:
                variant = system_tune.system_dict(raw, agent_id, {path: value})
                # the params are the agent's, never the system's fields: this parse passes
                assembly.check_agents(system_tune.parse_system(variant, "system"), instruments)
            except (WiringError, SpaceError, system_tune.SystemTuneError) as exc:
                # a choice's value is the mistake as often as its path: name it
                where = f"space.{path}" + (f" value {value!r}" if spec.type == "choice" else "")
                raise TuneConfigError(f"{origin}: {where}: {exc}") from None


def _probes(spec: ParamSpec) -> list[Any]:
    """Values a trial may be given for ``spec``: every choice, else the range's middle (on a
    log scale for the log kinds; whole and on the step's grid where the searchers are)."""
    if spec.type == "choice":
        return list(spec.values or [])
    assert spec.low is not None and spec.high is not None  # parse_space checked
    if spec.type in ("loguniform", "logint"):
        middle = math.sqrt(spec.low * spec.high)
    else:
        middle = (spec.low + spec.high) / 2
    if spec.step is not None:
        middle = min(max(round(middle / spec.step) * spec.step, spec.low), spec.high)
    if spec.type in ("int", "logint"):
        return [round(middle)]
    return [middle]


def load_tune_config(path: str | Path) -> TuneConfig:
    path = Path(path)
    try:
        raw = load_yaml(path.read_bytes())
    except OSError as exc:
        raise TuneConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TuneConfigError(f"{path}: not valid YAML: {describe(exc)}") from None
    return parse_tune_config(raw, str(path))
