"""The window is only a performance knob: every window no longer than the lookahead gives the
same orders, fills, positions, PnL and stored rows; longer ones are refused or marked."""

from __future__ import annotations

from typing import Any

import msgspec
import polars as pl
import pytest

from sapphire.kernel.runner import InProcessKernel
from sapphire.kernel.timing import WindowError
from tests.kernel.conftest import LATENCY, kernel_config


def outcome(kernel: InProcessKernel) -> dict[str, Any]:
    venue: Any = kernel.venue.gateway
    summary = kernel.summary()
    rows = kernel.coordinator.rows.take_new()
    return {
        "venue_fills": list(venue.fills),
        "venue_orders": [msgspec.structs.asdict(o) for o in venue.orders()],
        "journal": {
            k: msgspec.structs.asdict(v) for k, v in kernel.coordinator.core.journal.entries.items()
        },
        "agents": summary["agents"],
        "fills": summary["fills"],
        "risk": summary["risk_rejections"],
        "crossing": summary["crossing"],
        "rows": rows,
    }


def run(window_ns: int, batch_events: int = 20_000, **data: Any) -> dict[str, Any]:
    # 60,000 rows: enough for five internal crosses (they stay inside the touch)
    data = {"window_ns": window_ns, "batch_events": batch_events, "max_events": 60_000, **data}
    config = kernel_config(data=data)
    kernel = InProcessKernel(config, "inv")
    kernel.run()
    return outcome(kernel)


def assert_same(want: dict[str, Any], got: dict[str, Any]) -> None:
    for key in ("venue_fills", "venue_orders", "journal", "agents", "fills", "risk", "crossing"):
        assert got[key] == want[key], key
    assert sorted(got["rows"]) == sorted(want["rows"])
    for table, frame in want["rows"].items():
        assert got["rows"][table].equals(frame), f"stored {table} rows differ"


@pytest.fixture(scope="module")
def at_lookahead() -> dict[str, Any]:
    result = run(0)  # 0 = the lookahead, 20 ms
    # the slice must exercise what is compared
    assert result["fills"] >= 5
    # every configured agent is in the summary, an idle one too
    assert set(result["agents"]) == {"mm_as/BTCUSDT", "momentum/BTCUSDT", "meanrev/BTCUSDT"}
    assert result["rows"]["pnl"].height > 10
    assert result["rows"]["risk_decisions"].height > 20
    assert result["crossing"]["crosses"] >= 5  # internal crossing is exercised too
    return result


@pytest.mark.parametrize(
    ("window_ns", "batch_events"),
    [
        (LATENCY["entry_ns"] // 2, 20_000),
        (LATENCY["entry_ns"] // 10, 20_000),
        (1, 20_000),  # one timestamp per window
        (LATENCY["entry_ns"], 7),  # windows cut by the event cap, never inside a timestamp
    ],
)
def test_every_window_up_to_the_lookahead_gives_the_same_run(
    at_lookahead: dict[str, Any], window_ns: int, batch_events: int
) -> None:
    assert_same(at_lookahead, run(window_ns, batch_events))


def test_a_window_longer_than_the_lookahead_is_refused() -> None:
    with pytest.raises(WindowError, match="longer than the lookahead"):
        InProcessKernel(kernel_config(data={"window_ns": LATENCY["entry_ns"] + 1}), "x")


def test_an_approximate_window_is_allowed_and_marked(at_lookahead: dict[str, Any]) -> None:
    config = kernel_config(data={"window_ns": 2_000_000_000, "approximate": True})
    kernel = InProcessKernel(config, "approx")
    kernel.run()
    summary = kernel.summary()
    assert summary["approximate"] is True
    assert summary["window_ns"] == 2_000_000_000
    # and it really is approximate: two seconds of market time per step trade differently
    assert outcome(kernel)["venue_fills"] != at_lookahead["venue_fills"]


def test_zero_latency_cannot_be_exact() -> None:
    latency = {**LATENCY, "entry_ns": 0}
    with pytest.raises(WindowError, match="must be > 0"):
        InProcessKernel(
            kernel_config(exchange={"params": {"balances": {"USDT": "1"}, "latency": latency}}),
            "x",
        )


def test_pnl_rows_sit_on_the_market_time_grid(at_lookahead: dict[str, Any]) -> None:
    pnl: pl.DataFrame = at_lookahead["rows"]["pnl"]
    on_grid = pnl.filter(pl.col("ts_ns") % 1_000_000_000 == 0)
    # every snapshot but the final one is on a whole second of market time
    assert pnl.height - on_grid.height == pnl["agent_id"].n_unique()


def test_the_orders_table_ends_every_order_as_the_venue_does() -> None:
    config = kernel_config()
    kernel = InProcessKernel(config, "final")
    kernel.run()
    orders = kernel.coordinator.rows.take_new()["orders"].sort("seq")
    last = dict(zip(orders["client_order_id"], orders["status"], strict=True))
    venue: Any = kernel.venue.gateway
    finals = [o for o in venue.orders() if o.status.is_final]
    assert any(o.status.value == "filled" for o in finals)
    # but an order crossed whole in the firm (internal crossing), which the venue canceled
    crossed = set(
        orders.filter(pl.col("message").str.starts_with("crossed internally"))["client_order_id"]
    )
    assert crossed
    for order in finals:
        if order.client_order_id in crossed:
            assert last[order.client_order_id] == "filled", order.client_order_id
            continue
        assert last[order.client_order_id] == order.status.value, order.client_order_id
