"""Paths of the bundled sample (90 s of Binance USDT-M BTCUSDT, 2024-08-08, with snapshot).

Built by ``scripts/make_sample.py``; MIT-licensed data from hftbacktest (see the folder's
LICENSE and ATTRIBUTION.md). Ships inside the package, so tests and demos run without
``../shared/data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sapphire.data.instruments import load_instrument_file
from sapphire.model import Instrument

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "samples" / "binance-usdm-btcusdt"


@dataclass(frozen=True, slots=True)
class SamplePaths:
    depth: Path
    trades: Path
    bbo: Path
    instrument: Path
    license: Path
    attribution: Path


def sample_paths() -> SamplePaths:
    base = SAMPLE_DIR / "hftbacktest_binance-usdm_BTCUSDT"
    return SamplePaths(
        depth=Path(f"{base}_depth.csv.gz"),
        trades=Path(f"{base}_trades.csv.gz"),
        bbo=Path(f"{base}_bbo.csv.gz"),
        instrument=SAMPLE_DIR / "instrument.json",
        license=SAMPLE_DIR / "LICENSE",
        attribution=SAMPLE_DIR / "ATTRIBUTION.md",
    )


def sample_instrument() -> Instrument:
    return load_instrument_file(sample_paths().instrument)


def event_files() -> list[Path]:
    """The sample's depth, trades and bbo files (for replay configs)."""
    paths = sample_paths()
    return [paths.depth, paths.trades, paths.bbo]


def instrument_file() -> Path:
    return sample_paths().instrument
