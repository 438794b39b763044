"""Batches cross actor boundaries as msgpack bytes: one buffer per batch instead of
thousands of pickled objects, decoded in one pass through msgspec tagged unions
(measured in benchmarks/coordinator_throughput.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from sapphire.model.events import AnyMarketEvent
from sapphire.model.orders import (
    AmendOrder,
    CancelIntent,
    CancelOrder,
    OrderDenied,
    OrderFilled,
    OrderIntent,
    OrderUpdate,
    Position,
    Signal,
    SubmitOrder,
    VenueAlert,
)

TradingMessage = (
    OrderIntent
    | CancelIntent
    | Signal
    | SubmitOrder
    | CancelOrder
    | AmendOrder
    | OrderUpdate
    | OrderFilled
    | OrderDenied
    | Position
    | VenueAlert
)

_encoder = msgspec.msgpack.Encoder(decimal_format="string")
_events_decoder = msgspec.msgpack.Decoder(list[AnyMarketEvent])
_messages_decoder = msgspec.msgpack.Decoder(list[TradingMessage])


def encode_events(events: Sequence[AnyMarketEvent]) -> bytes:
    return _encoder.encode(events)


def decode_events(data: bytes) -> list[AnyMarketEvent]:
    return _events_decoder.decode(data)


def encode_messages(messages: Sequence[Any]) -> bytes:
    return _encoder.encode(messages)


def decode_messages(data: bytes) -> list[Any]:
    return _messages_decoder.decode(data)
