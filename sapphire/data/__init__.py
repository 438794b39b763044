"""Market-data loading: canonical polars frames, validated typed-event streams, replay.

Entry points::

    load_frames(path) / load_frame(path, kind=None)    # canonical frames (schemas.py)
    stream_events(path, instrument=None)                # lazy validated events + RejectStats
    merge(streams, key="ts_event_ns"), pace(...)        # time-ordered replay by session
    load_depth_frame(path) + with_ticks(frame, inst)    # fast numpy-ready depth columns
    sample_paths(), sample_instrument()                 # bundled 90 s USDT-M BTCUSDT slice
"""

from sapphire.data.hftbacktest import load_bbo_frame, load_depth_frame, load_trades_frame
from sapphire.data.instruments import (
    infer_frame_instrument,
    known_instrument,
    load_exchange_info,
    load_instrument_file,
    with_ticks,
)
from sapphire.data.registry import detect, load_frame, load_frames, stream_events
from sapphire.data.replay import Replayed, by_session, merge, pace
from sapphire.data.sample import sample_instrument, sample_paths
from sapphire.data.schemas import SCHEMAS, FrameKind
from sapphire.data.stream import EventStream
from sapphire.data.validation import DataFileError, RejectStats, RowReject

__all__ = [
    "SCHEMAS",
    "DataFileError",
    "EventStream",
    "FrameKind",
    "RejectStats",
    "Replayed",
    "RowReject",
    "by_session",
    "detect",
    "infer_frame_instrument",
    "known_instrument",
    "load_bbo_frame",
    "load_depth_frame",
    "load_exchange_info",
    "load_frame",
    "load_frames",
    "load_instrument_file",
    "load_trades_frame",
    "merge",
    "pace",
    "sample_instrument",
    "sample_paths",
    "stream_events",
    "with_ticks",
]
