"""Forgetting finished orders (the venue's and the coordinator's journal) bounds what a run
holds, and changes nothing it trades or stores."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from sapphire.coordination.journal import OrderJournal
from sapphire.kernel.runner import InProcessKernel
from sapphire.kernel.timing import Window
from sapphire.model.events import Side
from sapphire.model.orders import OrderFilled, OrderStatus, OrderUpdate, SubmitOrder
from tests.kernel.conftest import LATENCY, kernel_config

S = 1_000_000_000


def _run(memory_s: float, window_ns: int = 0) -> tuple[InProcessKernel, dict[str, Any]]:
    params = {"balances": {"USDT": "100000", "BTC": "0"}, "latency": LATENCY}
    config = kernel_config(
        data={"max_events": 60_000, "window_ns": window_ns},
        exchange={"kind": "paper", "params": {**params, "finished_order_memory_s": memory_s}},
        coordinator={"crossing": "internal", "finished_order_memory_s": memory_s},
    )
    kernel = InProcessKernel(config, "memory")
    kernel.run()
    summary = kernel.summary()
    return kernel, {
        "rows": kernel.coordinator.rows.take_new(),
        **{k: summary[k] for k in ("agents", "fills", "risk_rejections", "crossing")},
        "orders_by_status": summary["orders_by_status"],
    }


def _assert_same(want: dict[str, Any], got: dict[str, Any]) -> None:
    for key in ("agents", "fills", "risk_rejections", "crossing", "orders_by_status"):
        assert got[key] == want[key], key
    assert sorted(got["rows"]) == sorted(want["rows"])
    for table, frame in want["rows"].items():
        assert got["rows"][table].equals(frame), f"stored {table} rows differ"


@pytest.fixture(scope="module")
def kept() -> tuple[InProcessKernel, dict[str, Any]]:
    return _run(0.0)  # never forget: the record of every order


def test_a_run_that_forgets_trades_and_stores_the_same_and_holds_less(
    kept: tuple[InProcessKernel, dict[str, Any]],
) -> None:
    kernel_all, want = kept
    kernel, got = _run(2.0)
    _assert_same(want, got)
    assert want["fills"] >= 5 and want["crossing"]["crosses"] >= 1
    orders = sum(want["orders_by_status"].values())
    journal_all = kernel_all.coordinator.core.journal
    assert len(journal_all.entries) == orders > 100
    # two seconds of a ~60 s slice: a small part of the orders are still held
    assert len(kernel.coordinator.core.journal.entries) < orders / 5
    stage: Any = kernel.coordinator  # its own indexes by order and fill go with them
    assert len(stage._last_update) < orders / 5
    assert len(stage._seen_fills) < len(kernel_all.coordinator._seen_fills) / 2
    crosses_all: Any = kernel_all.coordinator.core.crosses
    crosses: Any = kernel.coordinator.core.crosses
    assert len(crosses._venue_lots) < len(crosses_all._venue_lots)
    venue_all: Any = kernel_all.venue.gateway
    venue: Any = kernel.venue.gateway
    assert len(venue.orders()) < len(venue_all.orders()) / 5


def test_a_fill_told_again_about_a_forgotten_order_reaches_no_agent(
    kept: tuple[InProcessKernel, dict[str, Any]],
) -> None:
    """A live venue may tell a fill again (a reconnect): once its order is forgotten, the
    firm cannot know it was told before, so neither the firm nor the agent counts it."""
    kernel_all, _ = kept
    kernel, _ = _run(2.0)
    venue_all: Any = kernel_all.venue.gateway
    first = venue_all.fills[0]  # early in the run: forgotten since
    stage = kernel.coordinator
    assert first.client_order_id not in stage.core.journal.entries
    before = stage.stale_reports
    stage.add_venue_reports([first], arrived_ns=0)
    assert stage.stale_reports == before + 1
    # reaches no agent (other reports may still be on their way at the run's end)
    due = stage.take_due(Window(step=10**6, start_ns=0, end_ns=1 << 62))
    assert all(getattr(r, "fill_id", None) != first.fill_id for r in due)


def test_forgetting_gives_the_same_run_in_every_window(
    kept: tuple[InProcessKernel, dict[str, Any]],
) -> None:
    _, want = kept
    _, got = _run(2.0, window_ns=LATENCY["entry_ns"] // 7)
    _assert_same(want, got)


def _order(cid: str) -> SubmitOrder:
    return SubmitOrder(
        ts_event_ns=0,
        client_order_id=cid,
        agent_id="a",
        symbol="X",
        side=Side.BUY,
        qty_lots=2,
        limit_ticks=100,
    )


def _fill(cid: str, fill_id: str, ts: int, lots: int) -> OrderFilled:
    return OrderFilled(
        ts_event_ns=ts,
        client_order_id=cid,
        agent_id="a",
        symbol="X",
        side=Side.BUY,
        price_ticks=100,
        qty_lots=lots,
        fee_quote=Decimal(0),
        is_maker=True,
        fill_id=fill_id,
        leaves_lots=2 - lots,
    )


def _ended(cid: str, status: OrderStatus, ts: int) -> OrderUpdate:
    return OrderUpdate(ts_event_ns=ts, client_order_id=cid, agent_id="a", symbol="X", status=status)


def test_the_journal_forgets_a_final_order_with_its_fills_and_keeps_its_counts() -> None:
    journal = OrderJournal(memory_ns=10 * S)
    for cid in ("a-1", "a-2", "a-3"):
        assert journal.record_submit(_order(cid))
    assert journal.apply(_fill("a-1", "f-1", 1 * S, 2))  # filled at 1 s
    journal.apply(_ended("a-2", OrderStatus.CANCELED, 3 * S))
    assert journal.forget(10 * S) == []  # nothing final for 10 s yet
    assert journal.forget(11 * S) == [("a-1", ["f-1"])]
    assert journal.forget(13 * S) == [("a-2", [])]
    assert sorted(journal.entries) == ["a-3"]  # the open order stays, however old
    assert journal.counts_by_status() == {"pending": 1, "filled": 1, "canceled": 1}
    assert journal.filled_orders == {("a", "X"): 1}  # what the console shows per agent
    # a fill told again after that is about an order no longer known: never counted twice
    assert not journal.is_new(_fill("a-1", "f-1", 20 * S, 2))
    assert not journal.apply(_fill("a-1", "f-1", 20 * S, 2))
    assert journal.open_lots("a", "X", Side.BUY) == 2
    # a venue that stamps no time (0): the memory counts from when the run applied it
    journal.apply(_ended("a-3", OrderStatus.EXPIRED, 0), now_ns=14 * S)
    assert journal.forget(20 * S) == [] and journal.forget(24 * S) == [("a-3", [])]
    assert journal.counts_by_status() == {"expired": 1, "filled": 1, "canceled": 1}
    never = OrderJournal()
    never.record_submit(_order("a-1"))
    never.apply(_fill("a-1", "f-1", 1 * S, 2))
    assert never.forget(10**6 * S) == [] and "a-1" in never.entries
