"""What the actors unpickle to build their agents and their venue: the builders the wiring
(``sapphire.kernel.assembly``) makes, apart from the rest of it.

Why a module of its own: an actor that unpickles a builder imports the builder's module. The
replay's wiring beside them brought polars, pyarrow and numpy into every agent and venue
actor, about a third of a second of CPU at each start (and each restart) that neither uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import msgspec

from sapphire.agents.base import Agent, AgentConfigError
from sapphire.agents.registry import build_agent
from sapphire.config.system import AgentSpec, ExchangeConfig, SystemConfig
from sapphire.exchange.config import PaperExchangeConfig
from sapphire.exchange.gateway import ExecutionGateway
from sapphire.exchange.paper import PaperExchange
from sapphire.model.instrument import Instrument


class WiringError(ValueError):
    """A config that names things that do not fit together."""


def _build_agent(
    spec: AgentSpec, instrument: Instrument, legs: Mapping[str, Instrument] | None = None
) -> Agent:
    return build_agent(spec.kind, spec.id, instrument, dict(spec.params), legs)


class AgentBuilder(msgspec.Struct, frozen=True):
    """Builds one agent: ``builder()`` on the instrument the driver loaded, or
    ``builder(spec)`` on a copy of it read elsewhere (the Ray agent actor reads it through its
    cache hierarchy, with this one as the source). Picklable, so Ray re-runs it on a restart.
    ``legs``: the run's instruments, for agents that trade more than their own symbol (a
    basis agent's hedge leg)."""

    spec: AgentSpec
    instrument: Instrument
    legs: dict[str, Instrument] = msgspec.field(default_factory=dict)

    def __call__(self, instrument: Instrument | None = None) -> Agent:
        if instrument is not None and instrument != self.instrument:
            # a cache must never change what an agent decides: only an equal spec is accepted
            raise WiringError(
                f"agent {self.spec.id}: instrument {instrument.symbol!r} differs from the one "
                "the run loaded"
            )
        return _build_agent(
            self.spec, self.instrument if instrument is None else instrument, self.legs
        )


def checked_build(spec: AgentSpec, instrument: Instrument, legs: Mapping[str, Instrument]) -> Agent:
    try:
        return _build_agent(spec, instrument, legs)
    except AgentConfigError as exc:
        raise WiringError(f"agent {spec.id}: {exc}") from None
    except Exception as exc:  # a user's agent class that fails to build: one line, not a trace
        raise WiringError(f"agent {spec.id}: {type(exc).__name__}: {exc}") from None


def agent_builder(
    spec: AgentSpec,
    instrument: Instrument,
    instruments: Mapping[str, Instrument] | None = None,
    *,
    checked: bool = False,
) -> AgentBuilder:
    """``checked``: :func:`check_agents` built this agent on these legs already (an
    agent's build can be costly, a user's class or a model client: once at start-up)."""
    legs = dict(instruments or {})
    if not checked:
        checked_build(spec, instrument, legs)  # fail fast on a bad config, before any actor
    return AgentBuilder(spec, instrument, legs)


def asks_model(agent: object) -> bool:
    """Whether ``agent`` asks a language model: it queues decision requests for its runner
    to send (``drain_requests``). Read from what the agent is, never from its kind's name:
    an LLM agent named by its factory path (``sapphire.agents.llm:build_llm_agent``) ran on
    Ray with no model behind it, every decision a silent fallback. Every runner asks this."""
    return callable(getattr(agent, "drain_requests", None))


def agent_leaves(config: SystemConfig) -> dict[str, tuple[str, ...]]:
    """The agent actors of a run: actor name (without the run id) -> the agents it hosts,
    in config order (``AgentSpec.host``)."""
    leaves: dict[str, list[str]] = {}
    for spec in config.agents:
        leaves.setdefault(spec.leaf, []).append(spec.id)
    return {leaf: tuple(ids) for leaf, ids in leaves.items()}


def import_object(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise WiringError(f"cannot import {path!r} (want 'package.module:name'): {exc}") from None


def build_paper(config: PaperExchangeConfig) -> ExecutionGateway:
    return PaperExchange(config)


def build_factory(
    path: str, exchange: ExchangeConfig, instruments: dict[str, Instrument]
) -> ExecutionGateway:
    """A venue from ``exchange.factory``: a factory that refuses its arguments (another
    signature, bad params) is one line naming it, not a traceback."""
    try:
        gateway: ExecutionGateway = import_object(path)(exchange, instruments)
    except (TypeError, ValueError, KeyError) as exc:
        raise WiringError(f"exchange.factory {path}: {type(exc).__name__}: {exc}") from None
    return gateway
