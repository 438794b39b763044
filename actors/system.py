"""Start a Sapphire system from a config, drive it to the end of its data, summarise.

``run_system`` is the main job: the same function runs under ``sapphire run`` on a laptop
and under ``ray job submit -- python -m actors.main`` on a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import ray
from ray.actor import ActorClass

from actors import cost, metrics_export, wiring
from actors.agent import AgentActor, HostedAgent
from actors.cache import counts_from_builtins
from actors.checkpoint import make_store, redis_location
from actors.coordinator import CoordinatorActor
from actors.cost import CostReport
from actors.errors import root_cause
from actors.execution import ExecutionActor
from actors.live_execution import LiveExecutionActor
from actors.market_data import MarketDataActor
from actors.storage_sink import StorageSinkActor
from sapphire.adapters.stores import store_location, stored_tables
from sapphire.cli import one_line
from sapphire.config.system import SystemConfig, check_run_id
from sapphire.kernel.runner import NoEventsError
from sapphire.storage.cache import cache_summary

log = logging.getLogger(__name__)

T = TypeVar("T")


def actor_class(cls: type[T]) -> ActorClass[T]:
    """The :class:`ActorClass` that ``@ray.remote`` made of ``cls``.

    mypy ignores class decorators (python/mypy#3135): to it a decorated name is still the plain
    class, without ``options``. This is the checked view of what the name really holds.
    """
    remote: object = cls
    if not isinstance(remote, ActorClass):
        raise TypeError(f"{cls!r} is not an @ray.remote actor class")
    return remote


_MARKET_DATA = actor_class(MarketDataActor)
_EXECUTION = actor_class(ExecutionActor)
_LIVE_EXECUTION = actor_class(LiveExecutionActor)
_STORAGE_SINK = actor_class(StorageSinkActor)
_AGENT = actor_class(AgentActor)
_COORDINATOR = actor_class(CoordinatorActor)


@dataclass
class SystemHandles:
    run_id: str
    namespace: str
    coordinator: Any
    market_data: Any
    execution: Any
    sink: Any
    agents: dict[str, Any]  # agent id -> its actor (agents sharing a host share one)
    storage_root: Path
    checkpoint_location: str
    console: Any = None  # the run's live web console (actors.console), when enabled
    agent_hosts: dict[str, Any] = field(default_factory=dict)  # actor name -> actor
    venues: list[Any] = field(default_factory=list)  # each shard's venue (``execution`` first)
    # each shard's market data where the replay is read shard by shard (``market_data`` first)
    readers: list[Any] = field(default_factory=list)

    def actors(self) -> list[Any]:
        """Every actor of the run."""
        return [
            self.coordinator,
            self.market_data,
            *self.readers[1:],
            self.execution,
            *self.venues[1:],
            self.sink,
            *self.agent_hosts.values(),
        ]


@dataclass
class RunResult:
    run_id: str
    summary: dict[str, Any]
    steps: int
    wall_s: float
    storage_root: Path
    sink_stats: dict[str, Any] = field(default_factory=dict)
    cost: CostReport | None = None
    unacked_rows: int = 0  # rows the store never committed: the run did not succeed
    store: str = ""  # where the rows are (a Parquet folder or a BigQuery dataset)

    @property
    def failure(self) -> str:
        """Why the run did not succeed ("" when it did)."""
        return str(self.summary.get("failure", ""))


def default_run_id() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"


class RayStartFailed(RuntimeError):
    """Ray did not start, or its cluster could not be reached: nothing of the run began."""


def ensure_ray(config: SystemConfig) -> bool:
    """Connect to Ray, starting a local cluster where none is given; True when this call
    initialised Ray (False: it was already). A start that fails is one line
    (:class:`RayStartFailed`): a busy host's "node timed out during startup" was 30 lines
    of Ray's traceback."""
    if ray.is_initialized():
        return False
    try:
        _init_ray(config)
    except Exception as exc:
        if ray.is_initialized():  # half started: what it started goes
            ray.shutdown()
        first = one_line(exc)[:300]
        raise RayStartFailed(f"Ray did not start: {type(exc).__name__}: {first}") from exc
    return True


CONNECT_TIMEOUT_S = 10.0


def _reachable(address: str) -> None:
    """A cluster address's GCS answers a TCP connect within CONNECT_TIMEOUT_S: Ray itself
    retries an unreachable one for ever, a warning every few seconds and no error."""
    host_port = address.split("://", 1)[-1]
    if host_port in ("auto", "local") or ":" not in host_port:
        return  # Ray finds those itself
    host, _, port = host_port.rpartition(":")
    if not port.isdigit():
        return
    host = host.removeprefix("[").removesuffix("]")  # an IPv6 address: [::1]:6380
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"cluster {address} unreachable ({exc})") from None


def _init_ray(config: SystemConfig) -> None:
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:  # a cluster: given in the config, or by `ray job submit` (RAY_ADDRESS)
        _reachable(address)
        ray.init(address=address, namespace=config.ray.namespace)
        return
    # A local cluster: Ray's GCS picks a free port (never Redis's 6379); the dashboard and the
    # metrics endpoint stay on loopback unless the config says otherwise.
    ray.init(
        address="local",
        namespace=config.ray.namespace,
        num_cpus=config.ray.num_cpus,
        log_to_driver=True,
        configure_logging=False,
        **metrics_export.ray_init_options(config.metrics),
    )
    if config.metrics.enabled and not config.metrics.include_dashboard:
        metrics_export.write_scrape_targets()  # Ray's own list needs its dashboard


def checkpoint_location(config: SystemConfig, run_id: str) -> str:
    """Where a run's actors checkpoint: always scoped by the run id, so two runs never share
    state (a directory ``<root>/<run_id>``, or Redis keys ``<prefix>:<run_id>:...``)."""
    base = config.checkpoint_dir
    if base.startswith(("redis://", "rediss://")):
        url, _, prefix = base.partition("#")
        # where the password is (its variable, the secrets folder), never its value: each
        # store reads it by the one rule the cache and the kill switch read it by
        return redis_location(url, f"{prefix or 'sapphire:ckpt'}:{run_id}", config.redis)
    if base:
        return str(Path(base).resolve() / run_id)
    return str(Path(config.storage.root).resolve() / run_id / "checkpoints")


def has_checkpoints(location: str) -> bool:
    if location.startswith(("redis://", "rediss://")):
        return make_store(location).load("coordinator") is not None
    return (Path(location) / "coordinator.ckpt").is_file()


def check_run_start(config: SystemConfig, run_id: str, *, resume: bool) -> Path:
    """A run id names one run: a new run's must have no checkpoints and no stored rows (a
    backtest's, or a run whose checkpoints are gone: its rows would be dropped as that run's
    duplicates); a resumed run's must have checkpoints. Checked before Ray starts; returns
    this process's claim on the id (``wiring.claim_run``)."""
    check_run_id(run_id)
    # before anything reads the store: its recovery must not touch a live run's files
    claim = wiring.claim_run(config, run_id)
    try:
        location = checkpoint_location(config, run_id)
        existing = has_checkpoints(location)
        if existing and not resume:
            raise wiring.WiringError(
                f"run {run_id!r} already exists (checkpoints in {location}): "
                f"continue it with --resume {run_id}, or choose another run id"
            )
        if resume and not existing:
            raise wiring.WiringError(f"run {run_id!r} has no checkpoints to resume from")
        if config.checkpoint_dir:
            check_checkpoint_owner(config, run_id, location, resume=resume)
        recorded = wiring.run_folder(config, run_id) / RUN_CONFIG_FILE
        if not resume:
            stored = stored_tables(config.storage, run_id)
            if stored:
                raise wiring.WiringError(
                    f"run {run_id!r} is already stored ({', '.join(stored)} in "
                    f"{store_location(config)}): choose another run id"
                )
            recorded.write_bytes(msgspec.json.encode(trading_config(config)))
        else:
            check_same_config(config, run_id, recorded)
    except BaseException:
        release_claim(claim)  # a refused start holds no id (a reused pid made it "running")
        raise
    return claim


OWNER_KEY = "owner"


def check_checkpoint_owner(
    config: SystemConfig, run_id: str, location: str, *, resume: bool
) -> None:
    """An explicit ``checkpoint_dir`` (a folder or Redis) may be shared by several store
    roots, and is scoped by the run id alone: the location records the store root of the
    run it holds, made once (one of two starters wins). Runs of one id on two roots shared
    one set of checkpoints: one crashed, and ``--resume`` on a root where the run never ran
    stored the other run's results and exited 0."""
    root = str(Path(config.storage.root).resolve())
    store = make_store(location)
    held = store.load(OWNER_KEY) if resume else store.create(OWNER_KEY, root.encode())
    if held is not None and held.decode() != root:
        raise wiring.WiringError(
            f"run {run_id!r}: the checkpoints in {location} are those of the run on storage.root "
            f"{held.decode()}, not {root}: "
            + ("resume it with that root" if resume else "choose another run id")
        )


# what a run trades by, recorded at its start: a --resume with another one would store two
# configs' rows under one run id (and an agent dropped from it would vanish from the store)
RUN_CONFIG_FILE = "run-config.json"
_TRADING = (
    "data",
    "agents",
    "risk",
    "capital_quote",
    "aggregation",
    "exchange",
    "coordinator",
    "shards",
    "storage",
    "checkpoint_dir",
    "llm",
)
# knobs that change no outcome (pace, memory, the converted-replay cache)
_DATA_KNOBS = ("speed", "batch_events", "cache", "cache_dir", "cache_max_mb")


def trading_config(config: SystemConfig) -> dict[str, Any]:
    raw = msgspec.to_builtins(config)
    out = {k: raw.get(k) for k in _TRADING}
    out["data"] = {k: v for k, v in out["data"].items() if k not in _DATA_KNOBS}
    return out


def check_same_config(config: SystemConfig, run_id: str, recorded: Path) -> None:
    try:
        then = msgspec.json.decode(recorded.read_bytes())
    except FileNotFoundError:
        return  # a run started before configs were recorded: nothing to compare
    except (OSError, msgspec.DecodeError) as exc:
        raise wiring.WiringError(f"run {run_id!r}: {recorded} unreadable: {exc}") from None
    now = msgspec.json.decode(msgspec.json.encode(trading_config(config)))
    changed = []
    for section in _TRADING:
        a, b = then.get(section), now.get(section)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
            changed += [f"{section}.{k}" for k in keys]
        else:
            changed.append(section)
    if changed:
        raise wiring.WiringError(
            f"run {run_id!r} was started with another config ({', '.join(changed[:8])} "
            f"differ from {recorded}): resume it with its own config, or start a new run id"
        )


def release_claim(claim: Path) -> None:
    """The run id is free again; a folder that cannot be written (gone read-only) keeps
    the marker, whose process is then gone: the next start takes it over."""
    try:
        claim.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("run claim %s left in place: %s", claim, exc)


def start_system(
    config: SystemConfig, run_id: str, *, resume: bool = False, checked: bool = False
) -> SystemHandles:
    """Start the actors of run ``run_id``. A run id that already has checkpoints is refused
    unless ``resume``: then every actor restores its last step and the run continues.
    ``checked``: the caller ran :func:`check_run_start` already (the store is not read twice)."""
    ns = config.ray.namespace
    storage_root = wiring.storage_root(config)
    if not checked:
        check_run_start(config, run_id, resume=resume)
    checkpoint_location_ = checkpoint_location(config, run_id)
    instruments = wiring.load_instruments(config.data)
    wiring.run_folder(config, run_id)  # before the first step: `sapphire stop` finds the run
    opts: dict[str, Any] = {
        "namespace": ns,
        "max_restarts": config.ray.max_restarts,
        "max_task_retries": config.ray.max_task_retries,
    }

    def named(kind: str) -> dict[str, Any]:
        return {**opts, "name": f"{run_id}:{kind}"}

    def core(kind: str) -> dict[str, Any]:
        return {
            **named(kind),
            "num_cpus": CORE_CPUS,
            "resources": dict(config.ray.core_resources),
        }

    timing = wiring.timing(config)
    wiring.window_ns(config)  # an inexact window is refused before any actor starts
    # the agents that ask a language model, by what they are (whatever their kind is named):
    # they get the Serve app and a bridge
    asking = wiring.check_agents(config, instruments)
    shards = wiring.shards(config, instruments)
    source_shard = wiring.source_shards(config, shards)
    readers_n = 1 if source_shard is None else shards.count
    check_cpus_fit(config, venues=shards.count, readers=readers_n)
    readers: list[Any] = []
    if source_shard is None:  # one market data reads the merged replay (or the live feed)
        readers.append(
            _MARKET_DATA.options(**core("market-data")).remote(
                wiring.stream_opener(config.data, instruments),
                config.data.batch_events,
                checkpoint_location_,
                config.data.max_events,
            )
        )
    else:  # a market data per shard, where the shard's resources say, reading its sources
        wiring.replay_opener(config.data, instruments)  # each file checked here, named
        for k in range(shards.count):
            options = core(wiring.market_data_kind(k))
            options["resources"] = shard_resources(config, k) or options["resources"]
            wanted = tuple(i for i, owner in enumerate(source_shard) if owner == k)
            readers.append(
                _MARKET_DATA.options(**options).remote(
                    wiring.sources_opener(config.data, instruments, wanted),
                    config.data.batch_events,
                    checkpoint_location_,
                    config.data.max_events,
                    wiring.market_data_kind(k),
                )
            )
    market_data = readers[0]
    execution: Any
    venues: list[Any] = []
    if config.exchange.kind == "ccxt" and not config.exchange.factory:
        symbols = tuple(sorted({a.symbol for a in config.agents}))
        execution = _LIVE_EXECUTION.options(**core("execution")).remote(
            wiring.gateway_builder(config.exchange, instruments, run_id),
            checkpoint_location_,
            symbols,
            config.capital_quote,
        )
        venues = [execution]
    else:
        # a venue actor per shard, with the shard's instruments, where its resources say
        for k, group in enumerate(shards.groups):
            shard_instruments = {s: instruments[s] for s in group}
            options = core(wiring.venue_kind(k))
            # a shard's resources place its venue (with its agents), not the core actors'
            options["resources"] = shard_resources(config, k) or options["resources"]
            venues.append(
                _EXECUTION.options(**options).remote(
                    wiring.gateway_builder(config.exchange, shard_instruments, run_id, instruments),
                    checkpoint_location_,
                    wiring.venue_kind(k),  # its own checkpoint
                )
            )
        execution = venues[0]
    sink = _STORAGE_SINK.options(**core("storage-sink")).remote(
        wiring.backend_builder(config.storage, run_id),
        config.storage.batch_rows,
        config.storage.flush_interval_s,
    )
    llm = bool(asking)
    # (app name, a decision's wall-clock wait): read once, where the app is built
    llm_app, llm_timeout_s = (
        start_llm_service(config, venues=len(venues), readers=len(readers)) if llm else ("", None)
    )
    agents: dict[str, Any] = {}
    agent_names: dict[str, str] = {}
    hosts: dict[str, Any] = {}
    specs = {spec.id: spec for spec in config.agents}
    for leaf, ids in wiring.agent_leaves(config).items():
        hosted = [specs[a] for a in ids]
        shard = shards.agent_shard[ids[0]]
        resources: dict[str, float] = dict(shard_resources(config, shard))
        for spec in hosted:
            for name, amount in spec.resources.items():
                resources[name] = resources.get(name, 0.0) + amount
        handle = _AGENT.options(
            **named(leaf),
            num_cpus=sum(spec.num_cpus for spec in hosted),
            resources=resources,
            scheduling_strategy="SPREAD",
        ).remote(
            [
                HostedAgent(
                    spec.id,
                    wiring.agent_builder(
                        spec,
                        instruments[spec.symbol],
                        shards.legs(spec.id, instruments),
                        checked=True,  # by check_agents above, on these legs
                    ),
                    *((llm_app, llm_timeout_s) if spec.id in asking else ("", None)),
                )
                for spec in hosted
            ],
            timing,
            checkpoint_location_,
            config.redis,  # the L2 of its caches (instrument spec, LLM decisions)
            shards.groups[shard],  # what its agents may trade: their shard's symbols
            leaf,
        )
        hosts[leaf] = handle
        for agent_id in ids:
            agents[agent_id] = handle
            agent_names[agent_id] = named(leaf)["name"]
    kinds = [
        "storage-sink",
        *(wiring.market_data_kind(k) for k in range(len(readers))),
        *(wiring.venue_kind(k) for k in range(len(venues))),
    ]
    names = {kind: named(kind)["name"] for kind in kinds}
    coordinator = _COORDINATOR.options(**core("coordinator")).remote(
        # which shard reads each source: worked out here, where the data's files are
        config,
        run_id,
        instruments,
        names,
        agent_names,
        checkpoint_location_,
        source_shard,
    )
    return SystemHandles(
        run_id,
        ns,
        coordinator,
        market_data,
        execution,
        sink,
        agents,
        storage_root,
        checkpoint_location_,
        agent_hosts=hosts,
        venues=venues,
        readers=readers,
    )


CORE_CPUS = 0.25  # each core actor's share: market data, the sink, the coordinator, a venue


def check_cpus_fit(config: SystemConfig, *, venues: int, readers: int = 1) -> None:
    """On a local cluster (no autoscaler to add a node), actors that ask for more CPUs than
    it has would wait forever for a place, and the run would stop at its step timeout with
    nothing said about why: refused here, before any actor starts, naming the fields."""
    if config.ray.address or os.environ.get("RAY_ADDRESS"):
        return  # a cluster may scale up to place them
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    have = float(resources.get("CPU", 0.0))
    core = 2 + readers + venues  # the coordinator, the sink, market data, venues
    need = CORE_CPUS * core + sum(spec.num_cpus for spec in config.agents)
    if need > have + 1e-9:
        raise wiring.WiringError(
            f"the run's actors ask for {need:g} CPUs and the local Ray cluster has {have:g} "
            f"({core} core actors at {CORE_CPUS:g}, agents[].num_cpus "
            f"{sum(spec.num_cpus for spec in config.agents):g}): lower agents[].num_cpus, "
            "or raise ray.num_cpus (logical CPUs)"
        )
    # a custom resource no node has: its actor waited out the step timeout, nothing said
    for where, wanted in config.custom_resources():
        for name, amount in wanted.items():
            if amount > float(resources.get(name, 0.0)) + 1e-9:
                raise wiring.WiringError(
                    f"{where}: {name} {amount:g} asked, the local Ray cluster has "
                    f"{float(resources.get(name, 0.0)):g} (start its nodes with "
                    f"--resources, or drop it)"
                )


def shard_resources(config: SystemConfig, shard: int) -> dict[str, float]:
    """The Ray resources shard ``shard``'s actors ask for (none without shards)."""
    return dict(config.shards[shard].resources) if config.shards else {}


def start_llm_service(
    config: SystemConfig, *, venues: int = 1, readers: int = 1
) -> tuple[str, float]:
    """Deploy the LLM decision app on Ray Serve (HTTP on loopback, no route: agents call it
    through a DeploymentHandle). Returns the app name and how long an LLM agent waits for one
    decision (``llm.request_timeout_s``, as the app read it)."""
    from ray import serve

    from actors.serve.llm_app import parse_app_args, sized_app
    from actors.serve.llm_client import APP_NAME

    parsed, engine = parse_app_args(config.llm)
    # sized before anything deploys: a replica that cannot fit is a one-line error, not a hang
    app = sized_app(
        parsed,
        engine,
        # the agents and the coordinator are placed after the app
        reserve_cpus=sum(spec.num_cpus for spec in config.agents) + CORE_CPUS,
        # market data (one a shard where read so), the sink and the venues (one a shard),
        # created just before
        placed_cpus=(1 + readers + venues) * CORE_CPUS,
        prices_file=config.cost.prices_file,
        price_profile=config.cost.profile,
    )
    serve.start(http_options={"host": "127.0.0.1"})
    serve.run(app, name=APP_NAME, route_prefix=None)
    return APP_NAME, parsed.request_timeout_s


def start_console(
    config: SystemConfig, handles: SystemHandles, on_url: Callable[[str], None] | None = None
) -> Any:
    """Serve the run's live web console (``console.enabled``) and announce its URL once,
    token included: ``on_url`` (default: printed)."""
    if not config.console.enabled:
        return None
    from actors.console import ConsoleServer, console_token, ray_dashboard_url

    parquet = config.storage.backend == "parquet"
    server = ConsoleServer(
        handles.coordinator,
        config.console,
        token=console_token(),
        dashboard_url=ray_dashboard_url(),
        store_root=handles.storage_root / "store" if parquet else None,
        reports_dir=handles.storage_root / "reports",
    )
    url = server.start()
    handles.console = server
    if on_url is None:
        print(f"console: {url}", flush=True)
    else:
        on_url(url)
    return server


def drive(
    handles: SystemHandles,
    *,
    start_step: int = 0,
    max_steps: int | None = None,
    on_step: Callable[[Any], None] | None = None,
    step_timeout_s: float = 120.0,
    batch_s: float = 0.25,
    batch_steps: int = 4096,
) -> int:
    """Run steps until the data is exhausted (or ``max_steps``); returns the next step. The
    coordinator runs up to ``batch_s`` of steps per call, so the driver's round trip is paid
    per batch; ``on_step`` still sees every step's progress, in order."""
    step = start_step
    while max_steps is None or step < start_step + max_steps:
        left = batch_steps if max_steps is None else start_step + max_steps - step
        count = min(batch_steps, left)
        batch = ray.get(
            handles.coordinator.run_steps.remote(step, count, batch_s),
            timeout=step_timeout_s + batch_s,
        )
        for progress in batch:
            if on_step is not None:
                on_step(progress)
        last = batch[-1]
        step = last.step + 1
        if last.done:
            break
    return step


def agent_stats(
    handles: SystemHandles, skip: Iterable[str] = (), timeout_s: float = 10.0
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each agent actor's ``stats``, asked of all at once; quarantined agents (``skip``: hung,
    so a call would only wait out its timeout) and those that do not answer are named
    instead."""
    skipped = set(skip)
    refs = {a: h.stats.remote(a) for a, h in handles.agents.items() if a not in skipped}
    stats: dict[str, dict[str, Any]] = {}
    unavailable = sorted(skipped & set(handles.agents))
    deadline = time.monotonic() + timeout_s
    for agent_id, ref in sorted(refs.items()):
        try:
            stats[agent_id] = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
        except (ray.exceptions.RayError, TimeoutError):
            unavailable.append(agent_id)
    return stats, sorted(unavailable)


def llm_summary(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The summary's ``llm`` entry: per LLM agent, its decision counts and point-in-time flags
    (``actors.llm_bridge.LlmBridge.stats``); empty when no agent asks a model."""
    return {a: s["llm"] for a, s in sorted(stats.items()) if s.get("llm")}


def cache_stats(stats: dict[str, dict[str, Any]], unavailable: list[str]) -> dict[str, Any]:
    """The summary's ``cache`` entry: hits, misses and hit ratio per level, per cache, over
    every agent actor (each one's counts include its earlier incarnations). Agents that do not
    answer (quarantined, gone) are named under ``unavailable`` rather than waited for."""
    # agents sharing an actor share its caches: each actor's counts once
    hosts = {s.get("host", a): s["cache"] for a, s in sorted(stats.items())}
    out = cache_summary([counts_from_builtins(c) for _, c in sorted(hosts.items())])
    if unavailable:
        out["unavailable"] = unavailable
    return out


def finish(
    handles: SystemHandles, steps: int, wall_s: float, timeout_s: float | None = None
) -> RunResult:
    """``timeout_s``: how long the last flush may take (None: no bound). A store that hangs
    at the end then fails the run, resumable, instead of holding the command for ever."""
    done = ray.get(handles.coordinator.finish.remote(), timeout=timeout_s)
    # best effort: a cache that misses this run's prefix only costs the next run its speed
    with contextlib.suppress(ray.exceptions.RayError):
        ray.get([r.close.remote() for r in handles.readers or [handles.market_data]], timeout=10)
    summary = ray.get(handles.coordinator.summary.remote())
    stats, unavailable = agent_stats(handles, skip=summary.get("quarantined", {}))
    summary["cache"] = cache_stats(stats, unavailable)
    summary["llm"] = llm_summary(stats)
    sink_stats = ray.get(handles.sink.stats.remote())
    result = RunResult(handles.run_id, summary, steps, wall_s, handles.storage_root, sink_stats)
    result.unacked_rows = int(done["unacked_rows"])
    return result


class RunFailed(RuntimeError):
    """A run that stopped before its end; its checkpoints are intact (``--resume``), unless
    the data itself gave it nothing to run (``resumable`` False: a resume would find the
    same)."""

    def __init__(self, run_id: str, cause: str, *, resumable: bool = True) -> None:
        self.resumable = resumable
        if not resumable:
            super().__init__(f"run {run_id} stopped: {cause}")
            return
        super().__init__(
            f"run {run_id} stopped: {cause}; what was checkpointed is kept: fix the cause, "
            f"then continue with --resume {run_id}"
        )
        self.run_id = run_id


def run_system(
    config: SystemConfig,
    *,
    run_id: str | None = None,
    on_step: Callable[[Any], None] | None = None,
    resume: bool = False,
    on_console: Callable[[str], None] | None = None,
) -> RunResult:
    """The main job; ``resume`` continues run ``run_id`` from its actors' checkpoints;
    ``on_console`` gets the live console's URL (default: printed)."""
    run_id = check_run_id(run_id or config.run_id or default_run_id())
    # the cost table's prices, read at the end: a mistyped profile is refused now, not
    # after the whole run (which then lost its summary)
    cost.load_prices(cost.resolve_prices_file(config.cost.prices_file), config.cost.profile)
    claim = check_run_start(config, run_id, resume=resume)  # a refusal needs no Ray
    try:
        return _run_started(config, run_id, on_step, resume, on_console)
    finally:  # the run id is free again (for --resume), whatever happened
        release_claim(claim)


def _run_started(
    config: SystemConfig,
    run_id: str,
    on_step: Callable[[Any], None] | None,
    resume: bool,
    on_console: Callable[[str], None] | None,
) -> RunResult:
    started_ray = ensure_ray(config)
    try:
        handles = start_system(config, run_id, resume=resume, checked=True)
    except BaseException:
        if started_ray:  # end only what this call started
            ray.shutdown()
        raise
    try:
        start_console(config, handles, on_console)
    except Exception:  # a console that cannot listen (a port in use): the run does not start
        shutdown_system(handles)
        raise
    started = time.perf_counter()
    try:
        first = int(ray.get(handles.coordinator.next_step.remote())) if resume else 0
        steps = drive(
            handles,
            start_step=first,
            on_step=on_step,
            step_timeout_s=config.ray.step_timeout_s,
            batch_s=config.ray.drive_batch_s,
        )
        # the last flush bounded as steps are (a few steps' worth: it commits the rest)
        bound = config.ray.step_timeout_s * 4 or None
        result = finish(handles, steps, time.perf_counter() - started, bound)
        result.store = store_location(config)
    except (ray.exceptions.RayError, TimeoutError) as exc:
        # an actor's step failed for good (a full disk, a checkpoint store gone): the run
        # stops at its last checkpoint, from which --resume continues once the cause is fixed
        shutdown_system(handles)
        # no market event at all: the data config's error, nothing a resume could continue
        resumable = not isinstance(getattr(exc, "cause", None), NoEventsError)
        raise RunFailed(run_id, root_cause(exc), resumable=resumable) from None
    quarantined = result.summary.get("quarantined", {})
    hung = sorted({cost.actor_key(s.leaf) for s in config.agents if s.id in quarantined})
    try:
        result.cost = cost.measure_system(
            handles, result.wall_s, config.cost.prices_file, config.cost.profile, skip=hung
        )
    except cost.CostError as exc:  # the table changed during the run: the run stands
        log.warning("no cost table: %s", exc)
    shutdown_system(handles)
    return result


def shutdown_system(handles: SystemHandles) -> None:
    if handles.console is not None:
        handles.console.stop()
        handles.console = None
    # a sink that is already gone has nothing to stop
    with contextlib.suppress(ray.exceptions.RayError):
        ray.get(handles.sink.close.remote(), timeout=10)
    for actor in handles.actors():
        ray.kill(actor, no_restart=True)
