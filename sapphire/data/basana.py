"""basana's single Binance ``depthUpdate`` JSON fixture -> DEPTH_SCHEMA rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from sapphire.data.binance_json import RowBuffer
from sapphire.data.schemas import SCHEMAS, FrameKind
from sapphire.data.stream import Chunk, EventStream, Instruments
from sapphire.data.validation import DataFileError, RejectStats


def _message(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{path}: cannot read JSON: {exc}") from exc


def _depth(path: Path, msg: Any, stats: RejectStats) -> pl.DataFrame:
    """The message's DEPTH rows (with ``line``); a message with a level that does not parse
    is refused whole, its levels counted in ``stats`` (no rows then)."""
    buffer = RowBuffer(stats)
    rejected = stats.rejected
    buffer.message(msg, 0, "", "", 1)
    for kind, frame in buffer.take():
        if kind is FrameKind.DEPTH:
            return frame
    if stats.rejected > rejected:
        return pl.DataFrame(schema={**SCHEMAS[FrameKind.DEPTH], "line": pl.Int64()})
    raise DataFileError(f"{path}: no depth levels in the message")


def load_depth_json(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    return _depth(path, _message(path), RejectStats(source=str(path))).drop("line")


def stream_depth_json(path: str | Path, instrument: Instruments) -> EventStream:
    """Validated events; the stream's stats count the levels that did not even parse."""
    path = Path(path)
    msg = _message(path)
    _depth(path, msg, RejectStats())  # a file without a depth level is refused here, not mid-stream

    def chunks(stats: RejectStats) -> Iterator[Chunk]:
        yield [(FrameKind.DEPTH, _depth(path, msg, stats))]

    return EventStream(path, "basana_depth_json", (FrameKind.DEPTH,), instrument, chunks)
