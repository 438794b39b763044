"""freqtrade-style indicator strategies over polars frames.

Subclass :class:`IndicatorStrategy`, set the class attributes (``timeframe``,
``startup_candle_count``, ``stoploss``, ``can_short``), declare parameters once as a frozen
msgspec ``Params`` struct, and write the three ``populate_*`` methods. A frame has the columns
``ts_event_ns, open, high, low, close, volume`` (floats in the instrument's units). Entry and
exit columns are ``enter_long``, ``exit_long``, ``enter_short``, ``exit_short`` (0/1).

The same strategy runs vectorized (whole frame, :func:`compute_signals`) and bar by bar
(:class:`~sapphire.agents.indicator_agent.IndicatorAgent`, over a rolling window of the last
``startup_candle_count + N`` bars). The two give the same signals when every indicator has
settled within ``startup_candle_count`` bars; that is the strategy author's promise, as in
freqtrade, and the parity tests check it on real data.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import msgspec
import polars as pl

SIGNAL_COLUMNS = ("enter_long", "exit_long", "enter_short", "exit_short")
BAR_COLUMNS = ("ts_event_ns", "open", "high", "low", "close", "volume")


class StrategyError(ValueError):
    """A strategy that cannot be found, configured, or produces a malformed frame."""


class NoParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class IndicatorStrategy:
    """Base of bar strategies. Only ``populate_*`` need overriding."""

    timeframe: ClassVar[str] = "5m"
    # bars every indicator needs to settle; a strategy whose settling depends on its params
    # sets it per instance (EmaCross: its slow span)
    startup_candle_count: int = 0
    stoploss: ClassVar[float] = -1.0
    can_short: ClassVar[bool] = False
    Params: ClassVar[type[msgspec.Struct]] = NoParams

    def __init__(self, params: dict[str, Any] | msgspec.Struct | None = None) -> None:
        if not -1.0 <= self.stoploss < 0.0:
            raise StrategyError(f"{type(self).__name__}.stoploss must be in [-1, 0)")
        if isinstance(params, self.Params):
            self.params: Any = params
        else:
            try:
                self.params = msgspec.convert(params or {}, self.Params, strict=False)
            except (msgspec.ValidationError, ValueError) as exc:
                raise StrategyError(f"{type(self).__name__} params: {exc}") from exc

    def populate_indicators(self, df: pl.DataFrame) -> pl.DataFrame:
        return df

    def populate_entry_trend(self, df: pl.DataFrame) -> pl.DataFrame:
        return df

    def populate_exit_trend(self, df: pl.DataFrame) -> pl.DataFrame:
        return df


def compute_signals(strategy: IndicatorStrategy, bars: pl.DataFrame) -> pl.DataFrame:
    """Run the three populate steps; missing signal columns become 0, nulls become 0."""
    df = populate(strategy, bars)
    exprs = [
        (
            pl.col(c).cast(pl.Int8, strict=False).fill_null(0)
            if c in df.columns
            else pl.lit(0, pl.Int8)
        ).alias(c)
        for c in SIGNAL_COLUMNS
    ]
    return df.with_columns(exprs)


def populate(strategy: IndicatorStrategy, bars: pl.DataFrame) -> pl.DataFrame:
    """The three populate steps, checked (what :func:`compute_signals` runs before casting)."""
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise StrategyError(f"bar frame lacks columns {missing}")
    df = strategy.populate_indicators(bars)
    df = strategy.populate_entry_trend(df)
    df = strategy.populate_exit_trend(df)
    if df.height != bars.height:
        raise StrategyError(f"{type(strategy).__name__} changed the number of rows")
    return df


def last_signals(strategy: IndicatorStrategy, bars: pl.DataFrame) -> tuple[bool, bool, bool, bool]:
    """The last row's ``(enter_long, exit_long, enter_short, exit_short)``, as
    :func:`compute_signals` would give them, without casting the whole frame."""
    df = populate(strategy, bars)
    out = []
    for col in SIGNAL_COLUMNS:
        if col not in df.columns or df.height == 0:
            out.append(False)
            continue
        series = df.get_column(col)
        value = series[-1]
        if value is None or value is False or value is True:
            out.append(bool(value))
        else:  # numbers: the same lenient Int8 cast (NaN and out of range -> 0)
            cast = series.tail(1).cast(pl.Int8, strict=False).fill_null(0)[0]
            out.append(bool(cast))
    return out[0], out[1], out[2], out[3]


def crossed_above(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """True on the bar where ``a`` goes from <= ``b`` to > ``b`` (freqtrade's qtpylib)."""
    return (a > b) & (a.shift(1) <= b.shift(1))


def crossed_below(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return (a < b) & (a.shift(1) >= b.shift(1))


_BUILTIN = {
    "EmaCross": "sapphire.agents.strategies.ema_cross:EmaCross",
    "RsiBollinger": "sapphire.agents.strategies.rsi_bollinger:RsiBollinger",
}


def load_strategy(name: str, params: dict[str, Any] | None = None) -> IndicatorStrategy:
    """Instantiate a strategy by built-in class name or ``package.module:Class``."""
    target = _BUILTIN.get(name, name)
    if ":" not in target:
        raise StrategyError(
            f"unknown strategy {name!r}: use one of {sorted(_BUILTIN)} or 'module:Class'"
        )
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise StrategyError(f"cannot load strategy {name!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, IndicatorStrategy)):
        raise StrategyError(f"{name!r} is not an IndicatorStrategy subclass")
    return cls(params)
