"""Shards: the venue and agents stages split by symbol group (``SystemConfig.shards``).

A shard is a group of symbols with a venue account of its own and the agents of those
symbols. A kernel step runs every shard's venue and agents on that shard's events and
commands only; the coordinator stage (risk, capital, daily loss, kill switch, the journal)
stays one, over every shard, so firm-wide limits are exact whatever the split. The venues'
reports are merged in shard order and the agents' outputs in config order, by the same
functions in every runner, so a sharded config trades the same in one process and on Ray
(where each shard's stages are actors of their own, on the nodes their resources name).

One shard (the default) is the unsplit kernel: events and commands pass through untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from sapphire.config.system import SystemConfig
from sapphire.kernel.venue import Command
from sapphire.model.events import AnyMarketEvent

T = TypeVar("T")


class ShardError(ValueError):
    """A shard layout that cannot run (the message names the field)."""


class Shards:
    """Which shard each symbol and agent belongs to, and the split of a step's inputs."""

    def __init__(self, groups: Sequence[Sequence[str]], agent_shard: Mapping[str, int]) -> None:
        self.groups = [tuple(g) for g in groups]
        self.count = len(self.groups)
        self.shard_of = {s: k for k, group in enumerate(self.groups) for s in group}
        self.agent_shard = dict(agent_shard)

    def legs(self, agent_id: str, instruments: Mapping[str, T]) -> dict[str, T]:
        """The instruments agent ``agent_id`` may trade: its shard's (a hedge leg in
        another shard would never see a quote, and its agent would never trade)."""
        group = self.groups[self.agent_shard[agent_id]] if self.count > 1 else instruments
        return {s: instruments[s] for s in group if s in instruments}

    def events(self, events: Sequence[AnyMarketEvent]) -> list[Sequence[AnyMarketEvent]]:
        """Each shard's events, in their order (an unknown symbol's: no shard's)."""
        if self.count == 1:
            return [events]
        get = self.shard_of.get
        out: list[list[AnyMarketEvent]] = [[] for _ in range(self.count)]
        for event in events:
            shard = get(event.symbol)
            if shard is not None:
                out[shard].append(event)
        return list(out)

    def commands(self, commands: Sequence[Command]) -> list[Sequence[Command]]:
        """Each shard's venue commands. A symbol of no shard goes to shard 0, whose venue
        rejects it as unknown (risk refuses such orders before, so this is a guard only)."""
        if self.count == 1:
            return [commands]
        get = self.shard_of.get
        out: list[list[Command]] = [[] for _ in range(self.count)]
        for command in commands:
            out[get(command.symbol, 0)].append(command)
        return list(out)


def merge_counts(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Several shards' (or readers') counts by name as one, each name's added up."""
    out: dict[str, int] = {}
    for part in parts:
        for key, n in part.items():
            out[key] = out.get(key, 0) + int(n)
    return out


def merge_reports(per_shard: Sequence[Sequence[T]]) -> list[T]:
    """The venues' reports of one step, shard after shard (every runner merges this way)."""
    if len(per_shard) == 1:
        return list(per_shard[0])
    return [r for reports in per_shard for r in reports]


def merge_outputs(
    per_shard: Sequence[Mapping[str, list[T]]], agent_order: Sequence[str]
) -> dict[str, list[T]]:
    """The agents' outputs of one step, in config order (every runner merges this way)."""
    if len(per_shard) == 1:
        return dict(per_shard[0])
    merged: dict[str, list[T]] = {}
    for outputs in per_shard:
        merged.update(outputs)
    return {a: merged[a] for a in agent_order if a in merged}


def shards_of(config: SystemConfig, symbols: Sequence[str]) -> Shards:
    """The run's shards over the data's ``symbols``, checked: every symbol in one shard, and
    agents sharing a host in the same shard. No shards configured: one shard of them all."""
    agents = {a.id: a for a in config.agents}
    if not config.shards:
        return Shards([tuple(symbols)], {a: 0 for a in agents})
    shards = Shards([s.symbols for s in config.shards], {})
    unknown = sorted(set(shards.shard_of) - set(symbols))
    if unknown:
        raise ShardError(f"shards: symbols not in the data's instruments: {unknown}")
    missing = sorted(set(symbols) - set(shards.shard_of))
    if missing:
        raise ShardError(f"shards: every symbol of the data in one shard; missing: {missing}")
    host_shard: dict[str, int] = {}
    for spec in config.agents:
        shard = shards.shard_of.get(spec.symbol)
        if shard is None:
            raise ShardError(f"agent {spec.id}: symbol {spec.symbol!r} is in no shard")
        if host_shard.setdefault(spec.leaf, shard) != shard:
            raise ShardError(
                f"agent {spec.id}: host {spec.host!r} holds agents of two shards; "
                "an actor runs in one shard"
            )
        shards.agent_shard[spec.id] = shard
    return shards
