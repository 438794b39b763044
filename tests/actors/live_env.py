"""The actor system trading live against the local Binance double: a venue fed with the same
recorded events the agents see, one batch ahead of each step, and the run's own record of
what it did, to compare order by order with the venue's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import ray

from actors import wiring
from actors.system import RunResult, SystemHandles, drive, finish, shutdown_system, start_system
from sapphire.adapters.binance_venue import BinanceVenue
from sapphire.config.system import SystemConfig, parse_config
from sapphire.data import sample
from sapphire.data.instruments import instrument_json, load_exchange_info
from sapphire.exchange.config import PaperExchangeBuilder
from sapphire.exchange.order_ids import VenueOrderIds
from sapphire.model.orders import OrderStatus
from tests.actors.double_thread import DoubleThread
from tests.exchange.ccxt_env import trade_fill_id

SECRET = "live-test-secret-never-printed"
PREFIX = "SAPPHIRE_LIVE_TEST"
BATCH = 1000
INFO = "exchange/basana_binance_exchangeInfo_BTCUSDT.json"


def binance_api_urls() -> dict[str, Any]:
    import ccxt

    urls: dict[str, Any] = ccxt.binance().urls["api"]
    return urls


def start_venue(shared_data: Path, tmp_path: Path) -> tuple[DoubleThread, Path]:
    info_path = shared_data / INFO
    inst = load_exchange_info(info_path)["BTCUSDT"]
    inst_file = tmp_path / "btcusdt-spot.json"
    inst_file.write_bytes(instrument_json(inst))
    venue = BinanceVenue(
        PaperExchangeBuilder()
        .instrument(inst)
        .balance("USDT", "100000")
        .balance("BTC", "1")
        .config(),
        json.loads(info_path.read_text()),
    )
    return DoubleThread(venue), inst_file


def live_config(
    double: DoubleThread,
    inst_file: Path,
    root: Path,
    *,
    max_events: int = 20_000,
    **exchange_params: Any,
) -> SystemConfig:
    paths = sample.sample_paths()
    raw: dict[str, Any] = {
        "data": {
            "source": "files",
            "files": [str(paths.depth), str(paths.trades), str(paths.bbo)],
            "instrument_files": [str(inst_file)],
            "batch_events": BATCH,
            "max_events": max_events,
            # the double is fed a batch ahead of each step: a step is BATCH events, not a
            # window of market time (a live venue is not simulated, so no window is exact)
            "window_ns": 3_600_000_000_000,
            "approximate": True,
        },
        "agents": [
            {
                "id": "mom",
                "kind": "momentum",
                "symbol": "BTCUSDT",
                "params": {
                    "order_lots": 300,
                    "allow_short": True,
                    "fast_span": 20,
                    "slow_span": 200,
                    "threshold_bps": 0.1,
                },
            },
            {
                "id": "mm",
                "kind": "avellaneda_stoikov",
                "symbol": "BTCUSDT",
                "params": {"order_amount": 0.002, "max_inventory": 0.02, "order_refresh_time": 0.5},
            },
        ],
        "risk": {"price_band_bps": 50, "default_agent": {"max_position_lots": 3000}},
        "exchange": {
            "kind": "ccxt",
            "params": {
                "credentials_prefix": PREFIX,
                "timeout_ms": 2000,
                "recv_window_ms": 3000,
                "settle_margin_ms": 50,
                "rate_limit_ms": 1,
                "api_urls": double.double.ccxt_urls(binance_api_urls()),
                **exchange_params,
            },
        },
        "storage": {"root": str(root), "flush_interval_s": 0.2},
    }
    return parse_config(raw)


@dataclass
class LiveRun:
    """One run id on the shared venue; ``feed`` replays the recording into the venue."""

    config: SystemConfig
    double: DoubleThread
    run_id: str
    feed: Iterator[Any]
    handles: SystemHandles | None = None
    step: int = 0
    fed: int = 0
    results: list[RunResult] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        config: SystemConfig,
        double: DoubleThread,
        run_id: str,
        after: LiveRun | None = None,
    ) -> LiveRun:
        """``after``: a run this one follows on the same venue (the market goes on from
        where that one stopped, as it would for a restart)."""
        if after is not None:
            feed, fed = after.feed, after.fed
        else:
            feed, fed = (
                iter(
                    wiring.ReplayFeed(
                        wiring.data_files(config.data),
                        wiring.load_instruments(config.data),
                        config.data.clock,
                    )
                ),
                0,
            )
        run = cls(config, double, run_id, feed, fed=fed)
        run.handles = start_system(config, run_id)
        return run

    def steps(self, n: int, *, on_step: Any = None, feed: bool = True) -> bool:
        """Feed and drive ``n`` steps; True once the data is used up. ``feed=False``: the
        venue's market stands still meanwhile."""
        assert self.handles is not None
        for _ in range(n):
            batch = [e for _, e in zip(range(BATCH if feed else 0), self.feed, strict=False)]
            self.fed += len(batch)
            self.double.feed(batch)
            self.step = drive(self.handles, start_step=self.step, max_steps=1)
            if on_step is not None:
                on_step(self.step)
            if feed and (not batch or self.fed >= self.config.data.max_events):
                return True
        return False

    def finish(self) -> RunResult:
        assert self.handles is not None
        # drain: the last orders are sent, answered and reconciled until the venue has
        # nothing left to tell (bounded: the double gets no more market data). Bounded by
        # steps *and* by at least a second of wall time: a live window is what arrived
        # since the last one, and batched steps follow each other in milliseconds.
        started = time.monotonic()
        for n in range(1, 201):
            self.step = drive(self.handles, start_step=self.step, max_steps=1)
            if n >= 10 and time.monotonic() - started >= 1.0:
                break
        result = finish(self.handles, self.step, 0.0)
        self.results.append(result)
        return result

    def crash(self) -> None:
        """The driver dies: every actor of the run goes with it, nothing flushed or closed."""
        assert self.handles is not None
        for actor in self.handles.actors():
            ray.kill(actor, no_restart=True)
        self.handles = None

    def resume(self) -> None:
        """``--resume``: every actor restores its last checkpointed step."""
        self.handles = start_system(self.config, self.run_id, resume=True)
        self.step = int(ray.get(self.handles.coordinator.next_step.remote()))

    def stop(self) -> None:
        if self.handles is not None:
            shutdown_system(self.handles)
            self.handles = None

    def stored(self, table: str) -> list[dict[str, Any]]:
        from sapphire.storage.query import read_table

        store = Path(self.config.storage.root).resolve() / "store"
        frame = read_table(store, table, self.run_id).collect().sort("seq")
        return list(msgspec.to_builtins(frame.to_dicts()))

    def venue_ids(self) -> VenueOrderIds:
        return VenueOrderIds(self.run_id)


def final_statuses(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The journal's last stored status of each order (the orders table is its history)."""
    out: dict[str, str] = {}
    for row in rows:
        out[row["client_order_id"]] = row["status"]
    return out


def assert_journal_is_the_venues(run: LiveRun) -> dict[str, str]:
    """Order by order, the stored journal equals the venue's own record: every order the
    venue has under this run's ids is in the journal with the venue's final state, and the
    stored fills are exactly the venue's trades of those orders."""
    venue = run.double.venue
    ids = run.venue_ids()
    journal = final_statuses(run.stored("orders"))
    by_venue = {ids.venue_id(cid): cid for cid in journal}
    ours = {v: o for v, o in venue.orders.items() if ids.is_ours(v)}
    assert set(ours) <= set(by_venue), (
        f"orders at the venue the journal lacks: {set(ours) - set(by_venue)}"
    )
    for vcid in ours:
        status = venue.final_status(vcid)
        assert status is not None
        if status.is_final:
            assert journal[by_venue[vcid]] == str(status), (vcid, journal[by_venue[vcid]], status)
        else:  # still resting at the venue: never final in the journal
            assert not OrderStatus(journal[by_venue[vcid]]).is_final, vcid
    trade_ids = {
        trade_fill_id(t) for t in venue.trades if venue._by_id.get(t["orderId"], "") in ours
    }
    stored = [r["fill_id"] for r in run.stored("fills")]
    assert len(stored) == len(set(stored)), "a fill was stored twice"
    assert set(stored) == trade_ids, (len(stored), len(trade_ids))
    return journal


def venue_position_lots(run: LiveRun) -> int:
    """Signed BTC lots this run traded, from the venue's trades of its orders."""
    venue = run.double.venue
    ids = run.venue_ids()
    inst = venue.paper.instruments["BTCUSDT"]
    total = 0
    for t in venue.trades:
        vcid = venue._by_id.get(t["orderId"], "")
        if ids.is_ours(vcid):
            lots = inst.qty_to_lots(Decimal(t["qty"]))
            total += lots if t["isBuyer"] else -lots
    return total
