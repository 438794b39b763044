"""Prompts built from computed numbers only, formatted deterministically, and their cache key.

No free text from the market, an exchange or a previous model answer ever reaches a prompt:
every field is a number formatted with a fixed precision, plus a symbol that must match a
strict pattern. That closes the prompt-injection route and makes equal features give equal
prompts (hence cache hits) byte for byte.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Annotated, Any

import msgspec

from sapphire.llm.pit import check_as_of

_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$")

SYSTEM_PROMPT = (
    "You are a cautious crypto trading assistant. Read the market features and answer with "
    "one JSON object: action (buy, sell or hold), size_fraction (0 to 1, share of the "
    "maximum order), confidence (0 to 1) and a short rationale (under 15 words). "
    "Prefer hold when signals disagree."
)


class MarketFeatures(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Numeric features of one market at one event time (floats: the research edge)."""

    symbol: str
    ts_event_ns: int
    mid: float
    spread_bps: float
    returns_bps: tuple[tuple[int, float], ...] = ()
    """``(window_seconds, return in bps)`` pairs, shortest window first."""
    volatility_bps: float = 0.0
    imbalance: float = 0.0
    """Top-of-book size imbalance in [-1, 1]; + means more bid size."""
    position_lots: int = 0
    max_position_lots: int = 0
    pnl_quote: float = 0.0
    as_of_ns: tuple[tuple[str, int], ...] = ()
    """``(feature name, ns)``: when each feature's newest input was known. A feature known
    only after ``ts_event_ns`` (the decision time) is future data: :func:`build_prompt`
    refuses it. Features not listed count as known at ``ts_event_ns``."""


class SamplingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Generation settings; part of the cache key."""

    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] = 0.0
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0
    max_tokens: Annotated[int, msgspec.Meta(ge=8, le=512)] = 96
    seed: int = 0


class DecisionPrompt(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A chat prompt: one system and one user message."""

    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user},
        ]


class PromptError(ValueError):
    """Features that cannot be turned into a safe prompt."""


def _num(value: float, decimals: int) -> str:
    if not math.isfinite(value):
        return "na"
    text = f"{value:.{decimals}f}"
    # "-0.00" and "0.00" must format the same or equal states would miss the cache.
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def safe_symbol(symbol: str) -> str:
    if not _SYMBOL_RE.fullmatch(symbol):
        raise PromptError(f"symbol {symbol!r} is not a plain market symbol")
    return symbol


def build_prompt(features: MarketFeatures, system: str = SYSTEM_PROMPT) -> DecisionPrompt:
    """Format ``features`` into a compact prompt. Raises :class:`PromptError` on a bad symbol
    and :class:`sapphire.llm.pit.LookaheadError` on a feature known after the decision time."""
    symbol = safe_symbol(features.symbol)
    check_as_of(features.ts_event_ns, features.as_of_ns)
    # Slow-moving fields first, the mid last: consecutive prompts then share a long token
    # prefix, which the llama.cpp engine keeps in its KV cache instead of evaluating again.
    lines = [
        f"market {symbol}",
        f"position_lots {int(features.position_lots)} of max {int(features.max_position_lots)}",
        f"pnl_quote {_num(features.pnl_quote, 2)}",
        f"spread_bps {_num(features.spread_bps, 2)}",
        f"volatility_bps {_num(features.volatility_bps, 1)}",
        f"book_imbalance {_num(features.imbalance, 2)}",
    ]
    for window_s, ret in reversed(features.returns_bps):
        lines.append(f"return_{int(window_s)}s_bps {_num(ret, 1)}")
    lines += [f"mid {_num(features.mid, 2)}", "Decide now. Answer with JSON only."]
    return DecisionPrompt(system=system, user="\n".join(lines))


def cache_key(
    model: str, prompt: DecisionPrompt, sampling: SamplingConfig, engine: str = ""
) -> str:
    """Stable hex digest of everything that determines a (greedy) generation; ``engine`` is
    the engine's settings (:func:`sapphire.llm.engines.engine_fingerprint`)."""
    payload: dict[str, Any] = {
        "model": model,
        "engine": engine,
        "system": prompt.system,
        "user": prompt.user,
        "sampling": msgspec.to_builtins(sampling),
    }
    blob = msgspec.json.encode(payload, order="sorted")
    return hashlib.sha256(blob).hexdigest()
