"""Sapphire metrics: the translation logic (fast), then the real thing — recorded inside a Ray
actor and in a running system, scraped from Ray's live Prometheus endpoint (slow)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import cost, metrics, metrics_export
from sapphire.config.ops import MetricsConfig
from sapphire.model.events import Side
from sapphire.model.orders import (
    OrderFilled,
    OrderIntent,
    OrderStatus,
    OrderUpdate,
    RejectReason,
    Signal,
    SubmitOrder,
)
from tests.actors.metrics_scrape import total, wait_for
from tests.ray_local import init_local

REPO = Path(__file__).resolve().parents[2]
P = metrics.exported_name


class MemoryRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict[str, str]]] = []

    def record(self, name: str, value: float, tags: Any) -> None:
        self.calls.append((name, value, dict(tags)))

    def sum(self, name: str, **tags: str) -> float:
        return sum(
            v for n, v, t in self.calls if n == name and all(t.get(k) == x for k, x in tags.items())
        )

    def last(self, name: str, **tags: str) -> float:
        values = [
            v for n, v, t in self.calls if n == name and all(t.get(k) == x for k, x in tags.items())
        ]
        return values[-1]


@pytest.fixture
def rec() -> Iterator[MemoryRecorder]:
    recorder = MemoryRecorder()
    previous = metrics.set_recorder(recorder)
    yield recorder
    metrics.set_recorder(previous)


def _intent(agent: str, seq: int, side: Side, ticks: int) -> OrderIntent:
    return OrderIntent(
        ts_event_ns=1, agent_id=agent, seq=seq, symbol="BTCUSDT", side=side, qty_lots=2,
        limit_ticks=ticks,
    )  # fmt: skip


def test_every_definition_is_well_formed() -> None:
    for name, (kind, description, tags, boundaries) in metrics.DEFINITIONS.items():
        assert kind in ("counter", "gauge", "histogram"), name
        assert description and name.replace("_", "").isalnum()
        assert (boundaries is not None) == (kind == "histogram"), name
        if boundaries:
            assert boundaries == sorted(boundaries) and boundaries[0] > 0
        assert kind != "counter" or name.endswith("_total"), name
        assert len(set(tags)) == len(tags)


def test_step_metrics_translate_outputs_orders_and_reports(rec: MemoryRecorder) -> None:
    sm = metrics.StepMetrics()
    sm.on_outputs(
        {
            "mm": [_intent("mm", 1, Side.BUY, 99_990), _intent("mm", 2, Side.SELL, 100_010)],
            "mom": [Signal(ts_event_ns=1, agent_id="mom", symbol="BTCUSDT", strength=0.5)],
        }
    )
    assert rec.calls == []  # held until a flush (a Ray record costs the coordinator's step)
    sm.flush()
    assert rec.sum(metrics.SIGNALS, agent="mm", symbol="BTCUSDT") == 2
    assert rec.sum(metrics.SIGNALS, agent="mom") == 1
    assert rec.last(metrics.SPREAD_BPS, agent="mm") == pytest.approx(2.0)
    assert not [c for c in rec.calls if c[0] == metrics.SPREAD_BPS and c[2]["agent"] == "mom"]

    submit = SubmitOrder(
        ts_event_ns=1, client_order_id="mm-1", agent_id="mm", symbol="BTCUSDT", side=Side.SELL,
        qty_lots=2, limit_ticks=100_010,
    )  # fmt: skip
    sm.on_commands([submit])
    sm.flush()
    assert rec.sum(metrics.ORDER_EXECUTIONS, side="sell", status="submitted") == 1
    sm.on_reports(
        [
            OrderUpdate(
                ts_event_ns=2, client_order_id="mm-1", agent_id="mm", symbol="BTCUSDT",
                status=OrderStatus.ACCEPTED, leaves_lots=2,
            ),
            OrderFilled(
                ts_event_ns=3, client_order_id="mm-1", agent_id="mm", symbol="BTCUSDT",
                side=Side.SELL, price_ticks=100_010, qty_lots=2, fee_quote=Decimal("0.01"),
                is_maker=True, fill_id="f1",
            ),
            OrderUpdate(
                ts_event_ns=4, client_order_id="zz-9", agent_id="mm", symbol="BTCUSDT",
                status=OrderStatus.REJECTED, reason=RejectReason.MIN_NOTIONAL,
            ),
        ]
    )  # fmt: skip
    sm.flush()
    assert rec.sum(metrics.ORDER_EXECUTIONS, side="sell", status="accepted") == 1
    assert rec.sum(metrics.ORDER_EXECUTIONS, side="sell", status="fill") == 1
    assert rec.sum(metrics.ORDER_EXECUTIONS, side="unknown", status="rejected") == 1
    assert rec.sum(metrics.RISK_REJECTIONS, reason="min_notional") == 1
    # an order crossed whole inside the firm was never sent: not one of the fill rate's
    # filled orders (it read 1 filled of 0 submitted)
    sm.on_reports(
        [
            OrderUpdate(
                ts_event_ns=5, client_order_id="mm-7", agent_id="mm", symbol="BTCUSDT",
                status=OrderStatus.FILLED, filled_lots=2, message="crossed internally",
            )
        ]
    )  # fmt: skip
    sm.flush()
    assert rec.sum(metrics.ORDER_EXECUTIONS, status="filled") == 0
    assert rec.sum(metrics.ORDER_EXECUTIONS, status="filled_internally") == 1


def test_held_step_figures_sum_until_a_flush_and_the_summary_flushes_them(
    rec: MemoryRecorder,
) -> None:
    sm = metrics.StepMetrics()
    progress = {"events": 7, "kill_switch": False, "stage_s": {"feed": 0.001, "risk": 0.002}}
    for _ in range(3):
        sm.on_step(progress, {"mm": [_intent("mm", 1, Side.BUY, 99_990)]})
    # the latency histograms are observed at once: three steps, three of each
    assert [c[2]["stage"] for c in rec.calls].count("step") == 3
    assert rec.sum(metrics.MARKET_EVENTS) == 0
    sm.on_step({**progress, "kill_switch": True})
    sm.on_summary({"agents": {}})
    # one record per series: the three steps' sum, the gauge's last value
    assert [v for n, v, _ in rec.calls if n == metrics.MARKET_EVENTS] == [28]
    assert [v for n, v, _ in rec.calls if n == metrics.SIGNALS] == [3]
    assert [v for n, v, _ in rec.calls if n == metrics.KILL_SWITCH] == [1.0, 0.0]
    sm.flush()  # nothing held twice
    assert rec.sum(metrics.MARKET_EVENTS) == 28


class BindingRecorder(MemoryRecorder):
    """A recorder that binds an observer per series, as Ray's does."""

    def __init__(self) -> None:
        super().__init__()
        self.bound: list[dict[str, str]] = []

    def observer(self, name: str, tags: Any) -> Any:
        self.bound.append(dict(tags))
        return lambda value: self.record(name, value, {**tags, "via": "observer"})


def test_stage_latencies_go_through_observers_bound_once_per_series() -> None:
    first = BindingRecorder()
    previous = metrics.set_recorder(first)
    try:
        sm = metrics.StepMetrics()
        progress = {"events": 1, "stage_s": {"feed": 0.001, "risk": 0.002, "checkpoint": 0.5}}
        for _ in range(3):
            sm.on_step(progress)
        # feed, risk and the whole step (every lap, the checkpoint's too, which has no series
        # of its own): one binding each, every observation through it
        assert sorted(t["stage"] for t in first.bound) == ["feed", "risk", "step"]
        latency = [(t["stage"], v) for n, v, t in first.calls if n == metrics.LATENCY]
        assert latency.count(("risk", 0.002)) == 3
        assert [v for s, v in latency if s == "step"] == [pytest.approx(0.503)] * 3
        assert all(t["via"] == "observer" for n, _, t in first.calls if n == metrics.LATENCY)
        # a recorder swapped in later gets the next observations, not the old bindings
        second = BindingRecorder()
        metrics.set_recorder(second)
        sm.on_step(progress)
        assert len([c for c in first.calls if c[0] == metrics.LATENCY]) == 9
        assert len([c for c in second.calls if c[0] == metrics.LATENCY]) == 3
    finally:
        metrics.set_recorder(previous)


def test_summary_totals_become_increments_and_survive_a_restart(rec: MemoryRecorder) -> None:
    sm = metrics.StepMetrics()
    row = {"position_lots": -4, "pnl_quote": "-12.5", "unit": "USDT"}
    coin = {"position_lots": 1, "pnl_quote": "-0.002", "unit": "BTC"}
    sm.on_summary(
        {
            "agents": {"mm/BTCUSDT": row, "mm/BTCUSD_PERP": coin},
            "risk_rejections": {"risk_max_position": 3},
            "firm_pnl_quote": "-190.5",
            "daily_pnl": {"agents": {"mm": {"USDT": "-2.5", "BTC": "0.001"}}, "firm": "-30"},
        }
    )
    sm.on_summary({"agents": {}, "risk_rejections": {"risk_max_position": 5}, "kill_switch": True})
    assert rec.sum(metrics.RISK_REJECTIONS, reason="risk_max_position") == 5
    # the coordinator restarted from zero: its new total counts afresh, never negative
    sm.on_summary({"risk_rejections": {"risk_max_position": 1}})
    assert rec.sum(metrics.RISK_REJECTIONS, reason="risk_max_position") == 6
    assert rec.last(metrics.POSITION, agent="mm", symbol="BTCUSDT") == -4
    # each PnL carries its settlement asset: a BTC loss is never read as USDT
    assert rec.last(metrics.PNL, agent="mm", symbol="BTCUSDT", asset="USDT") == -12.5
    assert rec.last(metrics.PNL, agent="mm", symbol="BTCUSD_PERP", asset="BTC") == -0.002
    assert rec.last(metrics.FIRM_PNL) == -190.5  # converted, what the firm's limit binds
    # the day's, which the daily limits read (the run's PnL kept a loss alert on a day after)
    assert rec.last(metrics.DAILY_PNL, agent="mm", asset="USDT") == -2.5
    assert rec.last(metrics.DAILY_PNL, agent="mm", asset="BTC") == 0.001
    assert rec.last(metrics.FIRM_DAILY_PNL) == -30
    assert [v for n, v, _ in rec.calls if n == metrics.KILL_SWITCH] == [0.0, 1.0, 0.0]


def test_latency_stage_is_checked_and_timed(rec: MemoryRecorder) -> None:
    with metrics.timed("risk"):
        pass
    assert rec.calls[0][0] == metrics.LATENCY and rec.calls[0][2] == {"stage": "risk"}
    with pytest.raises(ValueError, match="unknown latency stage"):
        metrics.observe_latency("warp", 1.0)


@given(st.integers(1, 10**9), st.integers(1, 10**6))
def test_quoted_spread_is_positive_and_grows_with_the_gap(bid: int, gap: int) -> None:
    narrow = metrics.quoted_spread_bps(bid, bid + gap)
    wide = metrics.quoted_spread_bps(bid, bid + gap + 1)
    assert narrow is not None and wide is not None and 0 < narrow < wide < 20_000
    assert metrics.quoted_spread_bps(bid + gap, bid) is None


def test_ray_init_options_default_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[bool] = []
    monkeypatch.setattr(metrics_export, "bind_loopback", lambda: called.append(True))
    opts = metrics_export.ray_init_options(MetricsConfig(export_port=9999))
    assert called == [True] and opts["_metrics_export_port"] == 9999
    assert opts["dashboard_host"] == "127.0.0.1"
    metrics_export.ray_init_options(MetricsConfig(host="0.0.0.0"))
    assert called == [True]


# -- live: Ray's metrics endpoint -----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    assert port != 6379
    return port


def _listen_addresses(port: int) -> set[str]:
    """IPv4 addresses listening on ``port`` (from /proc/net/tcp; state 0A is LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        ip_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1]))
    return found


@pytest.fixture(scope="module")
def ray_metrics() -> Iterator[list[str]]:
    import os

    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        ray.shutdown()
    saved_env = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    config = MetricsConfig(export_port=_free_port(), report_interval_ms=500)
    init_local(
        num_cpus=2,
        namespace="metrics-test",
        **metrics_export.ray_init_options(config),
    )
    try:
        yield metrics_export.scrape_targets()
    finally:
        ray.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved_env


@pytest.mark.slow
def test_module_records_inside_an_actor_and_prometheus_sees_it(ray_metrics: list[str]) -> None:
    import ray

    (target,) = ray_metrics
    host, port = target.rsplit(":", 1)
    assert host == "127.0.0.1"
    listening = _listen_addresses(int(port))
    assert listening == {"127.0.0.1"}, f"metrics endpoint must stay on loopback: {listening}"

    @ray.remote(num_cpus=0)
    class Recorder:
        def __init__(self) -> None:
            self.sm = metrics.StepMetrics()

        def go(self, n: int) -> None:
            intents = [_intent("mm", 1, Side.BUY, 99_990), _intent("mm", 2, Side.SELL, 100_010)]
            for _ in range(n):
                self.sm.on_outputs({"mm": intents})
                metrics.observe_latency("signal", 0.003)
                # through the observers StepMetrics binds once per series
                self.sm.on_step({"events": 0, "stage_s": {"risk": 0.0003, "feed": 0.02}})
            self.sm.flush()
            metrics.set_kill_switch(True)
            metrics.observe_llm(0.2, 8)

        def reset(self) -> None:
            metrics.set_kill_switch(False)

    actor = Recorder.remote()
    ray.get(actor.go.remote(3))
    signals = P(metrics.SIGNALS)
    samples = wait_for(ray_metrics, lambda s: total(s, signals, agent="mm") >= 6)
    assert total(samples, signals, agent="mm", symbol="BTCUSDT") == 6
    assert total(samples, P(metrics.LATENCY) + "_count", stage="signal") == 3
    assert total(samples, P(metrics.LATENCY) + "_bucket", stage="signal", le="0.0025") == 0
    assert total(samples, P(metrics.LATENCY) + "_bucket", stage="signal", le="0.005") == 3
    for stage, under, at in (("risk", "0.00025", "0.0005"), ("step", "0.01", "0.025")):
        assert total(samples, P(metrics.LATENCY) + "_count", stage=stage) == 3
        assert total(samples, P(metrics.LATENCY) + "_bucket", stage=stage, le=under) == 0
        assert total(samples, P(metrics.LATENCY) + "_bucket", stage=stage, le=at) == 3
    assert total(samples, P(metrics.SPREAD_BPS), agent="mm") == pytest.approx(2.0)
    assert total(samples, P(metrics.KILL_SWITCH)) == 1
    # an actor that is no run's (unnamed) records with an empty run label
    assert {series.get("run_id") for series, _ in samples[signals]} == {""}
    # Ray 2.60's histogram _sum is built from bucket midpoints: check buckets, not the sum
    assert total(samples, P(metrics.LLM_BATCH) + "_count") == 1
    assert total(samples, P(metrics.LLM_BATCH) + "_bucket", le="4.0") == 0
    assert total(samples, P(metrics.LLM_BATCH) + "_bucket", le="8.0") == 1
    ray.get(actor.go.remote(2))
    samples = wait_for(ray_metrics, lambda s: total(s, signals, agent="mm") >= 10)
    assert total(samples, signals, agent="mm") == 10
    # a dead worker's series stay exported: leave the switch off for the system test
    ray.get(actor.reset.remote())
    ray.kill(actor)


@pytest.mark.slow
def test_running_system_exports_its_metrics(ray_metrics: list[str], tmp_path: Path) -> None:
    """Needs the lead's calls in the coordinator, agent and sink (see the Operations report)."""

    from actors.system import drive, finish, shutdown_system, start_system
    from sapphire.config.system import load_config

    config = load_config(REPO / "configs" / "demo.yaml")
    config = msgspec.structs.replace(
        config,
        data=msgspec.structs.replace(config.data, max_events=20_000),
        storage=msgspec.structs.replace(config.storage, root=str(tmp_path)),
    )
    handles = start_system(config, "metrics-run")
    events, steps = P(metrics.MARKET_EVENTS), P(metrics.LATENCY) + "_count"
    try:
        step = drive(handles, max_steps=3)
        # this run's series (the actor test above recorded stage latencies of its own)
        first = wait_for(
            ray_metrics,
            lambda s: total(s, steps, stage="step", run_id="metrics-run") >= 3,
            timeout_s=10,
        )
        drive(handles, start_step=step)
        result = finish(handles, step, 0.0)

        # the run's cost, measured from the live actors (independent of the metric calls)
        report = cost.measure_system(handles, 10.0, REPO / "ops" / "prices.yaml", "on_prem")
        lines = {line.name: line for line in report.lines}
        assert {"coordinator", "market_data", "execution", "storage_sink", "driver"} <= set(lines)
        assert {f"agent:{a.id}" for a in config.agents} <= set(lines)
        assert all(line.cpu_s > 0 for line in report.lines) and report.used > 0

        for stage in metrics.STAGES:
            assert total(first, steps, stage=stage, run_id="metrics-run") >= 3, stage
        seen = total(first, events)
        assert seen > 0
        last = wait_for(ray_metrics, lambda s: total(s, events) >= 20_000)
        assert total(last, events) == 20_000 > seen
        assert total(last, P(metrics.SIGNALS)) > 0
        assert total(last, P(metrics.ORDER_EXECUTIONS), status="submitted") > 0
        # every stored fill is counted, the internal crosses' too (the venue never reports
        # those: the demo's fill-rate panel showed a third of mm_as's fills)
        from sapphire.storage.query import read_table

        fills = read_table(tmp_path / "store", "fills", "metrics-run").collect()
        assert fills["internal"].any(), "the demo crosses in the firm"
        # the venue's fills are counted as they arrive: one still in flight at the end (not
        # stored, not in the positions) is counted too
        venue_fills = fills.height + result.summary.get("in_flight", {}).get("fills", 0)
        counted = wait_for(
            ray_metrics,
            lambda s: total(s, P(metrics.ORDER_EXECUTIONS), status="fill") >= venue_fills,
        )
        assert total(counted, P(metrics.ORDER_EXECUTIONS), status="fill") == venue_fills
        # rows the sink took, once each: the run's finish re-sends what was not yet
        # acknowledged, and those repeats were counted (about 20 % too many)
        stored = wait_for(
            ray_metrics, lambda s: total(s, P(metrics.SINK_ROWS), table="fills") >= fills.height
        )
        assert total(stored, P(metrics.SINK_ROWS), table="fills") == fills.height
        assert total(last, P(metrics.SINK_ROWS)) > 0
        assert P(metrics.POSITION) in last and P(metrics.PNL) in last
        assert {series.get("asset") for series, _ in last[P(metrics.PNL)]} == {"USDT"}
        assert P(metrics.FIRM_PNL) in last and P(metrics.FIRM_DAILY_PNL) in last
        daily = {series.get("agent") for series, _ in last[P(metrics.DAILY_PNL)]}
        assert "mm_as" in daily and daily <= {a.id for a in config.agents}
        assert total(last, P(metrics.LOSS_LIMIT), agent=metrics.FIRM) == 2000
        assert total(last, P(metrics.KILL_SWITCH)) == 0
        assert total(last, P(metrics.SPREAD_BPS), agent="mm_as") > 0
        # every series of a run's actors names the run (two runs on a cluster were one
        # series per agent): the coordinator's and the sink's
        for name in (metrics.FIRM_PNL, metrics.POSITION, metrics.SINK_ROWS):
            runs = {series.get("run_id") for series, _ in last[P(name)]}
            assert runs == {"metrics-run"}, (name, runs)
    finally:
        shutdown_system(handles)


def test_a_local_run_writes_its_targets_for_prometheus(
    ray_metrics: list[str], tmp_path: Path
) -> None:
    # Ray writes its discovery list only from its dashboard, which a local run starts
    # without: the shipped Prometheus found no target and every panel was empty
    import json

    path = metrics_export.write_scrape_targets(tmp_path / "prom-targets-1.json")
    assert path is not None
    [entry] = json.loads(path.read_text())
    assert entry["targets"] == ray_metrics == metrics_export.scrape_targets()
    shipped = (REPO / "ops" / "prometheus" / "prometheus.yml").read_text()
    assert "/tmp/sapphire/prom-targets-*.json" in shipped  # where a run on /tmp writes
    assert metrics_export.targets_file().match("sapphire/prom-targets-*.json")
