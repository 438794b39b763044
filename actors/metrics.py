"""Every Sapphire metric, defined once, exported through Ray's own metrics agent.

Why ``ray.util.metrics`` and not ``prometheus_client``: an actor runs in a Ray worker process
that can be placed on any node and restarted anywhere; ``prometheus_client`` would need an HTTP
port per worker process and a service discovery that follows them. Ray's metrics are recorded
in-process and shipped to the node's metrics agent, which serves one Prometheus endpoint per
node (``ray_`` is prefixed to every name; Ray writes a scrape config under
``/tmp/ray/session_latest/metrics/``). So the same call works in the driver, in every actor and
in Serve replicas, with nothing to open.

Recording is a no-op where Ray is not initialised (pure unit tests, the backtest CLI), so a
call site never needs a guard. Metric objects are created lazily, once per process.

Use: plain functions (``observe_latency``, ``set_position``, ...) or the stateful publishers
``StepMetrics`` (in the coordinator: outputs, orders, reports, summary) and ``SinkMetrics`` (in
the storage sink), which turn cumulative totals into counter increments. Serving them on
loopback and finding the endpoint: ``actors.metrics_export``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Protocol

import msgspec

# Names as defined here; Prometheus sees them with Ray's ``ray_`` prefix.
SIGNALS = "hft_signals_generated_total"
ORDER_EXECUTIONS = "hft_order_executions_total"
LATENCY = "hft_latency_seconds"
SPREAD_BPS = "market_making_spread_bps"
POSITION = "hft_position_lots"
PNL = "hft_pnl_quote"
FIRM_PNL = "hft_firm_pnl_quote"
DAILY_PNL = "hft_daily_pnl_quote"
FIRM_DAILY_PNL = "hft_firm_daily_pnl_quote"
LOSS_LIMIT = "hft_daily_loss_limit_quote"
RISK_REJECTIONS = "hft_risk_rejections_total"
KILL_SWITCH = "hft_kill_switch_state"
MARKET_EVENTS = "hft_market_events_total"
CACHE_REQUESTS = "hft_cache_requests_total"
SINK_LAG = "hft_sink_lag_seconds"
SINK_BUFFERED = "hft_sink_buffered_rows"
SINK_ROWS = "hft_sink_rows_total"
SINK_FLUSH_ERRORS = "hft_sink_flush_errors_total"
LLM_LATENCY = "hft_llm_latency_seconds"
LLM_BATCH = "hft_llm_batch_size"
LLM_TIMEOUTS = "hft_llm_timeouts_total"
LLM_DECISIONS = "hft_llm_decisions_total"
LLM_TOKENS = "hft_llm_tokens_total"
LLM_QUEUE_WAIT = "hft_llm_queue_wait_seconds"
LLM_COST = "hft_llm_cost_total"
LLM_BEFORE_CUTOFF = "hft_llm_before_cutoff_total"

PROMETHEUS_PREFIX = "ray_"
STAGES = ("feed", "signal", "risk", "exchange_ack", "storage", "step")
LATENCY_BOUNDARIES = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]
LATENCY_BOUNDARIES += [0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
LLM_LATENCY_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
FIRM = "firm"  # the agent label of firm-wide values (loss limit)

# name -> (kind, description, tag keys, histogram boundaries)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    SIGNALS: ("counter", "Agent outputs (signals, order intents)", ("agent", "symbol"), None),
    ORDER_EXECUTIONS: (
        "counter",
        "Orders submitted and execution reports by status (submitted, accepted, fill, ...)",
        ("agent", "symbol", "side", "status"),
        None,
    ),
    LATENCY: ("histogram", "Latency by pipeline stage", ("stage",), LATENCY_BOUNDARIES),
    SPREAD_BPS: ("gauge", "Market maker's quoted spread (bps of mid)", ("agent", "symbol"), None),
    POSITION: ("gauge", "Net position in lots", ("agent", "symbol"), None),
    PNL: (
        "gauge",
        "Realised - fees + unrealised PnL in the instrument's settlement asset (label asset)",
        ("agent", "symbol", "asset"),
        None,
    ),
    FIRM_PNL: (
        "gauge",
        "The firm's PnL in its own currency, every asset converted (what its loss limit binds)",
        (),
        None,
    ),
    DAILY_PNL: (
        "gauge",
        "An agent's PnL since the risk engine's UTC day started, per settlement asset (what "
        "its daily loss limit reads)",
        ("agent", "asset"),
        None,
    ),
    FIRM_DAILY_PNL: (
        "gauge",
        "The firm's PnL since the UTC day started, in its currency (its daily limit reads it)",
        (),
        None,
    ),
    LOSS_LIMIT: ("gauge", "Daily loss limit (quote); agent=firm: firm-wide", ("agent",), None),
    RISK_REJECTIONS: ("counter", "Pre-trade and venue rejections", ("reason",), None),
    KILL_SWITCH: ("gauge", "1 while the kill switch is tripped", (), None),
    MARKET_EVENTS: ("counter", "Market events processed", (), None),
    CACHE_REQUESTS: ("counter", "Cache lookups by level and result", ("level", "result"), None),
    SINK_LAG: ("gauge", "Age of the oldest uncommitted row (s)", (), None),
    SINK_BUFFERED: ("gauge", "Rows buffered, not yet committed", (), None),
    SINK_ROWS: ("counter", "Rows accepted by the storage sink", ("table",), None),
    SINK_FLUSH_ERRORS: ("counter", "Failed storage flushes", (), None),
    LLM_LATENCY: ("histogram", "LLM batch latency (s)", (), LLM_LATENCY_BOUNDARIES),
    LLM_BATCH: ("histogram", "LLM batch size (requests)", (), [float(b) for b in BATCH_BOUNDARIES]),
    LLM_TIMEOUTS: ("counter", "LLM requests that timed out", (), None),
    LLM_DECISIONS: (
        "counter",
        "LLM decisions by outcome (ok, cache_hit, timeout, malformed_json, lookahead, ...)",
        ("outcome",),
        None,
    ),
    LLM_TOKENS: ("counter", "LLM tokens by kind (prompt, completion)", ("kind",), None),
    LLM_QUEUE_WAIT: (
        "histogram",
        "Time a request waited in the replica for its batch (s)",
        (),
        LLM_LATENCY_BOUNDARIES,
    ),
    LLM_COST: ("counter", "LLM CPU/GPU time at the run's price table", ("currency",), None),
    LLM_BEFORE_CUTOFF: (
        "counter",
        "LLM decisions about events before the model's knowledge cutoff",
        (),
        None,
    ),
}


def exported_name(name: str) -> str:
    """The name Prometheus scrapes for a metric defined here."""
    return PROMETHEUS_PREFIX + name


class Recorder(Protocol):
    def record(self, name: str, value: float, tags: Mapping[str, str]) -> None: ...


RUN_TAG = "run_id"


def _run_of_process() -> str:
    """The run this process's actor belongs to: run actors are named ``<run_id>:<kind>``
    (``actors.system``). "" in a driver, a Serve replica (shared by the runs of a cluster)
    or an unnamed actor."""
    import ray

    try:
        name = ray.get_runtime_context().get_actor_name() or ""
    except Exception:  # not in a worker, or a context without actors
        return ""
    if "::" in name:  # SERVE_REPLICA::app#deployment#id and Ray's own actors
        return ""
    run, sep, _ = name.partition(":")
    return run if sep else ""


class RayRecorder:
    """Creates each ``ray.util.metrics`` object on first use in this process. Every series
    carries ``run_id``: two runs on one cluster (a paper run beside a live one) were one
    series per agent name, their positions and PnL summed or overwriting each other."""

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._pid = os.getpid()
        self._run: str | None = None  # read once per process, on the first record

    def _metric(self, name: str) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            from ray.util import metrics as ray_metrics

            kind, description, tag_keys, boundaries = DEFINITIONS[name]
            tag_keys = (*tag_keys, RUN_TAG)
            if kind == "counter":
                metric = ray_metrics.Counter(name, description, tag_keys=tag_keys)
            elif kind == "gauge":
                metric = ray_metrics.Gauge(name, description, tag_keys=tag_keys)
            elif boundaries is not None:
                metric = ray_metrics.Histogram(
                    name, description, boundaries=boundaries, tag_keys=tag_keys
                )
            else:
                raise ValueError(f"metric {name!r}: a {kind} needs bucket boundaries")
            self._metrics[name] = metric
        return metric

    def _series(self, name: str, tags: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
        """The metric object of ``name`` in this process and ``tags`` with the run's."""
        if os.getpid() != self._pid:  # a forked child must not reuse the parent's objects
            self._metrics.clear()
            self._pid = os.getpid()
            self._run = None
        if self._run is None:
            self._run = _run_of_process()
        return self._metric(name), {**tags, RUN_TAG: self._run}

    def record(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        import ray

        if not ray.is_initialized():
            return
        metric, tagged = self._series(name, tags)
        kind = DEFINITIONS[name][0]
        if kind == "counter":
            if value > 0:
                metric.inc(value, tags=tagged)
        elif kind == "gauge":
            metric.set(value, tags=tagged)
        else:
            metric.observe(value, tags=tagged)

    def observer(self, name: str, tags: Mapping[str, str]) -> Callable[[float], None] | None:
        """``record(name, value, tags)`` for one histogram series, bound once (None outside
        Ray): the checks, the tag merge and Ray's own tag validation that every ``observe``
        repeats (~2 of its ~4 us; six a step in the coordinator) are done here, and a value
        goes straight to Ray's recorder. Where Ray's internals differ from 2.60's, the
        public ``observe`` with the merged tags."""
        import ray

        if DEFINITIONS[name][0] != "histogram" or not ray.is_initialized():
            return None
        metric, tagged = self._series(name, tags)
        try:
            if metric._discard_metric:
                return _discard
            final = metric._get_final_tags(tagged)
            metric._validate_tags(final)
            return functools.partial(metric._metric.record, tags=final)
        except AttributeError:
            return functools.partial(metric.observe, tags=tagged)


def _discard(value: float) -> None:
    """What a metric Ray discards records (its name is not valid)."""


_recorder: Recorder = RayRecorder()


def set_recorder(recorder: Recorder) -> Recorder:
    """Swap where values go (tests of the translation logic); returns the previous one."""
    global _recorder
    previous, _recorder = _recorder, recorder
    return previous


def _rec(name: str, value: float, **tags: str) -> None:
    _recorder.record(name, value, tags)


# -- plain-value API ------------------------------------------------------------------------
def observe_latency(stage: str, seconds: float) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown latency stage {stage!r}; one of {STAGES}")
    _rec(LATENCY, seconds, stage=stage)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """``with metrics.timed("feed"): batch = await ...`` records the block's wall time."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_latency(stage, time.perf_counter() - started)


def set_position(agent: str, symbol: str, lots: int) -> None:
    _rec(POSITION, lots, agent=agent, symbol=symbol)


def set_pnl(agent: str, symbol: str, pnl_quote: Decimal | float | str, asset: str) -> None:
    # Decimal is the money type; a float is fine at the observability edge only. The asset
    # label keeps a coin PnL (inverse, coin-settled) from being added to a USDT one.
    _rec(PNL, float(Decimal(str(pnl_quote))), agent=agent, symbol=symbol, asset=asset)


def set_firm_pnl(pnl_quote: Decimal | float | str) -> None:
    _rec(FIRM_PNL, float(Decimal(str(pnl_quote))))


def set_daily_pnl(agent: str, asset: str, pnl: Decimal | float | str) -> None:
    _rec(DAILY_PNL, float(Decimal(str(pnl))), agent=agent, asset=asset)


def set_firm_daily_pnl(pnl: Decimal | float | str) -> None:
    _rec(FIRM_DAILY_PNL, float(Decimal(str(pnl))))


def set_loss_limit(agent: str, limit_quote: Decimal | float | str) -> None:
    _rec(LOSS_LIMIT, float(Decimal(str(limit_quote))), agent=agent)


def record_risk_rejection(reason: str, n: int = 1) -> None:
    _rec(RISK_REJECTIONS, n, reason=reason)


def set_kill_switch(on: bool) -> None:
    _rec(KILL_SWITCH, 1.0 if on else 0.0)


def record_cache(level: str, hits: int = 0, misses: int = 0) -> None:
    _rec(CACHE_REQUESTS, hits, level=level, result="hit")
    _rec(CACHE_REQUESTS, misses, level=level, result="miss")


def set_sink_state(lag_s: float, buffered_rows: int) -> None:
    _rec(SINK_LAG, lag_s)
    _rec(SINK_BUFFERED, buffered_rows)


def record_sink_rows(table: str, n: int) -> None:
    _rec(SINK_ROWS, n, table=table)


def record_sink_flush_errors(n: int = 1) -> None:
    _rec(SINK_FLUSH_ERRORS, n)


def observe_llm(latency_s: float, batch_size: int) -> None:
    _rec(LLM_LATENCY, latency_s)
    _rec(LLM_BATCH, batch_size)


def record_llm_timeout(n: int = 1) -> None:
    _rec(LLM_TIMEOUTS, n)


def record_llm_decision(
    *,
    outcome: str,
    latency_s: float,
    queue_wait_s: float,
    batch_size: int,
    prompt_tokens: int,
    completion_tokens: int,
    cache_hit: bool,
    cost: Decimal,
    cost_currency: str,
    before_cutoff: bool,
) -> None:
    """One stored LLM decision. Latency, batch and queue wait are observed only for answers
    that came from the model (a cache hit or a refusal has none to observe)."""
    _rec(LLM_DECISIONS, 1, outcome=outcome)
    if batch_size > 0 and not cache_hit:
        observe_llm(latency_s, batch_size)
        _rec(LLM_QUEUE_WAIT, queue_wait_s)
    _rec(LLM_TOKENS, prompt_tokens, kind="prompt")
    _rec(LLM_TOKENS, completion_tokens, kind="completion")
    if cost > 0:
        _rec(LLM_COST, float(cost), currency=cost_currency or "unknown")
    if outcome == "timeout":
        record_llm_timeout()
    if before_cutoff:
        _rec(LLM_BEFORE_CUTOFF, 1)


# -- derived values -------------------------------------------------------------------------
def quoted_spread_bps(bid_ticks: int, ask_ticks: int) -> float | None:
    """Spread of a two-sided quote in bps of its mid; None for a crossed or empty quote.
    Ticks cancel out in the ratio, so no instrument is needed."""
    if bid_ticks <= 0 or ask_ticks <= bid_ticks:
        return None
    return (ask_ticks - bid_ticks) / ((ask_ticks + bid_ticks) / 2) * 1e4


def _label(value: Any) -> str:
    """An enum as a label: its name (``Side`` is an IntEnum: BUY=1), lower case."""
    name = getattr(value, "name", None)
    return (name if isinstance(name, str) else str(value)).lower()


class _Deltas:
    """Turns cumulative totals into counter increments (a counter only goes up)."""

    def __init__(self) -> None:
        self._last: dict[Any, float] = {}

    def delta(self, key: Any, total: float) -> float:
        previous = self._last.get(key, 0.0)
        self._last[key] = total
        # a total that went down means its owner restarted from zero: count it afresh
        return total - previous if total >= previous else total


class StepMetrics:
    """The coordinator's publisher: one call per step stage, plus the run summary.

    Counter increments and gauge values are held here and published by ``flush`` (each run
    summary, once a second, calls it; so do the ends of the coordinator's batches of steps):
    a Ray record costs ~3-6 us a call (its tag checks and C++ recorder), and four to ten of
    them a step were about half of the coordinator's ~100 us of metrics a step on 2 cores, CPU
    the agents' round needs. Ray exports every few seconds anyway. The latency histograms are
    observed at once (a held observation costs the same when it is published), each through
    an observer bound once per series (``RayRecorder.observer``)."""

    def __init__(self, summary_interval_s: float = 1.0, max_tracked_orders: int = 100_000) -> None:
        self._sides: dict[str, tuple[str, str]] = {}  # client_order_id -> (side, symbol)
        self._max_tracked = max_tracked_orders
        self._totals = _Deltas()
        self._summary_interval_s = summary_interval_s
        self._last_summary = float("-inf")
        # (metric, tag values in DEFINITIONS' order) -> increment since the last flush / value
        self._counts: dict[tuple[str, ...], float] = {}
        self._gauges: dict[tuple[str, ...], float] = {}
        # stage -> its latency series' observer, bound once (``RayRecorder.observer``), for
        # the recorder they were bound to
        self._observers: dict[str, Callable[[float], None]] = {}
        self._observers_of: Recorder | None = None

    def _inc(self, name: str, n: float, *tags: str) -> None:
        key = (name, *tags)
        self._counts[key] = self._counts.get(key, 0) + n

    def _set(self, name: str, value: float, *tags: str) -> None:
        self._gauges[(name, *tags)] = value

    def flush(self) -> None:
        """Publishes the held counter increments and gauge values."""
        counts, self._counts = self._counts, {}
        gauges, self._gauges = self._gauges, {}
        for held in (counts, gauges):
            for (name, *values), value in held.items():
                _recorder.record(name, value, dict(zip(DEFINITIONS[name][2], values, strict=True)))

    def on_limits(self, risk: Any, agent_ids: Iterable[str]) -> None:
        """Loss limits as gauges (the "loss limit near" alert divides PnL by them)."""
        set_loss_limit(FIRM, risk.max_firm_daily_loss_quote)
        for agent_id in agent_ids:
            set_loss_limit(agent_id, risk.for_agent(agent_id).max_daily_loss_quote)

    def on_outputs(self, outputs: Mapping[str, Sequence[Any]]) -> None:
        for agent_id, items in outputs.items():
            counts: dict[str, int] = {}
            bid: dict[str, int] = {}
            ask: dict[str, int] = {}
            for item in items:
                name = type(item).__name__
                if name not in ("Signal", "OrderIntent"):
                    continue
                counts[item.symbol] = counts.get(item.symbol, 0) + 1
                limit = getattr(item, "limit_ticks", None)
                if name == "OrderIntent" and limit is not None:
                    book = bid if _label(item.side) == "buy" else ask
                    book[item.symbol] = limit  # the latest quote of the batch wins
            for symbol, n in counts.items():
                self._inc(SIGNALS, n, agent_id, symbol)
            for symbol in bid.keys() & ask.keys():
                spread = quoted_spread_bps(bid[symbol], ask[symbol])
                if spread is not None:
                    self._set(SPREAD_BPS, spread, agent_id, symbol)

    def on_commands(self, commands: Iterable[Any]) -> None:
        for command in commands:
            if type(command).__name__ != "SubmitOrder":
                continue
            side = _label(command.side)
            if len(self._sides) >= self._max_tracked:
                self._sides.pop(next(iter(self._sides)))  # oldest first; bounded memory
            self._sides[command.client_order_id] = (side, command.symbol)
            self._inc(ORDER_EXECUTIONS, 1, command.agent_id, command.symbol, side, "submitted")

    def on_reports(self, reports: Iterable[Any]) -> None:
        for report in reports:
            name = type(report).__name__
            if name == "OrderFilled":
                fill = (report.agent_id, report.symbol, _label(report.side), "fill")
                self._inc(ORDER_EXECUTIONS, 1, *fill)
                continue
            if name != "OrderUpdate":
                continue
            status = _label(report.status)
            side, _ = self._sides.get(report.client_order_id, ("unknown", report.symbol))
            if status == "filled" and report.message.startswith("crossed internally"):
                # the firm's own final of an order crossed whole: never sent to the venue,
                # so not one of the fill rate's orders (it read 1 filled of 0 submitted)
                status = "filled_internally"
            self._inc(ORDER_EXECUTIONS, 1, report.agent_id, report.symbol, side, status)
            if status == "rejected" and report.reason is not None:
                self._inc(RISK_REJECTIONS, 1, _label(report.reason))
            if status in ("filled", "canceled", "rejected", "expired"):
                self._sides.pop(report.client_order_id, None)

    def on_step(
        self,
        progress: Any,
        outputs: Mapping[str, Sequence[Any]] | None = None,
        commands: Iterable[Any] = (),
        reports: Iterable[Any] = (),
    ) -> None:
        """One call per step: ``progress`` is the ``StepProgress`` of the step (``events``,
        ``kill_switch``, ``stage_s`` = seconds per stage; a mapping with those keys also
        does); ``outputs`` the agents' outputs, ``commands`` the routed commands,
        ``reports`` the execution reports."""
        if not isinstance(progress, Mapping):
            progress = msgspec.structs.asdict(progress)
        stages: Mapping[str, float] = progress.get("stage_s") or {}
        for stage, seconds in stages.items():
            if stage in STAGES:
                self._observe(stage, seconds)
        if stages and "step" not in stages:
            self._observe("step", sum(stages.values()))
        self._inc(MARKET_EVENTS, int(progress.get("events", 0)))
        self._set(KILL_SWITCH, 1.0 if progress.get("kill_switch", False) else 0.0)
        if outputs:
            self.on_outputs(outputs)
        self.on_commands(commands)
        self.on_reports(reports)

    def _observe(self, stage: str, seconds: float) -> None:
        """One step's latency of ``stage``, through its bound observer where the recorder
        binds one (Ray's), else as ``observe_latency``."""
        if self._observers_of is not _recorder:  # swapped (tests): bind afresh
            self._observers, self._observers_of = {}, _recorder
        observe = self._observers.get(stage)
        if observe is None:
            bind = getattr(_recorder, "observer", None)
            bound = bind(LATENCY, {"stage": stage}) if bind is not None else None
            if bound is None:  # outside Ray, or a recorder that binds none: each call checks
                observe_latency(stage, seconds)
                return
            observe = self._observers[stage] = bound
        observe(seconds)

    def summary_due(self, now_s: float | None = None) -> bool:
        now_s = time.monotonic() if now_s is None else now_s
        return now_s - self._last_summary >= self._summary_interval_s

    def on_summary(self, summary: Mapping[str, Any], now_s: float | None = None) -> None:
        """The dict ``CoordinatorActor.summary`` returns: positions, PnL, the coordinator's
        risk rejections (cumulative there, so published as increments) and the kill switch."""
        self._last_summary = time.monotonic() if now_s is None else now_s
        self.flush()  # the steps' held figures first: the summary's own are newer
        for key, row in summary.get("agents", {}).items():
            agent_id, _, symbol = key.partition("/")
            set_position(agent_id, symbol, int(row["position_lots"]))
            set_pnl(agent_id, symbol, row["pnl_quote"], str(row.get("unit", "")))
        if "firm_pnl_quote" in summary:
            set_firm_pnl(summary["firm_pnl_quote"])
        daily = summary.get("daily_pnl", {})
        for agent_id, by_asset in daily.get("agents", {}).items():
            for asset, pnl in by_asset.items():
                set_daily_pnl(agent_id, asset, pnl)
        if "firm" in daily:
            set_firm_daily_pnl(daily["firm"])
        for reason, total in summary.get("risk_rejections", {}).items():
            record_risk_rejection(reason, int(self._totals.delta(("risk", reason), total)))
        set_kill_switch(bool(summary.get("kill_switch", False)))


class SinkMetrics:
    """The storage sink's publisher: rows per table on write, lag and errors on each call."""

    def __init__(self) -> None:
        self._totals = _Deltas()

    def on_write(self, accepted: Mapping[str, int]) -> None:
        """Rows the sink accepted, per table (repeats of stored rows are not counted)."""
        for table, n in accepted.items():
            if n:
                record_sink_rows(table, n)

    def on_state(self, sink: Any, now_ns: int) -> None:
        """``sink`` is a ``sapphire.storage.sink.StorageSink``; lag is the age of its oldest
        buffered row (0 when everything is committed)."""
        oldest = getattr(sink, "oldest_buffered_ns", getattr(sink, "_oldest_ns", None))
        lag_s = max(0.0, (now_ns - oldest) / 1e9) if oldest is not None else 0.0
        set_sink_state(lag_s, int(sink.buffered))
        errors = self._totals.delta("flush_errors", sink.stats.flush_errors)
        if errors:
            record_sink_flush_errors(int(errors))


class CacheMetrics:
    """Publishes per-level hits and misses from cumulative stats (``TieredCache.stats``)."""

    def __init__(self) -> None:
        self._totals = _Deltas()

    def on_stats(self, stats: Mapping[str, Any]) -> None:
        for level, s in stats.items():
            hits = self._totals.delta((level, "hit"), s.hits)
            misses = self._totals.delta((level, "miss"), s.misses)
            record_cache(level, int(hits), int(misses))
