"""Bar data for a tuning run, loaded once and sliced into walk-forward windows, and the folds.

OHLCV data is the integer-tick bar frame; a window keeps its strategy's startup bars in front
so indicators are settled when the window opens. Tick data is tuned as a system config on the
trading kernel (``sapphire.research.system_tune``), whose windows are data slices of one run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import polars as pl

from sapphire.agents.indicator import load_strategy
from sapphire.backtest import _loaders
from sapphire.backtest.config import BacktestConfig
from sapphire.backtest.runner import _instrument
from sapphire.model.events import AnyMarketEvent
from sapphire.model.instrument import Instrument
from sapphire.research.system_tune import SystemDataset
from sapphire.research.walkforward import Fold, Window, walk_forward_splits

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[AnyMarketEvent])


@dataclass
class BarDataset:
    instrument: Instrument
    frame: pl.DataFrame  # tick frame (see backtest._loaders.tick_frame)
    warmup: int  # bars kept before each window for the indicators

    @property
    def span(self) -> Window:
        return Window(self.warmup, self.frame.height)

    def window_frame(self, window: Window, warmup: int | None = None) -> tuple[pl.DataFrame, int]:
        """The bars of ``window`` preceded by up to ``warmup`` bars (default: the base
        params' warm-up); and the index of the first bar scored. A trial whose params need a
        longer warm-up than the data's first windows hold (slow 200 needs 2,764 bars where
        the base slow 26 needs 400) is scored from its own warm-up's end, the bar where
        ``sapphire backtest`` with those params starts to trade, not on unsettled EMAs."""
        warmup = self.warmup if warmup is None else warmup
        lead = min(warmup, window.start)
        frame = self.frame.slice(window.start - lead, window.length + lead)
        return frame, min(lead + max(0, warmup - window.start), frame.height)


Dataset = BarDataset


def load_bars(bt: BacktestConfig, resolve: Callable[[str], Path]) -> BarDataset:
    raw = _loaders.read_ohlcv(resolve(bt.ohlcv[0]))
    if bt.max_bars is not None:
        raw = raw.head(bt.max_bars)
    inst = _instrument(bt, raw)
    strategy = load_strategy(
        bt.agent.kind.split(":", 1)[1], dict(bt.agent.params.get("strategy_params", {}))
    )
    return BarDataset(inst, _loaders.tick_frame(raw, inst), strategy.startup_candle_count)


def make_folds(
    dataset: Dataset | SystemDataset,
    train: float,
    test: float,
    step: float | None,
    *,
    anchored: bool,
    max_folds: int | None = None,
) -> list[Fold]:
    """Walk-forward folds in the dataset's unit: seconds -> ns for ticks, bars for OHLCV."""
    scale = 1.0 if isinstance(dataset, BarDataset) else 1e9  # bars count bars; ticks seconds
    span = dataset.span
    return walk_forward_splits(
        span.start,
        span.end,
        int(train * scale),
        int(test * scale),
        None if step is None else int(step * scale),
        anchored=anchored,
        max_folds=max_folds,
    )
