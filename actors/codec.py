"""Batches cross actor boundaries as msgpack bytes: one buffer per batch instead of
thousands of pickled objects (measured in benchmarks/coordinator_throughput.py)."""

from __future__ import annotations

from typing import Any

import msgspec

from sapphire.model.events import AnyMarketEvent
from sapphire.model.orders import (
    CancelIntent,
    CancelOrder,
    OrderFilled,
    OrderIntent,
    OrderUpdate,
    Signal,
    SubmitOrder,
)

# Only market events are natively tagged; trading messages travel as (kind, payload) pairs.
_KINDS: dict[str, type] = {
    "intent": OrderIntent,
    "cancel_intent": CancelIntent,
    "signal": Signal,
    "submit": SubmitOrder,
    "cancel": CancelOrder,
    "update": OrderUpdate,
    "fill": OrderFilled,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}

_encoder = msgspec.msgpack.Encoder(decimal_format="string")
_events_decoder = msgspec.msgpack.Decoder(list[AnyMarketEvent])
_pairs_decoder = msgspec.msgpack.Decoder(list[tuple[str, Any]])


def encode_events(events: list[AnyMarketEvent]) -> bytes:
    return _encoder.encode(events)


def decode_events(data: bytes) -> list[AnyMarketEvent]:
    return _events_decoder.decode(data)


def encode_messages(messages: list[Any]) -> bytes:
    return _encoder.encode([(_KIND_OF[type(m)], m) for m in messages])


def decode_messages(data: bytes) -> list[Any]:
    out: list[Any] = []
    for kind, payload in _pairs_decoder.decode(data):
        cls = _KINDS[kind]
        out.append(msgspec.convert(payload, cls))
    return out
