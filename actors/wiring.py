"""From config to the pure objects each actor wraps. Builders are small picklable callables,
so Ray can re-run them when it restarts an actor."""

from __future__ import annotations

import importlib
import itertools
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from sapphire.agents.base import Agent, AgentConfigError
from sapphire.agents.registry import build_agent
from sapphire.config.system import AgentSpec, DataConfig, ExchangeConfig, StorageConfig
from sapphire.data import replay, sample
from sapphire.data.instruments import load_instrument_file
from sapphire.data.registry import open_stream
from sapphire.exchange.ccxt_gateway import CcxtGatewayConfig
from sapphire.exchange.config import PaperExchangeConfig
from sapphire.exchange.gateway import ExecutionGateway
from sapphire.exchange.paper import PaperExchange
from sapphire.model.events import AnyMarketEvent
from sapphire.model.instrument import Instrument


class WiringError(ValueError):
    """A config that names things that do not fit together."""


def data_files(data: DataConfig) -> list[Path]:
    if data.source == "sample":
        return sample.event_files()
    if data.source == "ccxt":
        return []
    return [Path(f) for f in data.files]


def load_instruments(data: DataConfig) -> dict[str, Instrument]:
    files = list(data.instrument_files)
    if data.source == "sample" and not files:
        files = [str(sample.instrument_file())]
    if not files:
        raise WiringError("data.instrument_files must name the instruments of data.files")
    instruments = {}
    for path in files:
        inst = load_instrument_file(path)
        instruments[inst.symbol] = inst
    return instruments


class ReplayFeed:
    """The merged replay of several recorded files, with their rejection counts.

    ``speed`` > 0 releases events at that multiple of recorded time (1.0 = as recorded, for
    demos); 0 is as fast as possible. Events skipped on a restart are not paced.
    """

    def __init__(
        self,
        files: list[Path],
        instruments: dict[str, Instrument],
        order_by: str,
        speed: float = 0.0,
    ) -> None:
        self._streams = [open_stream(path, instruments) for path in files]
        self._merged = replay.merge(
            [s.tagged() for s in self._streams],
            key=order_by,  # type: ignore[arg-type]
        )
        self._speed = speed
        self._events: Iterator[AnyMarketEvent] | None = None

    def skip(self, n: int) -> None:
        """Fast-forward ``n`` events (a restarted replay), before any pacing starts."""
        for _ in itertools.islice(self._merged, n):
            pass

    def __iter__(self) -> Iterator[AnyMarketEvent]:
        if self._events is None:
            items = self._merged
            if self._speed > 0:
                items = replay.pace(items, self._speed, time.sleep, time.monotonic_ns)
            self._events = (item.event for item in items)
        return self._events

    def __next__(self) -> AnyMarketEvent:
        return next(iter(self))

    def rejected(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for stream in self._streams:
            for reason, n in stream.stats.counts.items():
                counts[str(reason)] = counts.get(str(reason), 0) + n
        return counts


def _open(
    files: list[Path], instruments: dict[str, Instrument], order_by: str, speed: float = 0.0
) -> ReplayFeed:
    return ReplayFeed(files, instruments, order_by, speed)


def _open_live(data: DataConfig, instruments: dict[str, Instrument]) -> Any:
    from actors.live_feed import LiveFeed

    return LiveFeed(data.live, instruments)


def stream_opener(data: DataConfig, instruments: dict[str, Instrument]) -> Callable[[], Any]:
    if data.source == "ccxt":
        return partial(_open_live, data, instruments)
    return partial(_open, data_files(data), instruments, data.order_by, data.speed)


def _build_agent(spec: AgentSpec, instrument: Instrument) -> Agent:
    return build_agent(spec.kind, spec.id, instrument, dict(spec.params))


def agent_builder(spec: AgentSpec, instrument: Instrument) -> Callable[[], Agent]:
    try:
        _build_agent(spec, instrument)  # fail fast on a bad config, before any actor starts
    except AgentConfigError as exc:
        raise WiringError(f"agent {spec.id}: {exc}") from None
    return partial(_build_agent, spec, instrument)


def _import(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise WiringError(f"cannot import {path!r} (want 'package.module:name'): {exc}") from None


def _build_paper(config: PaperExchangeConfig) -> ExecutionGateway:
    return PaperExchange(config)


def gateway_builder(
    exchange: ExchangeConfig, instruments: dict[str, Instrument]
) -> Callable[[], ExecutionGateway]:
    if exchange.factory:
        factory = _import(exchange.factory)
        return partial(factory, exchange, instruments)
    if exchange.kind == "ccxt":
        return live_gateway_builder(exchange)
    raw: dict[str, Any] = {"instruments": list(instruments.values()), **exchange.params}
    try:
        config = msgspec.convert(raw, PaperExchangeConfig, from_attributes=True)
    except (msgspec.ValidationError, ValueError) as exc:
        raise WiringError(f"exchange.params: {exc}") from None
    return partial(_build_paper, config)


def _build_ccxt(config: CcxtGatewayConfig) -> Any:
    from sapphire.exchange.ccxt_gateway import CcxtExchange

    # credentials come from the environment (or secret files) of the worker, never the config
    return CcxtExchange(config)


def live_gateway_builder(exchange: ExchangeConfig) -> Callable[[], Any]:
    try:
        config = msgspec.convert(exchange.params, CcxtGatewayConfig)
    except (msgspec.ValidationError, ValueError) as exc:
        raise WiringError(f"exchange.params (ccxt): {exc}") from None
    return partial(_build_ccxt, config)


def _build_parquet(root: str, run_id: str) -> Any:
    from sapphire.storage.parquet_backend import ParquetBackend

    # One dataset for all runs (rows carry run_id); one manifest per run's sink.
    return ParquetBackend(Path(root) / "store", sink_id=run_id)


def backend_builder(storage: StorageConfig, run_id: str) -> Callable[[], Any]:
    if storage.backend == "parquet":
        return partial(_build_parquet, str(Path(storage.root).resolve()), run_id)
    raise WiringError(f"storage backend {storage.backend!r} is not wired into the actor system yet")
