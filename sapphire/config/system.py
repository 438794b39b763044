"""The whole-system config (``sapphire run --config FILE``): typed, validated, clear errors.

YAML is decoded straight into frozen msgspec structs that reject unknown fields, so a typo
("max_postion_lots") is an error naming the path, never a silently ignored key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
import yaml

from sapphire.config.kind import wrong_kind
from sapphire.config.ops import CostConfig, MetricsConfig
from sapphire.config.redis import RedisConfig
from sapphire.config.secrets import SecretError, check_no_secret_keys
from sapphire.config.yaml_text import describe, load_yaml
from sapphire.llm.app_args import LlmAppArgs
from sapphire.risk.limits import RiskLimits

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]


# a run's folder sits beside the Parquet store's (``<storage.root>/store``) and the firm kill
# switch's files (``kill-switch.json``, ``.log``): none of them may be a run id
RunId = Annotated[
    str,
    msgspec.Meta(pattern=r"^(?!\.{1,2}$|store$|kill-switch\.(json|log)$)[A-Za-z0-9_.-]{0,100}$"),
]


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is safe as a folder name and a key; else a one-line ConfigError."""
    try:
        return msgspec.convert(run_id, RunId)
    except msgspec.ValidationError:
        raise ConfigError(
            f"run id {run_id!r}: use 1-100 letters, digits, '.', '_' or '-' (it names folders; "
            "'store', 'kill-switch.json' and 'kill-switch.log' name the store root's own)"
        ) from None


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


def _spot_only() -> dict[str, Any]:
    # ccxt's binance would otherwise load futures and margin markets too
    return {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}


class LiveDataConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Live market data through ccxt.pro websockets (public streams: no credentials).

    ``queue_size`` bounds the events waiting for the next batch; beyond it the oldest ticks
    are conflated away and counted. ``max_wait_s`` is how long a step waits for a first event.
    """

    exchange_id: str = "binance"
    api_urls: dict[str, Any] = msgspec.field(default_factory=dict)
    options: dict[str, Any] = msgspec.field(default_factory=_spot_only)
    books: bool = False
    book_depth: PositiveInt = 20
    queue_size: PositiveInt = 100_000
    max_wait_s: NonNegFloat = 1.0
    # A symbol with no event for this long (wall time), or a feed stopped for good, trips
    # the firm's kill switch (its orders are cancelled): the agents would otherwise trade
    # on the last book while the venue moves. 0 = never.
    max_silence_s: NonNegFloat = 60.0


class VenueSource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One venue's recordings in a cross-venue replay (``data.source: venues``).

    Its symbols become ``<venue>:<symbol>`` (``BYBIT:BTCUSD``), in the events, the
    instruments, the agents' ``symbol`` and the store, so two venues' ``BTCUSDT`` never
    collide. ``format``, when set, must be the format the files are detected as (a guard
    against naming the wrong file).
    """

    venue: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    files: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)]
    instrument_files: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)]
    format: str = ""


class DataConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where market events come from. ``source: sample`` is the bundled BTCUSDT slice;
    ``ccxt`` streams live (``live``), with instruments from ``instrument_files``;
    ``venues`` merges several venues' recordings (``venues``) on ``clock``."""

    source: Literal["sample", "files", "ccxt", "venues"] = "sample"
    # source: venues: one entry per venue, merged into one replay on ``clock`` (ties: the
    # order received, then the order of the entries; each file keeps its own order)
    venues: tuple[VenueSource, ...] = ()
    live: LiveDataConfig = LiveDataConfig()
    files: tuple[str, ...] = ()
    instrument_files: tuple[str, ...] = ()
    # The run's one clock: the exchange's own time (ts_event_ns) or the recorder's receive
    # time (ts_recv_ns). The venue, the agents and every latency use it (sapphire.kernel).
    clock: Literal["exchange", "receive"] = "exchange"
    # A step is a window of market time: 0 = the lookahead min(entry_ns, response_ns) of
    # exchange.params.latency, the longest window whose outcome is exact. Longer windows
    # are refused unless ``approximate`` is set (then the summary says so).
    window_ns: NonNegInt = 0
    approximate: bool = False
    # at most this many events per window (memory and latency knob; the outcome is the same;
    # a depth message's levels are one event here)
    batch_events: PositiveInt = 20_000
    # stop after this many recorded rows (a depth message counts its levels; a book snapshot,
    # one instant of the whole book, counts one)
    max_events: PositiveInt | None = None
    # A slice of the data on the run's clock: events before ``start_ns`` only build the
    # venue's book (agents and risk see nothing before it); events from ``end_ns`` on are not
    # read. ``sapphire tune`` exports its windows this way.
    start_ns: int | None = None
    end_ns: int | None = None
    # Recording sessions to replay (the files' ``session`` labels, e.g. "2024-08-08"); empty:
    # all. Other sessions' rows are read as columns and counted, never made into events: a
    # file packing several days costs little more than the day replayed.
    sessions: tuple[str, ...] = ()
    # Sessions replayed back to back further apart than this are refused: one run over a
    # day of 2023 and one of 2024 carried its positions, marks and agents' state across 15
    # months (a position marked at 28,140 then at 63,944: +1,413 USDT of gap as PnL).
    # Consecutive days of a recorder are seconds apart; 0 = any gap (a memory benchmark).
    max_session_gap_s: NonNegFloat = 3600.0
    speed: NonNegFloat = 0.0  # 0 = as fast as possible; 1.0 = recorded pace
    # Most venues' recordings carry depth and no book-ticker channel, and agents that price
    # off the touch read quotes: they never traded on them. ``auto``: a symbol no file of
    # the run quotes gets a quote from its recorded book (the venue's book and sync rule)
    # whenever its best bid or ask moves, at the depth message's time, only while the book
    # is in sync; the summary counts them. ``off``: the recorded events only.
    derived_quotes: Literal["auto", "off"] = "auto"
    # Recorded files' checked event streams are kept converted (msgpack + lz4) after their
    # first read, and the next run of the same file, instruments and sessions reads them
    # back instead of the CSV: the same events and rejection counts, ~4.5x faster to load
    # (merged replay of the hftbacktest comparison: 1.45 M events/s against 0.29-0.34 M).
    # ``cache_dir`` empty: $SAPPHIRE_CACHE_DIR, else ~/.cache/sapphire/replay; oldest-used
    # entries go once the directory passes ``cache_max_mb``.
    cache: bool = True
    cache_dir: str = ""
    cache_max_mb: PositiveInt = 4096


class AgentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.]+$")]
    kind: str
    symbol: str
    weight: NonNegFloat = 1.0
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    num_cpus: NonNegFloat = 0.25
    resources: dict[str, float] = msgspec.field(default_factory=dict)  # Ray custom resources
    # Agents naming the same host share one actor process on Ray (its CPUs and resources are
    # the sum of theirs); empty: an actor of its own. Why share: each leaf of a round costs
    # a wake-up and a message per window (and busy-waits a core with the compiled graph), so
    # on a small machine fewer processes step faster (RESULTS.md). The cost: a hung agent
    # stops its host's other agents too (they are quarantined together), so keep untrusted
    # agents in actors of their own.
    host: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.]*$")] = ""

    @property
    def leaf(self) -> str:
        """The Ray actor this agent runs in: its host, or an actor of its own."""
        return f"agents-{self.host}" if self.host else f"agent-{self.id}"


_RAY_BUILTIN_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


class ShardSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A group of symbols traded through a venue account of its own (the paper exchange's
    ``exchange.params``, balances included, once per shard) by the agents of those symbols.
    Every runner trades a sharded config the same way; on Ray each shard's venue and agent
    actors are actors of their own, placed by ``resources`` (e.g. a node's custom resource),
    while firm-wide risk (capital, daily loss, kill switch) stays in the one coordinator. A
    replay of ``data.source: venues`` whose every venue is in one shard (and not paced) is
    read there too: a market-data actor per shard reads its venues' files, and the
    coordinator merges them into the order one reader gives."""

    symbols: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)]
    # Ray custom resources each of the shard's actors asks for (its venue and agent actors,
    # and its market data where the replay is read by shard)
    resources: dict[str, float] = msgspec.field(default_factory=dict)


class ExchangeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``factory: "package.module:callable"`` plugs in another gateway: it is called with
    this config and the instruments and returns an ``ExecutionGateway``."""

    kind: Literal["paper", "ccxt"] = "paper"
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    factory: str = ""


class StorageConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["parquet", "bigquery"] = "parquet"
    root: str = "runs"
    batch_rows: PositiveInt = 500
    flush_interval_s: NonNegFloat = 1.0
    store_ticks: bool = True
    # PnL rows: one per position at every multiple of this much market time, and at the end
    pnl_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class RayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    address: str | None = None  # None: start a local cluster
    namespace: str = "sapphire"
    num_cpus: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_restarts: int = -1
    max_task_retries: int = -1
    step_timeout_s: NonNegFloat = 60.0
    # Ray custom resources for the coordinator, market-data, execution and sink actors,
    # e.g. {"core": 1} to keep them on nodes that advertise it (a shard that names
    # resources places its execution actor, and its market data where read by shard, by those
    # instead).
    core_resources: dict[str, float] = msgspec.field(default_factory=dict)
    agent_timeout_s: NonNegFloat = 10.0
    # Actors checkpoint at barriers this far apart in wall time (0: every step); a crash
    # replays at most this much from the last barrier. A live venue checkpoints every step.
    checkpoint_interval_s: NonNegFloat = 1.0
    # Steps the coordinator runs per call from the driver, up to this much wall time: the
    # driver's round trip is paid per batch, not per window (progress arrives per batch).
    drive_batch_s: NonNegFloat = 0.25
    # How the coordinator reaches the venue and the agents each window: one Ray Compiled
    # Graph (shared-memory channels, ~10x cheaper a round than calls on 2 cores), Unix
    # sockets (actors.sockets: a waiting leaf sleeps instead of spinning a core; leaves on
    # the coordinator's node, else the compiled graph), or plain actor calls. A failed round
    # reruns that step as plain calls. A live venue always uses calls.
    transport: Literal["calls", "compiled", "sockets"] = "sockets"
    # With the sockets transport: each leaf's round thread (the venues', each agent actor's)
    # is pinned to a CPU of its own on the coordinator's node, round robin over the CPUs the
    # coordinator may use. Unpinned, a request's wake-up pulls the leaves onto the sender's
    # CPU, where they run one after the other (benchmarks/RESULTS.md: the demo on Ray, 2
    # cores, 68-70k -> 73-74k events/s). Off where other work must keep every CPU.
    pin_leaves: bool = True


class KillSwitchConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The firm-wide kill switch lives in ``storage.root``; ``redis: true`` holds it in Redis
    too (the ``redis`` settings), so every machine of the firm reads one switch."""

    redis: bool = False
    redis_key: Annotated[str, msgspec.Meta(min_length=1)] = "sapphire:kill-switch"
    # how often (wall-clock ms) a run reads the firm's and its own switch between steps; 0:
    # before every step. A read is a file check (~1 us) and, with redis, a round trip (~100
    # us): before every ~70 us step of a backtest that was most of its time
    poll_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 10


class ConsoleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The live web console a run serves (``sapphire run`` prints its URL once, token and
    all). Loopback by default: serving it beyond the machine is a deployment's explicit
    choice. ``port: 0`` picks a free port; the token is fresh per run unless the
    ``SAPPHIRE_CONSOLE_TOKEN`` environment variable gives one."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    # how often the page asks for fresh figures
    poll_ms: Annotated[int, msgspec.Meta(ge=100, le=60_000)] = 1000


class CoordinatorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the coordinator does when one agent's order would trade against another agent's
    resting order of the same account (``sapphire.coordination.crossing``):

    * ``venue``: send it; the venue's self-trade prevention (``exchange.params.self_trade``)
      expires one side where a match reaches the account's own resting order (after
      better prices and the market's queue ahead of it), as Binance does for one account;
    * ``internal``: cross the two inside the firm at the resting order's price, with no venue
      and no fee, where that price is at or inside the touch (never worse for the incoming
      order than the venue's); what is left of the incoming order goes on to the venue.
    """

    # venue by default: internal crossing reduces the resting order at the venue (an amend),
    # which only the paper exchange takes; and a default must not change existing runs
    crossing: Literal["venue", "internal"] = "venue"
    # How long (the run's clock) the coordinator keeps an order after it is final, with its
    # fill ids; then it is forgotten and a report about it is ignored as about an unknown
    # order (the counts by status keep it). Why: keeping every order made the coordinator's
    # memory and checkpoints grow with the run. 0: never forget.
    finished_order_memory_s: Annotated[float, msgspec.Meta(ge=0)] = 3600.0


class SystemConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # letters, digits, '.', '_', '-' (a run id names folders and keys: never a path)
    run_id: RunId = ""
    data: DataConfig = DataConfig()
    agents: tuple[AgentSpec, ...] = ()
    risk: RiskLimits = RiskLimits()
    # the firm's capital in the firm's currency (currency), split across agents by weight:
    # a positive number
    capital_quote: Annotated[str, msgspec.Meta(pattern=r"^\d+(\.\d+)?$")] = "100000"
    # the firm's currency, which capital_quote and risk.max_firm_daily_loss_quote are read
    # in: an asset the instruments settle in or quote (USD, USDT, USDC count as one). "":
    # chosen from the instruments (their one settlement asset; else a settled quote,
    # dollars first), which one added instrument moves (a USDC perp beside XBTUSD turned
    # capital_quote 1 from 1 BTC into 1 USDC)
    currency: str = ""
    aggregation: Literal["weighted", "vote"] = "weighted"
    exchange: ExchangeConfig = ExchangeConfig()
    storage: StorageConfig = StorageConfig()
    ray: RayConfig = RayConfig()
    checkpoint_dir: str = ""  # default: <storage.root>/<run_id>/checkpoints
    # the Ray Serve LLM app (actors.serve.llm_app:build_app), started when an agent of kind
    # "llm" is configured; the defaults: the 4-bit SmolLM2 GGUF on llama.cpp (CPU)
    llm: LlmAppArgs = LlmAppArgs()
    metrics: MetricsConfig = MetricsConfig()
    cost: CostConfig = CostConfig()
    redis: RedisConfig = RedisConfig()
    kill_switch: KillSwitchConfig = KillSwitchConfig()
    console: ConsoleConfig = ConsoleConfig()
    coordinator: CoordinatorConfig = CoordinatorConfig()
    # symbol groups, each with its own venue account and agents (an agent sees and trades
    # its own shard's symbols only); [] = one shard of every symbol
    shards: tuple[ShardSpec, ...] = ()

    def __post_init__(self) -> None:
        free_form = (
            ("exchange.params", self.exchange.params),
            ("storage.params", self.storage.params),
        )
        for field, params in free_form:
            try:
                check_no_secret_keys(field, params)
            except SecretError as exc:
                raise ConfigError(str(exc)) from None
        redis_url = self.checkpoint_dir.startswith(("redis://", "rediss://"))
        if redis_url and urlsplit(self.checkpoint_dir).password is not None:
            # recorded in run-config.json, shown in errors, passed to every actor: the
            # store reads the password where redis.password_env says, as the caches do
            raise ConfigError(
                "checkpoint_dir: no password in the URL (it is recorded and shown); set "
                "redis.password_env, which the checkpoint store reads"
            )
        ids = [a.id for a in self.agents]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigError(f"agent ids must be unique; repeated: {duplicates}")
        unknown = sorted(set(self.risk.agents) - set(ids))
        if unknown and ids:
            # a mistyped id: its limits would bind nobody, and that agent runs on the defaults
            raise ConfigError(f"risk.agents: no agent {unknown} in agents (their ids: {ids})")
        if self.data.source == "files" and not self.data.files:
            raise ConfigError("data.source is 'files' but data.files is empty")
        if self.data.files and self.data.source in ("sample", "ccxt"):
            # only source 'files' replays them: the bundled sample (or the live feed) ran
            # instead, without a word, and the user read its results as their files'
            raise ConfigError(
                f"data.files is unused with data.source {self.data.source!r}: set data.source: "
                "files to replay them, or remove data.files"
            )
        for field in ("files", "instrument_files"):
            listed_files = getattr(self.data, field)
            again = sorted({f for f in listed_files if listed_files.count(f) > 1})
            if again:  # a file listed twice was replayed twice: every row of it doubled
                raise ConfigError(f"data.{field}: each file once; repeated: {again}")
        if self.data.source == "venues":
            names = [v.venue for v in self.data.venues]
            if not names:
                raise ConfigError("data.source is 'venues' but data.venues is empty")
            if len(set(names)) != len(names):
                raise ConfigError(f"data.venues: each venue once, got {names}")
            if self.data.files or self.data.instrument_files:
                raise ConfigError(
                    "data.files and data.instrument_files are unused with source 'venues': "
                    "each entry of data.venues names its own"
                )
        elif self.data.venues:
            raise ConfigError(f"data.venues needs data.source: venues, not {self.data.source!r}")
        if not float(self.capital_quote) > 0:
            raise ConfigError(f"capital_quote must be > 0, got {self.capital_quote!r}")
        if self.coordinator.crossing == "internal" and self.exchange.kind != "paper":
            raise ConfigError(
                "coordinator.crossing: 'internal' needs the paper exchange (it amends the "
                f"resting order there); exchange.kind is {self.exchange.kind!r}"
            )
        listed = [s for shard in self.shards for s in shard.symbols]
        twice = sorted({s for s in listed if listed.count(s) > 1})
        if twice:
            raise ConfigError(f"shards: each symbol in one shard; repeated: {twice}")
        if len(self.shards) > 1 and self.exchange.kind == "ccxt" and not self.exchange.factory:
            raise ConfigError("shards: a live venue (exchange.kind: ccxt) runs as one shard")
        for field, wanted in self.custom_resources():
            for name, amount in wanted.items():
                if name in _RAY_BUILTIN_RESOURCES:  # Ray's own: refused only once Ray ran
                    raise ConfigError(
                        f"{field}: {name!r} is Ray's own resource (agents: num_cpus); custom "
                        "resources only here"
                    )
                if not amount > 0:
                    raise ConfigError(f"{field}: {name} must be > 0, got {amount}")
        start, end = self.data.start_ns, self.data.end_ns
        if start is not None and end is not None and end <= start:
            raise ConfigError(f"data.end_ns ({end}) must be after data.start_ns ({start})")

    def custom_resources(self) -> list[tuple[str, dict[str, float]]]:
        """Every Ray custom resource table the config asks for, with its field's name."""
        asked = [("ray.core_resources", dict(self.ray.core_resources))]
        asked += [(f"agents[{a.id}].resources", dict(a.resources)) for a in self.agents]
        asked += [(f"shards[{k}].resources", dict(s.resources)) for k, s in enumerate(self.shards)]
        return asked


def parse_config(raw: dict[str, Any], origin: str = "<dict>") -> SystemConfig:
    try:
        return msgspec.convert(raw, SystemConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_config(path: str | Path) -> SystemConfig:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {describe(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    # another command's file: its first key this struct lacks ("unknown field 'name'") named
    # no mistake; which command runs it does
    misfiled = wrong_kind(raw, str(path), "system")
    if misfiled:
        raise ConfigError(misfiled)
    return parse_config(raw, str(path))
