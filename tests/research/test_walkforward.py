from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.research.walkforward import SplitError, distinct_windows, walk_forward_splits


@given(
    start=st.integers(-1000, 1000),
    span=st.integers(2, 5000),
    train=st.integers(1, 800),
    test=st.integers(1, 400),
    step=st.one_of(st.none(), st.integers(1, 400)),
    anchored=st.booleans(),
)
def test_folds_never_leak_and_stay_inside(
    start: int, span: int, train: int, test: int, step: int | None, anchored: bool
) -> None:
    end = start + span
    if span < train + test:
        with pytest.raises(SplitError):
            walk_forward_splits(start, end, train, test, step, anchored=anchored)
        return
    folds = walk_forward_splits(start, end, train, test, step, anchored=anchored)
    assert folds, "at least one fold fits"
    for i, fold in enumerate(folds):
        assert fold.index == i
        assert fold.train.end == fold.test.start  # test follows train, no overlap, no gap
        assert start <= fold.train.start < fold.train.end <= fold.test.end <= end
        assert fold.test.length == test
        assert fold.train.length == (fold.train.end - start if anchored else train)
    starts = [f.test.start for f in folds]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # One more step would not fit: the splits use the span.
    assert folds[-1].test.end + (step or test) > end


def test_rolling_tiles_test_windows() -> None:
    folds = walk_forward_splits(0, 100, 40, 20)
    assert [(f.train.start, f.test.start, f.test.end) for f in folds] == [
        (0, 40, 60),
        (20, 60, 80),
        (40, 80, 100),
    ]
    windows = distinct_windows(folds)
    assert len(windows) == 6 - 0  # train and test windows are all distinct here
    assert walk_forward_splits(0, 100, 40, 20, max_folds=2)[-1].index == 1


def test_bad_lengths_are_rejected() -> None:
    with pytest.raises(SplitError, match="must be > 0"):
        walk_forward_splits(0, 10, 0, 5)
    with pytest.raises(
        SplitError, match=r"^walk_forward: train \+ test = 13, but the data spans 10$"
    ):
        walk_forward_splits(0, 10, 8, 5)


def test_too_short_data_is_said_in_the_configs_unit() -> None:
    # "span 184991000001 is shorter than one train + test window (600000000000 +
    # 300000000000)": nanoseconds, for a config written in seconds, and no field named
    with pytest.raises(SplitError) as info:
        walk_forward_splits(0, 184_991_000_001, 600_000_000_000, 300_000_000_000)
    assert info.value.in_units(1e9, "s") == (
        "walk_forward: train + test = 900 s, but the data spans 185 s"
    )
    # as few decimals as tell the two apart: never "900 s, but the data spans 900 s"
    with pytest.raises(SplitError) as info:
        walk_forward_splits(0, 899_960_000_000, 600_000_000_000, 300_000_000_000)
    assert info.value.in_units(1e9, "s") == (
        "walk_forward: train + test = 900 s, but the data spans 899.96 s"
    )
    assert SplitError("x").in_units(1e9, "s") == "x"  # no lengths: the message as it was
