"""RSI + Bollinger: buy an oversold close below the lower band, sell at the middle band or
when RSI is overbought. Shorts the mirror image when ``can_short`` is set by a subclass."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

import msgspec
import polars as pl

from sapphire.agents import ta
from sapphire.agents.indicator import IndicatorStrategy


class RsiBollingerParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rsi_period: Annotated[int, msgspec.Meta(gt=1)] = 14
    rsi_buy: Annotated[float, msgspec.Meta(gt=0, lt=100)] = 30.0
    rsi_sell: Annotated[float, msgspec.Meta(gt=0, lt=100)] = 70.0
    bb_period: Annotated[int, msgspec.Meta(gt=1)] = 20
    bb_dev: Annotated[float, msgspec.Meta(gt=0)] = 2.0

    def __post_init__(self) -> None:
        if self.rsi_buy >= self.rsi_sell:
            raise ValueError(f"rsi_buy ({self.rsi_buy}) must be < rsi_sell ({self.rsi_sell})")


class RsiBollinger(IndicatorStrategy):
    timeframe = "1m"
    # Wilder's RSI smoothing decays as (13/14)^n: 500 bars leave < 1e-15 of its seed; a
    # longer RSI or band needs more (see __init__)
    startup_candle_count = 500
    stoploss = -0.05
    Params: ClassVar[type[msgspec.Struct]] = RsiBollingerParams

    def __init__(self, params: dict[str, Any] | msgspec.Struct | None = None) -> None:
        super().__init__(params)
        # the bands are defined from bar bb_period; the RSI's seed weighs (1 - 1/n)^bars
        rsi_decay = math.log(1 - 1 / self.params.rsi_period)
        self.startup_candle_count = max(
            500, self.params.bb_period, math.ceil(math.log(1e-15) / rsi_decay)
        )

    def populate_indicators(self, df: pl.DataFrame) -> pl.DataFrame:
        upper, middle, lower = ta.bbands(df["close"], self.params.bb_period, self.params.bb_dev)
        return df.with_columns(
            ta.rsi(df["close"], self.params.rsi_period).alias("rsi"), upper, middle, lower
        )

    def populate_entry_trend(self, df: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        long = (pl.col("rsi") < p.rsi_buy) & (pl.col("close") < pl.col("bb_lower"))
        short = (pl.col("rsi") > p.rsi_sell) & (pl.col("close") > pl.col("bb_upper"))
        return df.with_columns(long.alias("enter_long"), short.alias("enter_short"))

    def populate_exit_trend(self, df: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        exit_long = (pl.col("close") > pl.col("bb_middle")) | (pl.col("rsi") > p.rsi_sell)
        exit_short = (pl.col("close") < pl.col("bb_middle")) | (pl.col("rsi") < p.rsi_buy)
        return df.with_columns(exit_long.alias("exit_long"), exit_short.alias("exit_short"))


class RsiBollingerLongShort(RsiBollinger):
    can_short = True
