"""Walk-forward splits: rolling (or anchored) train windows, each followed by its test window.

Positions are plain integers in one unit chosen by the caller (nanoseconds for tick data,
bar indices for OHLCV), windows are half-open ``[start, end)``. A fold's test window starts
where its train window ends, so nothing of the test period is seen in-sample; consecutive
folds move by ``step`` (default: the test length, so the test windows tile the span).
"""

from __future__ import annotations

import msgspec


class SplitError(ValueError):
    """Window lengths that do not fit the data span. ``span`` and ``needed`` (train + test)
    are in the caller's unit, when the data is too short: :meth:`in_units` says it in the
    config's (seconds for tick data, not the nanoseconds the folds are cut in)."""

    def __init__(self, message: str, *, span: int | None = None, needed: int | None = None) -> None:
        super().__init__(message)
        self.span = span
        self.needed = needed

    def in_units(self, per_unit: float, unit: str) -> str:
        """The error in the config's unit: ``per_unit`` positions make one ``unit``
        (1e9 for seconds of nanosecond data)."""
        if self.span is None or self.needed is None:
            return str(self)
        needed, span = self.needed / per_unit, self.span / per_unit
        for decimals in (0, 1, 3, 9):  # as few as tell the two apart (never "900 < 900")
            if round(needed, decimals) != round(span, decimals):
                break

        def text(value: float) -> str:
            shown = f"{value:.{decimals}f}"
            return shown.rstrip("0").rstrip(".") if "." in shown else shown

        return (
            f"walk_forward: train + test = {text(needed)} {unit}, but the data spans "
            f"{text(span)} {unit}"
        )


class Window(msgspec.Struct, frozen=True):
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def contains(self, position: int) -> bool:
        return self.start <= position < self.end


class Fold(msgspec.Struct, frozen=True):
    index: int
    train: Window
    test: Window


def walk_forward_splits(
    start: int,
    end: int,
    train: int,
    test: int,
    step: int | None = None,
    *,
    anchored: bool = False,
    max_folds: int | None = None,
) -> list[Fold]:
    """Folds over ``[start, end)``; the last test window ends at or before ``end``.

    ``anchored`` keeps every train window starting at ``start`` (expanding window).
    Raises :class:`SplitError` when a length is not positive or not even one fold fits.
    """
    step = test if step is None else step
    if train <= 0 or test <= 0 or step <= 0:
        raise SplitError(f"train, test and step must be > 0, got {train}, {test}, {step}")
    if end - start < train + test:
        raise SplitError(
            f"walk_forward: train + test = {train + test}, but the data spans {end - start}",
            span=end - start,
            needed=train + test,
        )
    folds: list[Fold] = []
    offset = start
    while offset + train + test <= end:
        if max_folds is not None and len(folds) >= max_folds:
            break
        train_start = start if anchored else offset
        cut = offset + train
        folds.append(Fold(len(folds), Window(train_start, cut), Window(cut, cut + test)))
        offset += step
    return folds


def distinct_windows(folds: list[Fold]) -> list[Window]:
    """Every train and test window once, in start order (so each is backtested once)."""
    seen = {w for f in folds for w in (f.train, f.test)}
    return sorted(seen, key=lambda w: (w.start, w.end))
