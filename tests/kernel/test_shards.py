"""Shards (``SystemConfig.shards``): each symbol group has its own venue and agents; the
coordinator's firm-wide risk spans them all."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sapphire.config.system import ConfigError, SystemConfig, parse_config
from sapphire.kernel.assembly import load_instruments, shards, source_shards
from sapphire.kernel.builders import WiringError
from sapphire.kernel.runner import InProcessKernel
from sapphire.kernel.shards import Shards, merge_outputs, merge_reports, shards_of
from sapphire.model.events import Side, Trade
from sapphire.model.orders import CancelOrder

CONFIG = Path(__file__).parents[2] / "configs" / "demo_shards.yaml"
USDM, SPOT = "USDM:BTCUSDT", "SPOT:BTCUSDT"
START_NS = 1_723_161_257_000_000_000


def shards_config(tmp_path: Path, seconds: int = 20, **overrides: Any) -> SystemConfig:
    """``configs/demo_shards.yaml`` cut to its first ``seconds`` of trading."""
    raw: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    raw["data"]["end_ns"] = START_NS + seconds * 1_000_000_000
    raw["storage"]["root"] = str(tmp_path)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_config(raw)


def trade(symbol: str, ts: int) -> Trade:
    return Trade(ts_event_ns=ts, symbol=symbol, price_ticks=1, qty_lots=1, taker_side=Side.BUY)


@given(st.lists(st.sampled_from(["A", "B", "C", "X"]), max_size=40))
def test_a_split_keeps_each_shards_events_in_order_and_drops_no_known_symbol(
    symbols: list[str],
) -> None:
    shards = Shards([("A",), ("B", "C")], {})
    events = [trade(s, i) for i, s in enumerate(symbols)]
    split = shards.events(events)
    assert [e.symbol for e in split[0]] == [s for s in symbols if s == "A"]
    assert [e.ts_event_ns for e in split[1]] == [
        i for i, s in enumerate(symbols) if s in ("B", "C")
    ]
    # an unknown symbol is no shard's event; an unknown symbol's command goes to shard 0,
    # whose venue rejects it (never silently dropped)
    commands = [
        CancelOrder(ts_event_ns=i, client_order_id=f"c{i}", symbol=s) for i, s in enumerate(symbols)
    ]
    by_shard = shards.commands(commands)
    assert sum(len(c) for c in by_shard) == len(commands)
    assert [c.symbol for c in by_shard[0]] == [s for s in symbols if s in ("A", "X")]


def test_one_shard_passes_the_step_through_untouched() -> None:
    shards = Shards([("A", "B")], {})
    events = [trade("B", 1), trade("Z", 2)]
    assert shards.events(events)[0] is events
    assert merge_reports([[1, 2]]) == [1, 2]
    assert merge_reports([[1], [], [2, 3]]) == [1, 2, 3]
    # outputs come back in config order whatever order the shards answer in
    assert list(merge_outputs([{"b": [1]}, {"a": [2], "c": []}], ["a", "b", "c"])) == [
        "a",
        "b",
        "c",
    ]


def test_layouts_that_cannot_run_are_refused_naming_the_field(tmp_path: Path) -> None:
    config = shards_config(tmp_path)
    symbols = [USDM, SPOT]
    with pytest.raises(ValueError, match="missing: \\['SPOT:BTCUSDT'\\]"):
        shards_of(msgspec.structs.replace(config, shards=config.shards[:1]), symbols)
    with pytest.raises(ValueError, match="not in the data's instruments: \\['NOPE'\\]"):
        shards_of(
            parse_config({**msgspec.to_builtins(config), "shards": [{"symbols": [USDM, "NOPE"]}]}),
            [USDM],
        )
    # agents sharing an actor must be in one shard
    raw = msgspec.to_builtins(config)
    raw["agents"][2]["host"] = "usdm"
    with pytest.raises(ValueError, match="agent mm_spot: host 'usdm' holds agents of two shards"):
        shards_of(parse_config(raw), symbols)
    with pytest.raises(ConfigError, match="each symbol in one shard; repeated"):
        parse_config({**raw, "shards": [{"symbols": [USDM]}, {"symbols": [USDM, SPOT]}]})
    live = {"kind": "ccxt", "params": {}}
    with pytest.raises(ConfigError, match=r"a live venue .* runs as one shard"):
        parse_config(
            {**msgspec.to_builtins(config), "exchange": live, "coordinator": {"crossing": "venue"}}
        )
    # Ray's own resources, or none at all: refused when the config loads (Ray said it, not
    # naming the field, once it ran)
    for resources, why in (({"CPU": 1}, "Ray's own resource"), ({"x": -1}, "must be > 0")):
        shards = [{"symbols": [USDM], "resources": resources}, {"symbols": [SPOT]}]
        with pytest.raises(ConfigError, match=f"shards\\[0\\].resources: .*{why}"):
            parse_config({**msgspec.to_builtins(config), "shards": shards})
    # the in-process runner says the same as a one-line wiring error
    with pytest.raises(WiringError, match="missing"):
        InProcessKernel(msgspec.structs.replace(config, shards=config.shards[1:]), "x")


def test_shards_of_different_assets_share_one_balances_table_and_legs_stay_in_a_shard(
    tmp_path: Path,
) -> None:
    """The cross-venue demo split by venue: the inverse BTCUSD shard settles in BTC, the
    ETHUSDT one in USDT, and the run's one balances table names both (each shard's venue
    was checked against its own assets alone: no balances passed, every order then failed).
    Its basis agent hedges in the other shard, where it would never see a quote: refused."""
    cross = Path(__file__).parents[2] / "configs" / "demo_cross_venue.yaml"
    raw: dict[str, Any] = yaml.safe_load(cross.read_text())
    raw["storage"]["root"] = str(tmp_path)
    raw["shards"] = [{"symbols": ["BYBIT-INV:BTCUSD"]}, {"symbols": ["BYBIT-USDT:ETHUSDT"]}]
    with pytest.raises(WiringError, match="hedge_symbol 'BYBIT-USDT:ETHUSDT' is not among"):
        InProcessKernel(parse_config(raw), "x")
    basis = raw["agents"][0]
    raw["agents"] = [
        {"id": "mm_inv", "kind": "momentum", "symbol": basis["symbol"]},
        {"id": "mm_eth", "kind": "momentum", "symbol": "BYBIT-USDT:ETHUSDT"},
    ]
    InProcessKernel(parse_config(raw), "y")  # BTC and USDT balances: both the run's
    raw["exchange"]["params"]["balances"] = {"BTC": "1", "USTD": "5"}
    with pytest.raises(WiringError, match="USTD is no asset of the run's"):
        InProcessKernel(parse_config(raw), "z")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> InProcessKernel:
    kernel = InProcessKernel(shards_config(tmp_path_factory.mktemp("shards")), "sharded")
    kernel.run()
    return kernel


def test_each_shard_trades_through_its_own_venue(sharded: InProcessKernel) -> None:
    usdm: Any = sharded.venues[0].gateway
    spot: Any = sharded.venues[1].gateway
    assert set(usdm.instruments) == {USDM} and set(spot.instruments) == {SPOT}
    # both traded, each its own symbol only
    assert {f.symbol for f in usdm.fills} == {USDM}
    assert {f.symbol for f in spot.fills} == {SPOT}
    # an agent sees (and may trade) its shard's symbols only
    assert [sorted(stage.agents) for stage in sharded.agent_stages] == [
        ["mm_usdm", "mom_usdm"],
        ["mm_spot", "mr_spot"],
    ]
    assert [stage.symbols for stage in sharded.agent_stages] == [{USDM}, {SPOT}]
    summary = sharded.summary()
    # the firm's fills are the venues' plus the crosses inside the firm (two per cross)
    crosses = summary["crossing"]["crosses"]
    assert summary["fills"] == len(usdm.fills) + len(spot.fills) + 2 * crosses
    assert summary["venue"]["orders_sent"] == sharded.venues[0].stats.orders_sent + (
        sharded.venues[1].stats.orders_sent
    )


def test_the_firm_kill_switch_stops_every_shard(tmp_path: Path) -> None:
    # the firm's daily loss is one figure over both shards' agents: a limit of 1 USDT trips
    # the run's switch, and from then on no shard's venue gets a new order
    config = shards_config(tmp_path, risk={"max_firm_daily_loss_quote": "1"})
    kernel = InProcessKernel(config, "firm-loss")
    sent_at_trip: list[int] = []

    def watch(_: Any) -> None:
        if kernel.coordinator.core.risk.kill_switch_on and not sent_at_trip:
            sent_at_trip.extend(v.stats.orders_sent for v in kernel.venues)

    kernel.run(watch)
    assert kernel.coordinator.core.risk.kill_switch_on, "the firm's loss limit did not bind"
    assert sent_at_trip, "the switch never tripped during the run"
    # at most the commands already decided before the trip reach a venue afterwards
    after = [v.stats.orders_sent - n for v, n in zip(kernel.venues, sent_at_trip, strict=True)]
    assert after == [0, 0], f"orders reached the venues after the firm switch tripped: {after}"
    loss = -sum(
        Decimal(str(a["pnl_quote"])) for a in kernel.summary()["agents"].values()
    )  # both shards' agents count toward it
    assert loss > 1


def test_each_shard_reads_its_own_venues_files_where_the_data_allows(tmp_path: Path) -> None:
    config = shards_config(tmp_path)
    instruments = load_instruments(config.data)
    split = shards(config, instruments)
    # each venue's files hold that venue's symbols only: USDM's three files are shard 0's
    assert source_shards(config, split) == [0, 0, 0, 1, 1, 1]
    # one reader of the merged replay where a split is not known to be exact or cannot pace
    paced = msgspec.structs.replace(config.data, speed=1.0)
    assert source_shards(msgspec.structs.replace(config, data=paced), split) is None
    unsplit = msgspec.structs.replace(config, shards=())
    assert source_shards(unsplit, shards_of(unsplit, [USDM, SPOT])) is None
    # a venue whose symbols span two shards: its files cannot be split without reading them
    raw = msgspec.to_builtins(config)
    bitstamp = str(CONFIG.parent / "instruments" / "bitstamp-BTCUSD.json")
    venue = raw["data"]["venues"][0]
    venue["instrument_files"] = [*venue["instrument_files"], bitstamp]
    raw["shards"] = [{"symbols": [USDM, SPOT]}, {"symbols": ["USDM:BTCUSD"]}]
    spanning = parse_config(raw)
    assert source_shards(spanning, shards(spanning, load_instruments(spanning.data))) is None
