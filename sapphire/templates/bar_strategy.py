"""A bar strategy: buy a close above its rolling mean by a margin, leave below it (a template).

Copied by ``sapphire new-agent --bar``. Run it with the config written beside it::

    sapphire backtest --config NAME.yaml

freqtrade-style (``sapphire.agents.indicator``): declare the parameters once as ``Params``,
compute indicator columns on the whole frame in ``populate_indicators``, and set 0/1 columns
``enter_long``/``exit_long`` (``enter_short``/``exit_short`` when ``can_short``). The same
class runs vectorized (``engine: vectorized``) and bar by bar (``engine: event``, and as an
``indicator:module:Class`` agent of a system config); they agree when every indicator has
settled within ``startup_candle_count`` bars.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
import polars as pl

from sapphire.agents.indicator import IndicatorStrategy


class TemplateBarParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    window: Annotated[int, msgspec.Meta(gt=1)] = 20
    margin: Annotated[float, msgspec.Meta(ge=0)] = 0.001  # 0.1 % above the mean to enter


class TemplateBarStrategy(IndicatorStrategy):
    # the bars its generated config runs on (a day of Bitstamp 1-minute bars): a strategy
    # written for other bars counts its periods in these (not resampled), and says so
    timeframe = "1m"
    stoploss = -0.05
    Params: ClassVar[type[msgspec.Struct]] = TemplateBarParams

    def __init__(self, params: dict[str, Any] | msgspec.Struct | None = None) -> None:
        super().__init__(params)
        # a rolling mean of `window` bars has settled after `window` bars: set from the
        # params, so a tuned window never outgrows the bars the agent keeps
        self.startup_candle_count = self.params.window

    def populate_indicators(self, df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(pl.col("close").rolling_mean(self.params.window).alias("mean"))

    def populate_entry_trend(self, df: pl.DataFrame) -> pl.DataFrame:
        above = pl.col("close") > pl.col("mean") * (1 + self.params.margin)
        return df.with_columns(above.fill_null(False).alias("enter_long"))

    def populate_exit_trend(self, df: pl.DataFrame) -> pl.DataFrame:
        below = pl.col("close") < pl.col("mean")
        return df.with_columns(below.fill_null(False).alias("exit_long"))
