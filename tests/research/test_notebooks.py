"""The research notebooks: committed without outputs, and each runs headless to the end."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest

from tests.conftest import REPO_ROOT, shared_data_dir

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
# Figures each notebook must write (into $SAPPHIRE_NB_OUT).
FIGURES = {
    "01_microstructure": ["nb1_spread", "nb1_depth", "nb1_trade_flow", "nb1_volatility"],
    "02_agents_compared": ["nb2_equity_drawdown_inventory", "nb2_fills"],
    "03_tune_avellaneda_stoikov": ["nb3_heatmap", "nb3_in_vs_out_of_sample"],
    "04_multi_agent_system": ["nb4_order_flow", "nb4_pnl_latency"],
}


def test_every_notebook_is_listed() -> None:
    assert [p.stem for p in NOTEBOOKS] == sorted(FIGURES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs"
            assert cell.execution_count is None, f"{path.name}: a code cell has a count"
    assert "widgets" not in book.metadata


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_headless_and_draws(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("SAPPHIRE_NB_OUT", str(tmp_path))
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data_dir()))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(
        book,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    client.execute(env=dict(os.environ))
    elapsed = time.perf_counter() - started
    for name in FIGURES[path.stem]:
        png = tmp_path / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 2_000, f"{name}.png missing or empty"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    errors = [
        o
        for c in book.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors
    print(f"{path.name}: {elapsed:.1f} s")
