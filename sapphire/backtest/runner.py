"""Run a :class:`BacktestConfig`: load data, build the agent, run an engine, write reports."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import msgspec
import polars as pl

from sapphire.agents.base import AgentConfigError
from sapphire.agents.indicator import (
    IndicatorStrategy,
    StrategyError,
    compute_signals,
    load_strategy,
)
from sapphire.agents.indicator_agent import IndicatorAgent
from sapphire.agents.registry import build_agent
from sapphire.backtest import _loaders
from sapphire.backtest.analytics import Summary, summarize
from sapphire.backtest.bar_gateway import BarGateway
from sapphire.backtest.config import BacktestConfig, BacktestConfigError
from sapphire.backtest.event_driven import run_event_driven
from sapphire.backtest.ledger import BacktestResult
from sapphire.backtest.vectorized import run_vectorized
from sapphire.data.binance_json import interval_ns
from sapphire.data.ohlcv import file_symbol
from sapphire.model.instrument import Instrument, InstrumentError

Progress = Callable[[str, int, int], None]  # (run name, done, total)


class RunOutput(msgspec.Struct, kw_only=True):
    name: str
    result: BacktestResult
    summary: Summary
    png: str
    html: str
    note: str = ""  # something the reader of the figures should know (printed under them)


def timeframe_note(strategy: IndicatorStrategy | None, frame: pl.DataFrame) -> str:
    """Where the strategy's ``timeframe`` is not the bars': its indicator periods count the
    bars given (freqtrade would resample or refuse), which a reader must know."""
    if strategy is None or "interval_ns" not in frame.columns or frame.is_empty():
        return ""
    tf = str(strategy.timeframe)
    try:
        wanted = interval_ns(tf)
    except (KeyError, ValueError):  # no interval notation: nothing to compare
        return ""
    bars = int(frame["interval_ns"].median() or 0)  # type: ignore[arg-type]
    if not bars or wanted == bars:
        return ""
    seconds = bars // 10**9
    shown = f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"
    return (
        f"strategy timeframe {tf}, bars of {shown}: its indicator periods count these bars "
        "(not resampled)"
    )


def _instrument(cfg: BacktestConfig, raw: object | None, path: Path | None = None) -> Instrument:
    spec = cfg.instrument
    symbol = spec.symbol
    if not symbol:
        symbol = (file_symbol(path) if path is not None else None) or ""
        if not symbol and isinstance(raw, pl.DataFrame):
            symbol = _loaders.frame_symbol(raw)  # rows that name it (Hyperliquid candles)
        if not symbol:
            raise BacktestConfigError(
                f"instrument.symbol: {path} does not name its symbol (a freqtrade_ or basana_ "
                "file name, or a file whose rows carry one, does): set it"
            )
    if spec.tick_size is None or spec.lot_size is None:
        inferred = _loaders.instrument_for(raw, symbol)  # type: ignore[arg-type]
        tick, lot = spec.tick_size or inferred.tick_size, spec.lot_size or inferred.lot_size
    else:
        tick, lot = spec.tick_size, spec.lot_size
    return Instrument(
        symbol=symbol,
        base=spec.base,
        quote=spec.quote,
        tick_size=tick,
        lot_size=lot,
    )


def run_config(
    cfg: BacktestConfig, resolve: Callable[[str], Path], progress: Progress | None = None
) -> list[RunOutput]:
    """One run per OHLCV file (or one for the tick session); reports under ``output_dir``."""
    out_dir = resolve(cfg.output_dir)
    try:
        return [_run_bars(cfg, resolve(path), out_dir, progress) for path in cfg.ohlcv]
    except (AgentConfigError, StrategyError) as exc:
        raise BacktestConfigError(_name_field(_agent_field(exc), str(exc))) from exc
    except InstrumentError as exc:  # a grid inferred from the file (the config's is checked)
        raise BacktestConfigError(f"instrument: {exc}") from exc
    except _loaders.DataError as exc:
        raise BacktestConfigError(str(exc)) from exc


# msgspec's "<why> - at `$.fast`": the path inside the value it converted
_AT_PATH = re.compile(r"^(?P<why>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
# a strategy's params that failed to convert ("EmaCross params: ..."), not its name
_STRATEGY_PARAMS = re.compile(r"^\w+ params: ")
_KIND_ERRORS = ("unknown agent kind", "cannot import agent kind", "indicator kind needs")


def _agent_field(exc: Exception) -> str:
    """The config field an agent or strategy error is about: its kind (which class) or
    its params (the strategy's own, under ``strategy_params``)."""
    strategy = exc if isinstance(exc, StrategyError) else exc.__cause__
    if isinstance(strategy, StrategyError):
        if _STRATEGY_PARAMS.match(str(strategy)):
            return "agent.params.strategy_params"
        return "agent.kind"  # unknown strategy, not importable, not a strategy class
    if str(exc).startswith(_KIND_ERRORS):
        return "agent.kind"
    return "agent.params"


def _name_field(field: str, message: str) -> str:
    """``field.sub: why`` from msgspec's ``why - at `$.sub```: the config's full path
    (the user edits ``agent.params.strategy_params.fast``, not ``$.fast``)."""
    found = _AT_PATH.match(message)
    if found is None:
        return f"{field}: {message}"
    return f"{field}{found['path']}: {found['why']}"


def no_trading_bars(bars: int, strategy: IndicatorStrategy, max_bars: int | None) -> str:
    """Why bars that end inside the strategy's warm-up are an error, not a 0 % run (as the
    kernel refuses data that ends in its warm-up windows)."""
    cut = f" (max_bars: {max_bars})" if max_bars is not None else ""
    return (
        f"no bars in the trading period: the data{cut} ended after {bars} warm-up bar(s); "
        f"{type(strategy).__name__} needs startup_candle_count={strategy.startup_candle_count} "
        "bars before its first signal counts"
    )


def _finish(
    name: str,
    result: BacktestResult,
    inst: Instrument,
    out_dir: Path,
    agent: str,
    bars: pl.DataFrame | None,
) -> RunOutput:
    summary = summarize(result, inst)
    from sapphire.backtest.report import write_report  # plotting libraries: a second to import

    png, page = write_report(result, summary, out_dir, name, inst, agent, bars)
    return RunOutput(name=name, result=result, summary=summary, png=str(png), html=str(page))


def _check_warmup(strategy: IndicatorStrategy, path: Path, bars: int, max_bars: int | None) -> None:
    # its first startup_candle_count bars only settle the indicators and the scores start at
    # the last of them: with no bar after it, the run printed a 0.000 % result and exit 0
    if bars <= strategy.startup_candle_count:
        raise _loaders.DataError(f"{path}: {no_trading_bars(bars, strategy, max_bars)}")


def _run_bars(
    cfg: BacktestConfig, path: Path, out_dir: Path, progress: Progress | None
) -> RunOutput:
    raw = _loaders.read_ohlcv(path)
    if cfg.max_bars is not None:
        raw = raw.head(cfg.max_bars)
    inst = _instrument(cfg, raw, path)
    frame = _loaders.tick_frame(raw, inst)
    name = f"{cfg.name}-{path.name.split('.')[0]}"
    total = frame.height

    def tick(done: int) -> None:
        if progress is not None:
            progress(name, done, total)

    strategy: IndicatorStrategy | None = None
    if cfg.engine == "vectorized":
        strategy = load_strategy(
            cfg.agent.kind.split(":", 1)[1], dict(cfg.agent.params.get("strategy_params", {}))
        )
        _check_warmup(strategy, path, total, cfg.max_bars)
        result = run_vectorized(strategy, frame, inst, cfg.costs, cfg.stake, progress=tick)
    else:
        params = dict(cfg.agent.params)
        if cfg.agent.kind.startswith("indicator:"):
            params.setdefault("stake", msgspec.to_builtins(cfg.stake))
        agent = build_agent(cfg.agent.kind, cfg.agent.id, inst, params)
        if isinstance(agent, IndicatorAgent):
            strategy = agent.strategy
            _check_warmup(strategy, path, total, cfg.max_bars)
        result = run_event_driven(
            agent,
            _loaders.bar_events(frame, inst.symbol),
            BarGateway(inst, cfg.costs),
            inst,
            cfg.starting_cash,
            progress=tick,
        )
    tick(total)
    if strategy is not None and strategy.startup_candle_count > 0:
        # both engines mark every bar; the ratios start at the last warm-up close, where
        # tune's windows start too
        result.scored_from = strategy.startup_candle_count - 1
    # the report's price chart: candles with the strategy's indicators and signal columns
    bars = compute_signals(strategy, frame) if strategy is not None else frame
    out = _finish(name, result, inst, out_dir, cfg.agent.id or cfg.agent.kind, bars)
    out.note = timeframe_note(strategy, frame)
    return out
