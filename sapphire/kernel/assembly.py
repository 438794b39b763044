"""From a system config to the kernel's parts: instruments, the replay, agents, the venue and
the run's timing. Every runner (in process, Ray, tune) builds its parts here, so they cannot
drift apart. Builders are small picklable callables, so Ray can re-run them on a restart.
"""

from __future__ import annotations

import importlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from sapphire.agents.base import Agent, AgentConfigError
from sapphire.agents.registry import build_agent
from sapphire.config.system import AgentSpec, DataConfig, ExchangeConfig, SystemConfig
from sapphire.coordination.core import CoordinatorCore
from sapphire.data import replay, sample
from sapphire.data.instruments import load_instrument_file
from sapphire.data.registry import detect, open_stream
from sapphire.data.validation import DataFileError
from sapphire.exchange.config import LatencyConfig, PaperExchangeConfig
from sapphire.exchange.gateway import ExecutionGateway
from sapphire.exchange.paper import PaperExchange
from sapphire.kernel.timing import Clock, Timing
from sapphire.model.events import AnyMarketEvent
from sapphire.model.instrument import Instrument

# What a paper venue assumes when the config names no latency: 1 ms to the matching engine
# and 1 ms back (a co-located client), so the lookahead is 1 ms. Printed with every summary.
DEFAULT_LATENCY: dict[str, Any] = {
    "kind": "constant",
    "entry_ns": 1_000_000,
    "response_ns": 1_000_000,
}


class WiringError(ValueError):
    """A config that names things that do not fit together."""


def data_path(text: str) -> Path:
    """A data or instrument path of a config: ``shared:REL`` is the shared recorded data
    (``$SAPPHIRE_SHARED_DATA``, else ``../shared/data`` beside the repository), ``sample:REL``
    the bundled sample; anything else is a path as given."""
    if text.startswith("shared:"):
        env = os.environ.get("SAPPHIRE_SHARED_DATA")
        root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
        return root / text.removeprefix("shared:").lstrip("/")
    if text.startswith("sample:"):
        return sample.SAMPLE_DIR / text.removeprefix("sample:").lstrip("/")
    return Path(text)


def storage_root(config: SystemConfig) -> Path:
    """``storage.root``, resolved; a path that exists and is not a folder is a config error
    (the store, checkpoints and the firm kill switch all live under it)."""
    root = Path(config.storage.root).resolve()
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                raise WiringError(f"storage.root {config.storage.root!r}: {path} is not a folder")
            break
    return root


def data_files(data: DataConfig) -> list[Path]:
    if data.source == "sample":
        return sample.event_files()
    if data.source == "ccxt":
        return []
    return [data_path(f) for f in data.files]


def load_instruments(data: DataConfig) -> dict[str, Instrument]:
    files = list(data.instrument_files)
    if data.source == "sample" and not files:
        files = [str(sample.instrument_file())]
    if not files:
        raise WiringError("data.instrument_files must name the instruments of data.files")
    instruments = {}
    for path in files:
        try:
            inst = load_instrument_file(data_path(str(path)))
        except DataFileError as exc:
            raise WiringError(f"data.instrument_files: {exc}") from None
        instruments[inst.symbol] = inst
    return instruments


def replay_key(clock: str) -> str:
    return "ts_event_ns" if clock == Clock.EXCHANGE else "ts_recv_ns"


class ReplayFeed:
    """The merged replay of several recorded files, ordered on the run's clock, with their
    rejection counts.

    ``speed`` > 0 releases events at that multiple of recorded time (1.0 = as recorded, for
    demos); 0 is as fast as possible. Events skipped on a restart are not paced.
    """

    def __init__(
        self,
        files: list[Path],
        instruments: dict[str, Instrument],
        clock: str = Clock.EXCHANGE,
        speed: float = 0.0,
    ) -> None:
        self._streams = [open_stream(path, instruments) for path in files]
        self._merged = replay.merge(
            [s.tagged() for s in self._streams],
            key=replay_key(clock),  # type: ignore[arg-type]
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


def open_replay(
    files: list[Path], instruments: dict[str, Instrument], clock: str, speed: float = 0.0
) -> ReplayFeed:
    return ReplayFeed(files, instruments, clock, speed)


def replay_opener(data: DataConfig, instruments: dict[str, Instrument]) -> Callable[[], ReplayFeed]:
    """Checks every file here (it exists, its format is known) so that a bad path is one
    clear error before anything starts, not a failure inside an actor."""
    files = data_files(data)
    for path in files:
        try:
            detect(path)
        except DataFileError as exc:
            raise WiringError(f"data.files: {exc}") from None
    return partial(open_replay, files, instruments, data.clock, data.speed)


def _build_agent(spec: AgentSpec, instrument: Instrument) -> Agent:
    return build_agent(spec.kind, spec.id, instrument, dict(spec.params))


class AgentBuilder(msgspec.Struct, frozen=True):
    """Builds one agent: ``builder()`` on the instrument the driver loaded, or
    ``builder(spec)`` on a copy of it read elsewhere (the Ray agent actor reads it through its
    cache hierarchy, with this one as the source). Picklable, so Ray re-runs it on a restart."""

    spec: AgentSpec
    instrument: Instrument

    def __call__(self, instrument: Instrument | None = None) -> Agent:
        if instrument is not None and instrument != self.instrument:
            # a cache must never change what an agent decides: only an equal spec is accepted
            raise WiringError(
                f"agent {self.spec.id}: instrument {instrument.symbol!r} differs from the one "
                "the run loaded"
            )
        return _build_agent(self.spec, self.instrument if instrument is None else instrument)


def agent_builder(spec: AgentSpec, instrument: Instrument) -> AgentBuilder:
    try:
        _build_agent(spec, instrument)  # fail fast on a bad config, before any actor starts
    except AgentConfigError as exc:
        raise WiringError(f"agent {spec.id}: {exc}") from None
    return AgentBuilder(spec, instrument)


def check_agents(config: SystemConfig, instruments: dict[str, Instrument]) -> None:
    for spec in config.agents:
        if spec.symbol not in instruments:
            raise WiringError(
                f"agent {spec.id}: symbol {spec.symbol!r} not in the data's instruments "
                f"{sorted(instruments)}"
            )


def import_object(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise WiringError(f"cannot import {path!r} (want 'package.module:name'): {exc}") from None


def venue_params(exchange: ExchangeConfig) -> dict[str, Any]:
    """The paper venue's modelling assumptions, with the default latency where none is set."""
    params = dict(exchange.params)
    params.setdefault("latency", dict(DEFAULT_LATENCY))
    return params


def timing(config: SystemConfig) -> Timing:
    """The run's latencies, read from the venue model (``exchange.params.latency``)."""
    if config.exchange.kind == "ccxt" and not config.exchange.factory:
        # live: a window is what arrived; reports reach the system when they arrive
        return Timing(**{k: v for k, v in DEFAULT_LATENCY.items() if k != "kind"})
    raw = venue_params(config.exchange)["latency"]
    try:
        latency = msgspec.convert(raw, LatencyConfig)
    except msgspec.ValidationError as exc:
        raise WiringError(f"exchange.params.latency: {exc}") from None
    return Timing.from_latency(latency)


def window_ns(config: SystemConfig) -> int:
    """The run's window: ``data.window_ns`` (0 = the lookahead), checked against the timing."""
    return timing(config).window_ns(config.data.window_ns, approximate=config.data.approximate)


def _build_paper(config: PaperExchangeConfig) -> ExecutionGateway:
    return PaperExchange(config)


def paper_gateway_builder(
    exchange: ExchangeConfig, instruments: dict[str, Instrument]
) -> Callable[[], ExecutionGateway]:
    if exchange.factory:
        factory = import_object(exchange.factory)
        return partial(
            factory, msgspec.structs.replace(exchange, params=venue_params(exchange)), instruments
        )
    raw: dict[str, Any] = {"instruments": list(instruments.values()), **venue_params(exchange)}
    try:
        config = msgspec.convert(raw, PaperExchangeConfig, from_attributes=True)
    except (msgspec.ValidationError, ValueError) as exc:
        raise WiringError(f"exchange.params: {exc}") from None
    return partial(_build_paper, config)


def build_core(config: SystemConfig, instruments: dict[str, Instrument]) -> CoordinatorCore:
    return CoordinatorCore(
        instruments,
        config.risk,
        Decimal(config.capital_quote),
        {a.id: a.weight for a in config.agents},
        config.aggregation,
    )
