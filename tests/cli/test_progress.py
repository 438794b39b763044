"""The progress bar's total: a damaged recording leaves it without one, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from sapphire.cli.progress import estimate_events
from sapphire.data.sample import sample_paths


@pytest.mark.parametrize("cap", [None, 500])
def test_a_cut_gzip_leaves_the_bar_without_a_total(tmp_path: Path, cap: int | None) -> None:
    whole = sample_paths().trades.read_bytes()
    cut = tmp_path / "trades.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])  # the run counts the cut as one malformed row
    assert estimate_events([cut], cap) == cap
    damaged = tmp_path / "t.parquet"
    damaged.write_bytes(b"PAR1 not parquet")
    assert estimate_events([damaged], cap) == cap
