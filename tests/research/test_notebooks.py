"""The research notebooks: committed with their outputs (every figure inline, so a reader
sees the plots without running anything), and each runs headless to the end."""

from __future__ import annotations

import base64
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


def images(book: nbformat.NotebookNode) -> list[bytes]:
    """The PNGs a notebook's outputs display inline."""
    return [
        base64.b64decode(o["data"]["image/png"])
        for c in book.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "data" in o and "image/png" in o["data"]
    ]


def errors(book: nbformat.NotebookNode) -> list[object]:
    return [
        o
        for c in book.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_outputs_show_every_figure(path: Path) -> None:
    """The committed notebook is a finished run: each figure it draws is in its saved
    outputs as an inline image, and no cell failed."""
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    shown = images(book)
    assert len(shown) >= max(1, len(FIGURES[path.stem])), f"{path.name}: {len(shown)} images"
    for png in shown:
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2_000
    assert not errors(book), f"{path.name}: a saved output is an error"
    assert "widgets" not in book.metadata


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_headless_and_draws(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("SAPPHIRE_NB_OUT", str(tmp_path))
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data_dir()))
    # the kernel's own backend (inline): figures land in the outputs, as in Jupyter
    monkeypatch.delenv("MPLBACKEND", raising=False)
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
    assert not errors(book)
    assert len(images(book)) >= len(FIGURES[path.stem]), "figures not shown inline"
    print(f"{path.name}: {elapsed:.1f} s")
