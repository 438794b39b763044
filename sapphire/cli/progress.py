"""What a run says before and while it runs: the start-up line and the progress bar's total."""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO, cast

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sapphire.config.system import SystemConfig
from sapphire.model.instrument import Instrument
from sapphire.risk.portfolio import reporting_asset

# Counting lines reads every byte (decompressed, never parsed): quick for recordings up to a
# few hundred MB, so bigger data starts at once and shows a bar without a total instead.
_COUNT_LIMIT_BYTES = 256 * 1024 * 1024

# each returns a file the caller closes (its ``with``)
_OPENERS: dict[str, Callable[[Path], BinaryIO]] = {
    ".gz": lambda p: cast(BinaryIO, gzip.open(p, "rb")),  # noqa: SIM115
    ".bz2": lambda p: cast(BinaryIO, bz2.open(p, "rb")),  # noqa: SIM115
    ".xz": lambda p: cast(BinaryIO, lzma.open(p, "rb")),  # noqa: SIM115
    ".csv": lambda p: open(p, "rb"),  # noqa: SIM115
}


def _rows(path: Path) -> int | None:
    """Data rows of one recording (lines less the header, or Parquet's row count)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    opener = _OPENERS.get(path.suffix)
    if opener is None or (path.suffix == ".gz" and Path(path.stem).suffix not in (".csv", "")):
        return None  # raw feed logs: a line holds many events
    lines = 0
    with opener(path) as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    return max(lines - 1, 0)


def estimate_events(files: list[Path], max_events: int | None) -> int | None:
    """The bar's total: ``data.max_events``, else the recordings' row count (one event per
    row for the tabular formats), else None (the bar then shows no total)."""
    if not files:
        return max_events
    try:
        if sum(p.stat().st_size for p in files) > _COUNT_LIMIT_BYTES:
            return max_events
        counts = [_rows(p) for p in files]
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
        # a cut or damaged file: the bar shows no total, and the run itself says what the
        # file holds (its rows up to the cut, the cut counted as malformed)
        return max_events
    if any(n is None for n in counts):
        return max_events
    total = sum(n for n in counts if n is not None)
    return min(total, max_events) if max_events else total


def bar_columns(label: str, total: int | None) -> list[ProgressColumn]:
    columns: list[ProgressColumn] = [TextColumn(f"[bold]{label}"), BarColumn()]
    if total:
        columns += [MofNCompleteColumn(), TextColumn("events (~) ·")]
    else:
        columns += [TextColumn("{task.completed:,.0f} events ·")]
    columns += [TextColumn("{task.fields[fills]} fills"), TimeElapsedColumn()]
    if total:
        columns.append(TimeRemainingColumn())
    return columns


def startup_line(
    runner: str,
    run_id: str,
    config: SystemConfig,
    store: str,
    files: list[Path],
    total: int | None,
    instruments: Mapping[str, Instrument] | None = None,
) -> str:
    """One line before the bar: what runs, on what, where it is stored, and the asset its
    capital and money limits are read in. That asset is the firm's currency, chosen from
    the instruments' settlement assets: an added USDC-settled perp beside BTC-settled ones
    turned "capital_quote: 1" from 1 BTC into 1 USDC, and nothing said so; the config's
    ``currency`` names it, and the line says which of the two chose it."""
    agents = ", ".join(f"{a.id} ({a.kind} {a.symbol})" for a in config.agents) or "no agents"
    source: str = config.data.source
    if files:
        source += f", {len(files)} file{'s' if len(files) != 1 else ''}"
    if total:
        source += f", ~{total:,} events"
    venue = config.exchange.kind + (
        f" ({config.exchange.factory})" if config.exchange.factory else ""
    )
    exchange = config.exchange
    if exchange.kind == "paper" and not exchange.factory and not exchange.params.get("balances"):
        # the paper account then holds nothing: every order that needs cash or margin is
        # refused (insufficient_balance), which read as agents that never traded
        venue += " with no balances (set exchange.params.balances to fund its account)"
    capital = ""
    if instruments:
        currency = reporting_asset(instruments, config.currency)
        settles = sorted({i.settle_asset for i in instruments.values()})
        capital = f"; capital {config.capital_quote} {currency}"
        if len(settles) > 1:
            chosen = (
                "as currency names it"
                if config.currency
                else "chosen from the instruments: set currency to name it"
            )
            capital += f" (the firm's currency, {chosen}; settled in {', '.join(settles)})"
    return f"{runner} {run_id}: {agents}; data {source}; venue {venue}{capital}; store {store}"
