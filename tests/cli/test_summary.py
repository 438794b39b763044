"""The end-of-run screen's cache table: per cache, who answered the lookups (L1, Redis, the
source) and the combined hit rate; runners without a cache (``sapphire backtest``) print none."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from sapphire.cli.summary import print_summary
from sapphire.storage.cache import LevelCounts, cache_summary


def _summary(**extra: Any) -> dict[str, Any]:
    return {
        "counters": {"events": 1000, "orders": 3, "cancels": 1},
        "agents": {},
        "fills": 2,
        "orders_by_status": {},
        "risk_rejections": {},
        "kill_switch": False,
        "rows": {},
        **extra,
    }


def _screen(summary: dict[str, Any]) -> str:
    console = Console(record=True, width=160)
    print_summary("run-1", summary, 10, 1.0, "store", console)
    return console.export_text()


def test_cache_table_shows_each_level_and_the_combined_rate() -> None:
    agents = [
        {
            "instruments": {
                "l1": LevelCounts(misses=1),
                "l2": LevelCounts(misses=1, errors=1),
                "l3": LevelCounts(hits=1),
            }
        },
        {"instruments": {"l1": LevelCounts(misses=1), "l2": LevelCounts(hits=1)}},
        {"instruments": {"l1": LevelCounts(misses=1), "l2": LevelCounts(hits=1)}},
        {"instruments": {"l1": LevelCounts(misses=1), "l2": LevelCounts(hits=1)}},
    ]
    screen = _screen(_summary(cache={**cache_summary(agents), "unavailable": ["mm"]}))
    assert "Cache: L1 (in process) -> L2 (Redis) -> L3 (source)" in screen
    row = next(line for line in screen.splitlines() if "instruments" in line)
    for cell in ("0/4 (0%)", "3/1 (75%)", "75.0%"):
        assert cell in row
    assert "cache counts missing for agents: mm" in screen


def test_no_cache_no_table() -> None:
    screen = _screen(_summary())
    assert "Cache" not in screen and "hit rate" not in screen


def test_risk_modes_are_shown_when_on_and_absent_when_off() -> None:
    regime = {
        "classifier": "llm",
        "evaluations": {"llm": 3, "fallback": 1},
        "by_regime": {"calm": 1, "normal": 2, "stressed": 1},
        "changes": 2,
        "current": {"BTCUSDT": "stressed"},
        "llm": {
            "ok": 3,
            "malformed_json": 1,
            "schema_violation": 0,
            "errors": 0,
            "refused": 0,
            "before_cutoff": 4,
        },
    }
    screen = _screen(_summary(regime=regime))
    # asked about events before the model's cutoff: flagged, and no fallback
    flag = next(ln for ln in screen.splitlines() if "POINT-IN-TIME" in ln)
    assert "knowledge cutoff" in flag and "4" in flag
    assert "before_cutoff" not in next(ln for ln in screen.splitlines() if "fell back" in ln)
    assert "calm 1, normal 2, stressed 1" in screen
    row = next(line for line in screen.splitlines() if "risk mode at the end: BTCUSDT" in line)
    assert "stressed" in row
    assert "malformed_json" in next(ln for ln in screen.splitlines() if "fell back" in ln)
    assert "risk mode" not in _screen(_summary())


def test_restamped_rows_and_the_kill_switchs_reason_are_shown() -> None:
    counters = {"events": 1000, "orders": 3, "cancels": 1, "clamped": 118}
    screen = _screen(
        _summary(counters=counters, kill_switch=True, kill_reason="run stopped: drill")
    )
    assert "rows restamped: time ran backwards on the run's clock" in screen
    assert "118" in screen
    assert "kill switch TRIPPED: run stopped: drill" in screen
    cut = _screen(_summary(input_rejected={"truncated: t.csv.gz": 1, "malformed": 3}))
    assert "input DAMAGED: t.csv.gz (cut or corrupt: read up to the damage)" in cut
    assert "input rejected: malformed" in cut
    quiet = _screen(_summary())
    assert "restamped" not in quiet and "TRIPPED" not in quiet


def test_a_venue_book_out_of_sync_is_said() -> None:
    books = {"sequence_gaps": 2, "stale_snapshots": 1, "out_of_sync_at_end": 1}
    screen = _screen(_summary(venue_books=books))
    assert "venue book: diffs missing (no liquidity until the next snapshot)" in screen
    assert "venue book: snapshots older than the book, dropped" in screen
    assert "venue book: out of sync at the end (no snapshot came)" in screen
    quiet = _screen(_summary(venue_books={"sequence_gaps": 0, "stale_snapshots": 0}))
    assert "venue book" not in quiet


def test_a_venue_balance_below_zero_is_said() -> None:
    screen = _screen(_summary(venue_books={"balances_below_zero": 1}))
    assert "venue account: balance below zero (the price gapped past bankruptcy" in screen
    assert "1 asset(s)" in screen
    assert "venue account" not in _screen(_summary(venue_books={"balances_below_zero": 0}))


def test_venue_liquidations_are_said() -> None:
    screen = _screen(_summary(venue_books={"liquidations": 2, "balances_below_zero": 0}))
    assert "venue liquidations: positions closed at the maintenance margin" in screen
    assert "2 position(s)" in screen
    assert "venue account" not in screen
    assert "venue liquidations" not in _screen(_summary(venue_books={"liquidations": 0}))


def test_funding_has_a_column_where_any_was_paid_so_the_columns_add_up() -> None:
    row = {
        "position_lots": 5,
        "traded_lots": 5,
        "realized_quote": "-268.56866",
        "unrealized_quote": "-18.91312",
        "fees_quote": "275.98194930",
        "funding_quote": "-34.77968975",
        "pnl_quote": "-598.24341905",
        "unit": "USDT",
    }
    screen = _screen(_summary(agents={"a/XRPUSDT": row}))
    header = next(line for line in screen.splitlines() if "realized" in line)
    assert "funding" in header
    line = next(line for line in screen.splitlines() if line.strip().startswith("a/XRPUSDT"))
    assert "-34.77968975" in line
    # none paid: no column
    flat = _screen(_summary(agents={"a/XRPUSDT": row | {"funding_quote": "0"}}))
    assert "funding" not in flat
