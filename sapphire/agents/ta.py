"""Typed wrappers over TA-Lib (``ta-lib`` wheels) for polars columns.

TA-Lib is the reference implementation freqtrade strategies use, so indicator values match
what strategy authors expect. Each wrapper takes a polars Series and returns a Float64 Series
of the same length (leading values null until the indicator is defined).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl
import talib
from talib._ta_lib import MA_Type


def _arr(series: pl.Series) -> npt.NDArray[np.float64]:
    return series.cast(pl.Float64).to_numpy().astype(np.float64, copy=False)


def _out(name: str, values: npt.NDArray[np.float64]) -> pl.Series:
    # TA-Lib marks bars before an indicator is defined NaN. polars orders NaN above every
    # number (``close < nan`` is true), pandas compares it false: as nulls, a comparison
    # with an undefined indicator is null and the signal columns read it as 0, as
    # freqtrade's pandas frames do.
    return pl.Series(name, values, dtype=pl.Float64, nan_to_null=True)


def ema(close: pl.Series, period: int) -> pl.Series:
    return _out(f"ema_{period}", talib.EMA(_arr(close), timeperiod=period))


def sma(close: pl.Series, period: int) -> pl.Series:
    return _out(f"sma_{period}", talib.SMA(_arr(close), timeperiod=period))


def rsi(close: pl.Series, period: int) -> pl.Series:
    return _out(f"rsi_{period}", talib.RSI(_arr(close), timeperiod=period))


def bbands(close: pl.Series, period: int, nbdev: float) -> tuple[pl.Series, pl.Series, pl.Series]:
    """``(upper, middle, lower)`` Bollinger bands (population std, as TA-Lib)."""
    upper, middle, lower = talib.BBANDS(
        _arr(close), timeperiod=period, nbdevup=nbdev, nbdevdn=nbdev, matype=MA_Type.SMA
    )
    return _out("bb_upper", upper), _out("bb_middle", middle), _out("bb_lower", lower)
