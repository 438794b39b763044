"""From config to the objects each actor wraps. The pure parts (instruments, replay, agents,
paper venue, timing) are ``sapphire.kernel.assembly``, shared with the in-process runner;
this module adds the edges only the Ray system has: the live feed, ccxt and the store."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec

from actors.live_execution import build_ccxt
from sapphire.adapters.stores import backend_builder
from sapphire.config.system import DataConfig, ExchangeConfig
from sapphire.exchange.gateway import ExecutionGateway
from sapphire.kernel.assembly import (
    ReplayFeed,
    build_core,
    check_agents,
    claim_run,
    data_files,
    load_instruments,
    market_data_kind,
    merge_fixed,
    merge_groups,
    paper_gateway_builder,
    replay_opener,
    run_folder,
    session_gaps,
    shards,
    source_shards,
    sources_opener,
    storage_root,
    timing,
    venue_kind,
    window_ns,
)
from sapphire.kernel.builders import WiringError, agent_builder, agent_leaves
from sapphire.model.instrument import Instrument

__all__ = [
    "ReplayFeed",
    "WiringError",
    "agent_builder",
    "agent_leaves",
    "backend_builder",
    "build_core",
    "check_agents",
    "claim_run",
    "data_files",
    "gateway_builder",
    "live_gateway_builder",
    "load_instruments",
    "market_data_kind",
    "merge_fixed",
    "merge_groups",
    "replay_opener",
    "run_folder",
    "session_gaps",
    "shards",
    "source_shards",
    "sources_opener",
    "storage_root",
    "stream_opener",
    "timing",
    "venue_kind",
    "window_ns",
]


def _open_live(data: DataConfig, instruments: dict[str, Instrument]) -> Any:
    from actors.live_feed import LiveFeed

    return LiveFeed(data.live, instruments)


def stream_opener(data: DataConfig, instruments: dict[str, Instrument]) -> Callable[[], Any]:
    if data.source == "ccxt":
        return partial(_open_live, data, instruments)
    return replay_opener(data, instruments)


def gateway_builder(
    exchange: ExchangeConfig,
    instruments: dict[str, Instrument],
    run_id: str = "",
    run_instruments: dict[str, Instrument] | None = None,
) -> Callable[[], ExecutionGateway]:
    """``instruments``: the venue's (a shard's); ``run_instruments``: the whole run's."""
    if exchange.kind == "ccxt" and not exchange.factory:
        return live_gateway_builder(exchange, run_id, instruments)
    return paper_gateway_builder(exchange, instruments, run_instruments)


def live_gateway_builder(
    exchange: ExchangeConfig, run_id: str, instruments: dict[str, Instrument] | None = None
) -> Callable[[], Any]:
    # ccxt (0.7 s of imports) only for a live venue: a replay's driver never loads it
    from sapphire.adapters.ccxt_gateway import CcxtGatewayConfig

    try:
        config = msgspec.convert(exchange.params, CcxtGatewayConfig)
    except (msgspec.ValidationError, ValueError) as exc:
        raise WiringError(f"exchange.params (ccxt): {exc}") from None
    return partial(build_ccxt, config, run_id, instruments)
