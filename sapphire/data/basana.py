"""basana's single Binance ``depthUpdate`` JSON fixture -> DEPTH_SCHEMA rows."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from sapphire.data.binance_json import RowBuffer
from sapphire.data.schemas import FrameKind
from sapphire.data.validation import DataFileError, RejectStats


def load_depth_json(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    try:
        msg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{path}: cannot read JSON: {exc}") from exc
    buffer = RowBuffer(RejectStats(source=str(path)))
    buffer.message(msg, 0, "", "", 1)
    for kind, frame in buffer.take():
        if kind is FrameKind.DEPTH:
            return frame.drop("line")
    raise DataFileError(f"{path}: no depth levels in the message")
