"""Opposing agents on one account: the coordinator crosses them inside the firm.

What "fees drop by the crossed volume's fees, positions identical to the venue-only run's
net positions" means here (the acceptance of issue 17, item 6), since a venue-only run is a
different run (its agents see rejections instead of fills and trade on differently):

* every cross is two fills of one size at one price (the resting order's), opposite sides,
  two different agents, no fee, stored with ``internal`` set: a cross moves the agents'
  positions but not the firm's, so the firm's net position is exactly what the venue's fills
  made it, the venue's own record of the account (what a venue-only firm holds);
* the fees the firm paid are exactly the venue's fills' fees, and the summary's saving is
  what the venue would have charged for the crossed volume: the crossed notional at the
  taker rate (the incoming order) plus the maker rate (the resting one);
* no order meets the venue's self-trade prevention (which, as at Binance, acts only where a
  match reaches the account's own resting order, after the market's queue ahead of it);
* no order is ever filled past its size, although the journal the coordinator crosses from
  lags the venue: a cross is booked only for the lots the venue confirms it took off the
  resting order.

The demo's agents on the whole bundled Binance USDT-M BTCUSDT recording check that on real
data; scripted agents on the same recording pin the matching rules (price-time priority, the
resting order's price and remaining quantity, the amend or cancel at the venue, the incoming
order's remainder going on to the venue).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from sapphire.agents.base import AgentOutput
from sapphire.config.system import ConfigError, SystemConfig, load_config, parse_config
from sapphire.kernel.runner import InProcessKernel
from sapphire.model import Instrument
from sapphire.model.events import AnyMarketEvent, Quote, Side
from sapphire.model.orders import AgentReport, OrderIntent, OrderStatus, OrderUpdate
from sapphire.storage.schemas import table_schema
from tests.kernel.conftest import kernel_config

REPO = Path(__file__).resolve().parents[2]


def demo(crossing: str) -> SystemConfig:
    raw = msgspec.to_builtins(load_config(REPO / "configs" / "demo.yaml"))
    raw["coordinator"] = {"crossing": crossing}
    return parse_config(raw)


def run(config: SystemConfig) -> tuple[InProcessKernel, dict[str, Any], pl.DataFrame]:
    kernel = InProcessKernel(config, f"cross-{config.coordinator.crossing}")
    kernel.run()
    rows = kernel.coordinator.rows.take_new()
    fills = rows.get("fills", pl.DataFrame(schema=table_schema("fills").polars_schema))
    STORED_ORDERS[id(kernel)] = rows.get("orders", pl.DataFrame())
    return kernel, kernel.summary(), fills


STORED_ORDERS: dict[int, pl.DataFrame] = {}


def signed(frame: pl.DataFrame) -> int:
    return int((frame["side"] * frame["qty_lots"]).sum())


@pytest.fixture(scope="module")
def demo_runs() -> dict[str, tuple[InProcessKernel, dict[str, Any], pl.DataFrame]]:
    return {policy: run(demo(policy)) for policy in ("venue", "internal")}


def test_the_demo_uses_internal_crossing() -> None:
    assert load_config(REPO / "configs" / "demo.yaml").coordinator.crossing == "internal"


def test_demo_crosses_in_the_firm_instead_of_self_trade_rejections(
    demo_runs: dict[str, tuple[InProcessKernel, dict[str, Any], pl.DataFrame]],
) -> None:
    _, _, venue_fills = demo_runs["venue"]
    kernel, summary, fills = demo_runs["internal"]
    inst: Instrument = kernel.instruments["BTCUSDT"]

    # the venue's self-trade prevention acts only where a match reaches our own order (the
    # market's queue ahead of it fills first, as at Binance: it refused every opposing
    # order up front, 139 on the demo); without crossing, no fill is the firm's own
    assert not venue_fills["internal"].any()
    # the policy: no self-trade at the venue, opposing orders crossed in the firm
    assert "self_trade" not in summary["venue_rejections"]
    crossing = summary["crossing"]
    # (119 crosses before they were kept inside the touch: 78 of those were a market order
    # crossing a quote away from the market, worse than the venue's price for it)
    assert crossing["policy"] == "internal" and crossing["crosses"] >= 10

    internal = fills.filter(pl.col("internal"))
    venue = fills.filter(~pl.col("internal"))
    assert internal.height == 2 * crossing["crosses"]
    assert int(internal["qty_lots"].sum()) == 2 * crossing["crossed_lots"]
    assert (internal["fee_quote"] == 0).all()
    # each cross: one taker and one maker fill, same size and price, opposite sides and agents
    pairs = internal.with_columns(pl.col("fill_id").str.replace(r"-[tm]$", "").alias("cross"))
    by_cross = pairs.group_by("cross").agg(
        pl.len().alias("n"),
        pl.col("side").sum().alias("net_side"),
        pl.col("price_ticks").n_unique().alias("prices"),
        pl.col("qty_lots").n_unique().alias("sizes"),
        pl.col("agent_id").n_unique().alias("agents"),
        pl.col("is_maker").sum().alias("makers"),
    )
    assert by_cross.height == crossing["crosses"]
    for column, want in (("n", 2), ("net_side", 0), ("prices", 1), ("sizes", 1), ("agents", 2)):
        assert (by_cross[column] == want).all(), column
    assert (by_cross["makers"] == 1).all()
    assert signed(internal) == 0  # a cross moves no firm position

    # the firm's position is the venue's: every stored venue fill is one of the venue's own
    gateway: Any = kernel.venue.gateway
    own = {f.fill_id: f for f in gateway.fills}
    for row in venue.select("fill_id", "client_order_id", "price_ticks", "qty_lots").iter_rows():
        fill = own[row[0]]
        assert (fill.client_order_id, fill.price_ticks, fill.qty_lots) == row[1:]
    firm_lots = sum(r["position_lots"] for r in summary["agents"].values())
    assert firm_lots == signed(fills) == signed(venue)
    delivered = set(venue["fill_id"].to_list())
    assert firm_lots == sum(
        int(f.side) * f.qty_lots for f in gateway.fills if f.fill_id in delivered
    )

    # fees: the firm paid the venue's fees and nothing for its crosses...
    paid = sum((Decimal(r["fees_quote"]) for r in summary["agents"].values()), Decimal(0))
    venue_fees = sum((f.fee_quote for f in gateway.fills if f.fill_id in delivered), Decimal(0))
    assert abs(paid - venue_fees) < Decimal("0.00000001") * len(delivered)
    # ...and saved what the venue charges two clients for the crossed volume
    takers = internal.filter(~pl.col("is_maker"))
    notional = sum(
        (
            inst.notional_quote(p, q)
            for p, q in takers.select("price_ticks", "qty_lots").iter_rows()
        ),
        Decimal(0),
    )
    rate = (Decimal(inst.taker_fee_bps), Decimal(inst.maker_fee_bps))
    tick = Decimal("0.00000001")
    assert Decimal(crossing["crossed_notional_quote"]) == notional.quantize(tick)
    assert Decimal(crossing["taker_fees_saved_quote"]) == (notional * rate[0] / 10_000).quantize(
        tick
    )
    assert Decimal(crossing["fees_saved_quote"]) == (notional * sum(rate) / 10_000).quantize(tick)
    assert Decimal(crossing["fees_saved_quote"]) > 0

    # every order's last stored state counts its fills, the crossed ones too (an order 4
    # lots of which crossed was stored "canceled, 0 filled"; 5 such orders in the demo)
    orders = STORED_ORDERS[id(kernel)]
    last = (
        orders.filter(pl.col("event") == "update")
        .sort("seq")
        .group_by("client_order_id")
        .agg(pl.col("filled_lots").last())
    )
    filled = fills.group_by("client_order_id").agg(pl.col("qty_lots").sum().alias("fill_sum"))
    joined = last.join(filled, on="client_order_id", how="left").with_columns(
        pl.col("fill_sum").fill_null(0)
    )
    assert joined.height > 100
    assert joined.filter(pl.col("filled_lots") != pl.col("fill_sum")).is_empty()

    # the journal never holds an order filled past its size (no venue fill on top of a cross)
    journal = kernel.coordinator.core.journal
    assert all(e.filled_lots <= e.qty_lots for e in journal.entries.values())
    assert crossing["overfill_lots"] == 0
    # which held although some resting orders traded at the venue before the cross reached
    # it: those lots were not crossed (the venue's answer to the cancel said so)
    assert crossing["failed_lots"] > 0


class ScriptAgent:
    """Places its scripted orders at given quotes, whatever happens to them: ``orders`` is a
    list of ``[quote number, "buy"|"sell", lots, ticks from that quote's bid]``."""

    def __init__(self, agent_id: str, instrument: Instrument, params: dict[str, Any]) -> None:
        self.agent_id = agent_id
        self.symbol = instrument.symbol
        self.script = [tuple(o) for o in params["orders"]]
        self.quotes = 0
        self.seq = 0
        self.reports: list[AgentReport] = []

    def on_event(self, event: AnyMarketEvent, now_ns: int) -> Sequence[AgentOutput]:
        if not isinstance(event, Quote):
            return []
        self.quotes += 1
        out: list[AgentOutput] = []
        for at, side, lots, offset in self.script:
            if at == self.quotes:
                self.seq += 1
                out.append(
                    OrderIntent(
                        ts_event_ns=now_ns,
                        agent_id=self.agent_id,
                        seq=self.seq,
                        symbol=self.symbol,
                        side=Side.BUY if side == "buy" else Side.SELL,
                        qty_lots=lots,
                        limit_ticks=event.bid_ticks + offset,
                    )
                )
        return out

    def on_report(self, report: AgentReport, now_ns: int) -> Sequence[AgentOutput]:
        self.reports.append(report)
        return []

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


def scripted(crossing: str) -> SystemConfig:
    def agent(agent_id: str, *orders: list[Any]) -> dict[str, Any]:
        return {
            "id": agent_id,
            "kind": "tests.kernel.test_internal_cross:ScriptAgent",
            "symbol": "BTCUSDT",
            "params": {"orders": list(orders)},
        }

    return kernel_config(
        data={"max_events": 6_000},
        agents=[
            # two bids at the best bid (618000), one after the other: they rest
            agent("early", [150, "buy", 6, 0]),
            agent("better", [160, "buy", 2, 0]),
            # a sell through them while the bid is still theirs: crosses the earlier first
            agent("seller", [200, "sell", 4, -100]),
            # a sell of more than is left of them: crosses the rest, the remainder to the venue
            agent("dumper", [250, "sell", 6, -100]),
        ],
        coordinator={"crossing": crossing},
    )


def test_crossing_is_price_time_at_the_resting_price_and_the_venue_gets_the_rest() -> None:
    kernel, summary, fills = run(scripted("internal"))
    agents: dict[str, Any] = kernel.agents.agents
    bids = {
        a: next(o for o in kernel.coordinator.core.journal.entries.values() if o.agent_id == a)
        for a in ("early", "better", "seller", "dumper")
    }
    early, better = bids["early"].limit_ticks, bids["better"].limit_ticks
    assert early is not None and early == better  # one price: time decides
    internal = fills.filter(pl.col("internal")).sort("seq")
    got = [
        (r["agent_id"], r["side"], r["price_ticks"], r["qty_lots"], r["is_maker"], r["leaves_lots"])
        for r in internal.iter_rows(named=True)
    ]
    assert got == [
        # the seller: 4 of the early bid's 6 (2 left), none of the later one's
        ("seller", -1, early, 4, False, 0),
        ("early", 1, early, 4, True, 2),
        # the dumper: the early bid's last 2 lots, then the later bid's 2; 2 go to the venue
        ("dumper", -1, early, 2, False, 4),
        ("early", 1, early, 2, True, 0),
        ("dumper", -1, early, 2, False, 2),
        ("better", 1, early, 2, True, 0),
    ]
    assert (internal["fee_quote"] == 0).all()
    assert summary["crossing"]["crosses"] == 3
    assert summary["crossing"]["resting_amended"] == 1  # the early bid, 6 -> 2 lots
    assert summary["crossing"]["resting_canceled"] == 2

    # the venue's record: the early bid amended down then canceled, the seller never sent,
    # the dumper's remainder of 2 lots sold to the market (a taker fee)
    gateway: Any = kernel.venue.gateway
    orders = {o.client_order_id: o for o in gateway.orders()}
    assert orders["early-1"].qty_lots == 2 and orders["early-1"].status is OrderStatus.CANCELED
    assert orders["better-1"].status is OrderStatus.CANCELED
    assert "seller-1" not in orders
    assert orders["dumper-1"].qty_lots == 2
    venue = fills.filter(~pl.col("internal"))
    assert set(venue["agent_id"]) == {"dumper"} and int(venue["qty_lots"].sum()) == 2
    assert (venue["fee_quote"] > 0).all()

    # agents get their crosses as fills, and a final FILLED for the orders filled in the firm
    positions = {a: r["position_lots"] for a, r in summary["agents"].items()}
    assert positions == {
        "early/BTCUSDT": 6,
        "better/BTCUSDT": 2,
        "seller/BTCUSDT": -4,
        "dumper/BTCUSDT": -6,
    }
    seller = agents["seller"].reports
    assert [type(r).__name__ for r in seller] == ["OrderFilled", "OrderUpdate"]
    assert seller[-1].status is OrderStatus.FILLED
    # the venue's CANCELED of a bid crossed whole is not its fate: never delivered
    assert not any(
        getattr(r, "status", None) is OrderStatus.CANCELED for r in agents["better"].reports
    )
    # the dumper's venue reports count its crossed lots (the firm's order is 6 lots)
    dumper = [r for r in agents["dumper"].reports if isinstance(r, OrderUpdate)]
    assert dumper[-1].status is OrderStatus.FILLED and dumper[-1].filled_lots == 6
    statuses = summary["orders_by_status"]
    assert statuses == {"filled": 4}
    assert "self_trade" not in summary["venue_rejections"]

    # the same script at the venue: both sells reach the market's bids queued at that
    # price ahead of ours and fill there (as at Binance, whose self-trade prevention acts
    # only when a match reaches the account's own order; it refused both up front); our
    # bids rest untouched, and the firm paid the taker fee on 10 lots
    _, venue_only, venue_only_fills = run(scripted("venue"))
    assert "self_trade" not in venue_only["venue_rejections"]
    sold = venue_only_fills.select("agent_id", "price_ticks", "qty_lots", "is_maker").rows()
    assert sorted(sold) == [("dumper", early, 6, False), ("seller", early, 4, False)]
    assert venue_only["orders_by_status"] == {"accepted": 2, "filled": 2}


def test_internal_crossing_needs_the_paper_venue() -> None:
    raw = msgspec.to_builtins(kernel_config())
    raw["exchange"] = {"kind": "ccxt"}
    raw["coordinator"] = {"crossing": "internal"}
    with pytest.raises(ConfigError, match=r"coordinator\.crossing"):
        parse_config(raw)


def test_a_run_without_crosses_shows_the_crossing_rows_at_zero() -> None:
    """No cross yet: the summary says 0 crossed and 0 saved (absent rows read as "not
    measured" to a trader comparing two runs)."""
    raw = msgspec.to_builtins(demo("internal"))
    raw["data"]["max_events"] = 50
    _, summary, _ = run(parse_config(raw))
    crossing = summary["crossing"]
    assert crossing["crosses"] == 0
    for key in ("crossed_notional_quote", "fees_saved_quote", "taker_fees_saved_quote"):
        assert Decimal(crossing[key]) == 0, key
