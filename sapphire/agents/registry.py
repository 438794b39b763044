"""Build agents by kind name, from plain config dicts (YAML, JSON, the CLI).

Kinds: ``momentum``, ``mean_reversion``, ``avellaneda_stoikov``, ``basis`` (two legs: it
gets the run's instruments), ``indicator:<Name>`` (a
built-in strategy class name or ``package.module:Class``), and ``llm`` once
``sapphire.agents.llm`` provides ``build_llm_agent(agent_id, instrument, params)``.
Other kinds can be added with :func:`register_kind`, or named as ``package.module:Factory``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from sapphire.agents.avellaneda_stoikov import AvellanedaStoikovAgent
from sapphire.agents.base import Agent, AgentConfigError
from sapphire.agents.basis import BasisAgent
from sapphire.agents.grid_maker import GridMakerAgent
from sapphire.agents.mean_reversion import MeanReversionAgent
from sapphire.agents.momentum import MomentumAgent
from sapphire.model.instrument import Instrument

Factory = Callable[[str, Instrument, dict[str, Any]], Agent]
# kinds that trade more than their own symbol also get the run's instruments by symbol
LegsFactory = Callable[[str, Instrument, dict[str, Any], Mapping[str, Instrument]], Agent]
_MULTI_LEG: dict[str, LegsFactory] = {"basis": BasisAgent}


def _llm(agent_id: str, instrument: Instrument, params: dict[str, Any]) -> Agent:
    try:
        module = importlib.import_module("sapphire.agents.llm")
    except ModuleNotFoundError as exc:
        raise AgentConfigError("agent kind 'llm' is not available: sapphire.agents.llm") from exc
    factory: Factory = module.build_llm_agent
    return factory(agent_id, instrument, params)


_KINDS: dict[str, Factory] = {
    "momentum": MomentumAgent,
    "mean_reversion": MeanReversionAgent,
    "avellaneda_stoikov": AvellanedaStoikovAgent,
    "grid_maker": GridMakerAgent,
    "llm": _llm,
}


def register_kind(kind: str, factory: Factory) -> None:
    if kind in _KINDS or kind in _MULTI_LEG or kind.startswith("indicator"):
        raise AgentConfigError(f"agent kind {kind!r} is already registered")
    _KINDS[kind] = factory


def kinds() -> list[str]:
    return [*sorted([*_KINDS, *_MULTI_LEG]), "indicator:<Strategy>"]


def _import_factory(path: str) -> Factory:
    """``package.module:Factory`` for agents that live outside Sapphire."""
    module_name, _, attr = path.partition(":")
    try:
        factory: Factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise AgentConfigError(f"cannot import agent kind {path!r}: {exc}") from exc
    return factory


# ``indicator:Strategy`` names a bar strategy, never a module ``indicator``'s factory
INDICATOR_PREFIX = "indicator:"


def build_agent(
    kind: str,
    agent_id: str,
    instrument: Instrument,
    params: dict[str, object],
    legs: Mapping[str, Instrument] | None = None,
) -> Agent:
    """One agent of ``kind``; raises :class:`AgentConfigError` with the reason on bad input.
    ``legs``: the run's instruments by symbol, for kinds that trade several (``basis``)."""
    if kind in _MULTI_LEG:
        return _MULTI_LEG[kind](agent_id, instrument, dict(params), legs or {})
    if kind.startswith(INDICATOR_PREFIX):
        strategy = kind.split(":", 1)[1]
        if not strategy:
            raise AgentConfigError("indicator kind needs a strategy: 'indicator:EmaCross'")
        # imported here: it brings polars, which no other kind needs (an agent actor's start)
        from sapphire.agents.indicator_agent import IndicatorAgent

        return IndicatorAgent(agent_id, instrument, {"strategy": strategy, **params})
    factory = _KINDS.get(kind)
    if factory is None and ":" in kind:
        factory = _import_factory(kind)
    if factory is None:
        raise AgentConfigError(f"unknown agent kind {kind!r}; known: {', '.join(kinds())}")
    return factory(agent_id, instrument, dict(params))
