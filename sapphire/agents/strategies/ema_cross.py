"""EMA crossover: long when the fast EMA crosses above the slow one, out when it crosses back."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

import msgspec
import polars as pl

from sapphire.agents import ta
from sapphire.agents.indicator import IndicatorStrategy, crossed_above, crossed_below


class EmaCrossParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fast: Annotated[int, msgspec.Meta(gt=1)] = 12
    slow: Annotated[int, msgspec.Meta(gt=2)] = 26

    def __post_init__(self) -> None:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be < slow ({self.slow})")


class EmaCross(IndicatorStrategy):
    timeframe = "5m"
    # EMA memory decays as (1 - 2/(slow+1))^n: 400 bars leave < 1e-12 of the seed for slow <= 26
    # (the freqtrade parity config); a slower EMA needs more (see __init__)
    startup_candle_count = 400
    stoploss = -0.10
    Params: ClassVar[type[msgspec.Struct]] = EmaCrossParams

    def __init__(self, params: dict[str, Any] | msgspec.Struct | None = None) -> None:
        super().__init__(params)
        # until the seed weighs < 1e-12 the vectorized and bar-by-bar engines, whose EMAs
        # start at different bars, may disagree on a cross: slow 200 needs 2,763 bars
        decay = math.log(1 - 2 / (self.params.slow + 1))
        self.startup_candle_count = max(400, math.ceil(math.log(1e-12) / decay))

    def populate_indicators(self, df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            ta.ema(df["close"], self.params.fast).alias("ema_fast"),
            ta.ema(df["close"], self.params.slow).alias("ema_slow"),
        )

    def populate_entry_trend(self, df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            crossed_above(pl.col("ema_fast"), pl.col("ema_slow")).alias("enter_long")
        )

    def populate_exit_trend(self, df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            crossed_below(pl.col("ema_fast"), pl.col("ema_slow")).alias("exit_long")
        )
