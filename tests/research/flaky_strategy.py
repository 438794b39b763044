"""An EMA crossover that crashes for some params: a strategy bug a sweep must survive."""

from __future__ import annotations

import polars as pl

from sapphire.agents.strategies.ema_cross import EmaCross


class FlakyEmaCross(EmaCross):
    def populate_indicators(self, df: pl.DataFrame) -> pl.DataFrame:
        if self.params.fast > 6:
            raise IndexError("list index out of range")  # the bug, on every window
        return super().populate_indicators(df)
