"""A Serve deployment handle that answers with scripted replies, for the decision client's
own logic (cache, sharing, metering) without a model: what ``handle.remote(prompt)`` and
``handle.describe.remote()`` of the LLM app return, awaited as Serve's responses are."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

# what the app's ``describe`` says about its model (no knowledge cutoff: nothing flagged)
IDENTITY: dict[str, Any] = {
    "model": "scripted",
    "sampling": {},
    "knowledge_cutoff": "",
    "point_in_time": "warn",
}


class _Response:
    """Awaitable and cancellable, as a ``DeploymentResponse``."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self.cancelled = False

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    def cancel(self) -> None:
        self.cancelled = True


class _Describe:
    def remote(self) -> _Response:
        async def answer() -> dict[str, Any]:
            return dict(IDENTITY)

        return _Response(answer())


class ScriptedHandle:
    """Every call waits ``delay_s`` and returns ``reply`` (the app's reply mapping: the
    model's text and its metering); ``calls`` counts the model calls made."""

    def __init__(self, reply: dict[str, Any], delay_s: float = 0.0) -> None:
        self.reply = reply
        self.delay_s = delay_s
        self.calls = 0
        self.describe = _Describe()

    def remote(self, prompt: Any) -> _Response:
        async def answer() -> dict[str, Any]:
            self.calls += 1
            await asyncio.sleep(self.delay_s)
            return dict(self.reply)

        return _Response(answer())


BUY = '{"action": "buy", "size_fraction": 1.0, "confidence": 0.9, "rationale": "up"}'


def reply(text: str = BUY, **meter: Any) -> dict[str, Any]:
    """An app reply: ``text`` with one call's metering (120 + 48 tokens, 1.3 CPU s)."""
    return {
        "text": text,
        "model": "scripted",
        "prompt_tokens": 120,
        "completion_tokens": 48,
        "batch_size": 1,
        "cpu_s": 1.3,
        "cost": "0.0005",
        "cost_currency": "USD",
        **meter,
    }
