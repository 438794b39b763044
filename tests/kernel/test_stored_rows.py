"""A backtest hands its rows to the store in groups and keeps in memory only what the store
has not committed yet: a long run holds about one group, not every row it made."""

from __future__ import annotations

from pathlib import Path

import pytest

import sapphire.kernel.runner as runner
from sapphire.kernel.coordinator import CoordinatorStep
from sapphire.kernel.runner import InProcessKernel
from sapphire.storage.parquet_backend import ParquetBackend
from sapphire.storage.query import read_table
from sapphire.storage.sink import StorageSink
from tests.kernel.conftest import kernel_config


def test_committed_rows_leave_memory_during_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "TAKE_ROWS", 200)  # groups of ~200 rows, a commit every 400
    config = kernel_config(tmp_path)
    kernel = InProcessKernel(config, "mem")
    store = tmp_path / "store"
    sink = StorageSink(ParquetBackend(store, sink_id="mem"), batch_size=400)
    held: list[int] = []

    def on_step(_: CoordinatorStep) -> None:
        held.append(kernel.coordinator.rows.unacked_count())

    assert kernel.run_stored(sink, on_step) == 0
    made = sum(kernel.coordinator.rows.counts().values())
    assert made > 5_000  # ticks, orders, fills...: many groups
    assert max(held) < 1_200, max(held)  # never more than a couple of groups held
    stored = sum(read_table(store, t, "mem").collect().height for t in ("ticks", "orders"))
    assert stored == sum(kernel.coordinator.rows.counts()[t] for t in ("ticks", "orders"))
