"""The LLM's answer: a small typed decision, its JSON schema, and a parser that never raises.

A language model is an untrusted producer. Whatever it returns is decoded against
:class:`LlmDecision`; anything that is not exactly a valid decision becomes :data:`HOLD` and
is counted in :class:`DecisionStats`, so a bad model can make the agent idle, never trade
something it did not mean.
"""

from __future__ import annotations

import enum
import json
import unicodedata
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

RATIONALE_MAX_CHARS = 200
MAX_OUTPUT_CHARS = 4096
"""Longer outputs are rejected before decoding: a 135M model looping must not cost a parse."""

Action = Literal["buy", "sell", "hold"]
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class LlmDecision(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the model decided. ``size_fraction`` is of the agent's own maximum order size."""

    action: Action
    size_fraction: Fraction
    confidence: Fraction
    rationale: Annotated[str, msgspec.Meta(max_length=RATIONALE_MAX_CHARS)]


HOLD = LlmDecision(action="hold", size_fraction=0.0, confidence=0.0, rationale="")
"""The decision every failure maps to."""


class ParseErrorKind(enum.StrEnum):
    MALFORMED_JSON = "malformed_json"
    SCHEMA_VIOLATION = "schema_violation"


class ParseResult(NamedTuple):
    """``(decision, ok, error)``; ``error`` starts with a :class:`ParseErrorKind` value."""

    decision: LlmDecision
    ok: bool
    error: str

    @property
    def kind(self) -> ParseErrorKind | None:
        if self.ok:
            return None
        head = self.error.split(":", 1)[0]
        return ParseErrorKind(head)


class DecisionStats(msgspec.Struct, kw_only=True):
    """Running counts of decision outcomes (mutable; snapshotted with its owner)."""

    ok: int = 0
    malformed_json: int = 0
    schema_violation: int = 0
    timeouts: int = 0
    late: int = 0
    """Answers that arrived after their request had expired (dropped)."""
    stale: int = 0
    """Answers that arrived in time but found no event of the symbol before their
    request's deadline (dropped: never traded on a book long gone)."""
    errors: int = 0
    """Transport or engine failures (the request got no model output)."""
    cache_hits: int = 0
    refused: int = 0
    """Requests never sent to the model: a feature from after the decision time, or an event
    before the model's knowledge cutoff under ``point_in_time: strict``."""

    def record(self, result: ParseResult) -> None:
        if result.ok:
            self.ok += 1
        elif result.kind is ParseErrorKind.MALFORMED_JSON:
            self.malformed_json += 1
        else:
            self.schema_violation += 1

    @property
    def total(self) -> int:
        return self.ok + self.malformed_json + self.schema_violation + self.timeouts + self.errors

    @property
    def malformed_rate(self) -> float:
        """Share of answered requests whose output was not valid JSON."""
        answered = self.ok + self.malformed_json + self.schema_violation
        return self.malformed_json / answered if answered else 0.0

    def merge(self, other: DecisionStats) -> None:
        for field in self.__struct_fields__:
            setattr(self, field, getattr(self, field) + getattr(other, field))


_DECODER = msgspec.json.Decoder(LlmDecision)


def decision_json_schema(rationale_max_chars: int = RATIONALE_MAX_CHARS) -> dict[str, Any]:
    """A flat JSON schema (no ``$ref``) for grammar-constrained decoding.

    Every property is required and listed in field order, so a constrained decoder always
    emits the same key order. ``rationale_max_chars`` may be set below the validation limit to
    keep generations short.
    """
    full = msgspec.json.schema(LlmDecision)
    body: dict[str, Any] = dict(full["$defs"]["LlmDecision"])
    body.pop("title", None)
    props = {name: dict(body["properties"][name]) for name in LlmDecision.__struct_fields__}
    props["action"] = {"type": "string", "enum": ["buy", "sell", "hold"]}
    props["rationale"]["maxLength"] = min(rationale_max_chars, RATIONALE_MAX_CHARS)
    body["properties"] = props
    body["required"] = list(LlmDecision.__struct_fields__)
    body["additionalProperties"] = False
    return body


def _strip_fences(text: str) -> str | None:
    """Small models often wrap JSON in a Markdown code fence; that alone is not malformed.
    None: text after the closing fence (it was dropped: "```{...buy...}``` no, sell")."""
    text = text.strip()
    if text.startswith("```"):
        text = text[3:]
        if text.lower().startswith("json"):
            text = text[4:]
        end = text.find("```")
        if end >= 0:
            if text[end + 3 :].strip():
                return None
            text = text[:end]
    return text.strip()


def _duplicate_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {key!r} given twice")
        seen[key] = value
    return seen


def _clean_rationale(text: str) -> str:
    # The rationale is only logged and stored; control and format characters (ANSI escapes,
    # bidi overrides) are dropped so it cannot corrupt logs or terminals.
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch == " ")


def parse_decision(text: object) -> ParseResult:
    """Decode a model output into a decision. Never raises; any failure is :data:`HOLD`."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            return ParseResult(HOLD, False, f"{ParseErrorKind.MALFORMED_JSON}: not utf-8 ({exc})")
    if not isinstance(text, str):
        kind = ParseErrorKind.MALFORMED_JSON
        return ParseResult(HOLD, False, f"{kind}: expected text, got {type(text).__name__}")
    if len(text) > MAX_OUTPUT_CHARS:
        kind = ParseErrorKind.MALFORMED_JSON
        return ParseResult(HOLD, False, f"{kind}: output of {len(text)} chars is too long")
    body = _strip_fences(text)
    if body is None:
        kind = ParseErrorKind.MALFORMED_JSON
        return ParseResult(HOLD, False, f"{kind}: text after the closing code fence")
    try:
        decision = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        # msgspec validates while it parses, so a truncated document can fail on a bad
        # value first; classify by whether the text is JSON at all.
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError as syntax:
            return ParseResult(HOLD, False, f"{ParseErrorKind.MALFORMED_JSON}: {syntax}")
        return ParseResult(HOLD, False, f"{ParseErrorKind.SCHEMA_VIOLATION}: {exc}")
    except msgspec.DecodeError as exc:
        return ParseResult(HOLD, False, f"{ParseErrorKind.MALFORMED_JSON}: {exc}")
    try:
        # JSON keeps the last of repeated keys: '{"action":"hold",...,"action":"buy",
        # "size_fraction":1}' was a full-size buy (where no grammar rules them out)
        json.loads(body, object_pairs_hook=_duplicate_key)
    except ValueError as exc:
        return ParseResult(HOLD, False, f"{ParseErrorKind.SCHEMA_VIOLATION}: {exc}")
    cleaned = _clean_rationale(decision.rationale)
    if cleaned != decision.rationale:
        decision = msgspec.structs.replace(decision, rationale=cleaned)
    return ParseResult(decision, True, "")
