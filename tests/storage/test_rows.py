from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.llm.decision import LlmDecision
from sapphire.model import (
    OrderFilled,
    OrderIntent,
    OrderStatus,
    OrderUpdate,
    Position,
    Quote,
    RejectReason,
    Side,
    Signal,
    SubmitOrder,
    Trade,
)
from sapphire.risk.engine import RiskDecision
from sapphire.storage import rows as R
from sapphire.storage.records import LlmDecisionRecord, PnlSnapshot
from sapphire.storage.schemas import TABLES, SchemaMismatchError, table_schema

TS = 1_723_161_254_000_000_000
IDS: dict[str, Any] = {"run_id": "r", "producer_id": "p", "seq": 7}


def _intent() -> OrderIntent:
    return OrderIntent(
        ts_event_ns=TS, agent_id="mom", seq=3, symbol="BTCUSDT", side=Side.SELL, qty_lots=5
    )


def all_rows() -> dict[str, list[R.Row]]:
    fill = OrderFilled(
        ts_event_ns=TS,
        client_order_id="mom-3",
        agent_id="mom",
        symbol="BTCUSDT",
        side=Side.BUY,
        price_ticks=612_345,
        qty_lots=4,
        fee_quote=Decimal("0.00098765432109876543210"),
        is_maker=False,
        fill_id="f1",
    )
    d = Decimal("-12.3400")
    return {
        "ticks": [
            R.trade_row(
                Trade(
                    ts_event_ns=TS,
                    symbol="BTCUSDT",
                    price_ticks=1,
                    qty_lots=2,
                    taker_side=Side.SELL,
                ),
                **IDS,
            ),
            R.quote_row(
                Quote(
                    ts_event_ns=TS,
                    symbol="BTCUSDT",
                    bid_ticks=1,
                    bid_lots=2,
                    ask_ticks=3,
                    ask_lots=4,
                ),
                **IDS,
            ),
        ],
        "signals": [
            R.signal_row(
                Signal(ts_event_ns=TS, agent_id="mom", symbol="BTCUSDT", strength=-0.5, seq=9),
                run_id="r",
            )
        ],
        "intents": [R.intent_row(_intent(), run_id="r")],
        "orders": [
            R.submit_row(SubmitOrder.from_intent(_intent()), **IDS),
            R.update_row(
                OrderUpdate(
                    ts_event_ns=TS,
                    client_order_id="mom-3",
                    agent_id="mom",
                    symbol="BTCUSDT",
                    status=OrderStatus.REJECTED,
                    reason=RejectReason.MIN_NOTIONAL,
                ),
                **IDS,
            ),
        ],
        "fills": [R.fill_row(fill, **IDS)],
        "positions": [
            R.position_row(
                Position(
                    ts_event_ns=TS,
                    agent_id="mom",
                    symbol="BTCUSDT",
                    qty_lots=-4,
                    avg_entry_ticks=Decimal("612345.5"),
                    realized_pnl_quote=d,
                    fees_quote=Decimal("0.1"),
                ),
                **IDS,
            )
        ],
        "pnl": [
            R.pnl_row(
                PnlSnapshot(
                    ts_event_ns=TS,
                    agent_id="mom",
                    symbol="BTCUSDT",
                    position_lots=1,
                    realized_pnl_quote=d,
                    unrealized_pnl_quote=d,
                    fees_quote=d,
                    equity_quote=Decimal("1000"),
                ),
                **IDS,
            )
        ],
        "risk_decisions": [
            R.risk_row(
                RiskDecision(
                    ts_event_ns=TS,
                    agent_id="mom",
                    symbol="BTCUSDT",
                    client_order_id="mom-3",
                    accepted=False,
                    requested_lots=5,
                    reason=RejectReason.RISK_MAX_POSITION,
                ),
                **IDS,
            )
        ],
        "llm_decisions": [
            R.llm_row(
                LlmDecisionRecord.of(
                    LlmDecision(action="buy", size_fraction=0.5, confidence=0.4, rationale="up"),
                    ts_event_ns=TS,
                    agent_id="llm",
                    symbol="BTCUSDT",
                    model="smollm2-135m-q4",
                    valid=True,
                    latency_ns=12_000_000,
                ),
                **IDS,
            )
        ],
    }


def test_every_table_has_a_converter_whose_rows_validate() -> None:
    produced = all_rows()
    assert set(produced) == set(TABLES)
    for table, rows in produced.items():
        out = R.rows_to_frame(table_schema(table), rows)
        assert out.rejected == [], (table, out.rejected)
        assert out.frame.height == len(rows)
        assert dict(out.frame.schema) == TABLES[table].polars_schema


def test_fee_keeps_every_digit_as_string() -> None:
    fee = all_rows()["fills"][0]["fee_quote"]
    assert Decimal(fee) == Decimal("0.00098765432109876543210")
    assert fee == "0.00098765432109876543210"  # same exponent, not normalised


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_decimal_cash_round_trips_exactly(value: Decimal) -> None:
    s = R._cash(value)
    assert Decimal(s) == value and Decimal(s).as_tuple() == value.as_tuple()


def test_malformed_rows_are_rejected_with_reasons_and_valid_ones_kept() -> None:
    good = all_rows()["fills"][0]
    bad = [
        {**good, "qty_lots": "4"},
        {**good, "is_maker": 1},
        {**good, "qty_lots": True},
        {k: v for k, v in good.items() if k != "fill_id"},
        {**good, "nope": 1},
        "not a row",
        {**good, "side": 300},
    ]
    out = R.rows_to_frame(table_schema("fills"), [good, *bad, good])
    assert out.frame.height == 2
    assert [r.index for r in out.rejected] == [1, 2, 3, 4, 5, 6, 7]
    text = " | ".join(r.reason for r in out.rejected)
    for fragment in ("qty_lots", "is_maker", "fill_id", "required", "nope", "not a mapping", "300"):
        assert fragment in text


def test_unknown_table_and_frame_mismatch_name_the_problem() -> None:
    with pytest.raises(SchemaMismatchError, match="unknown table 'trades'"):
        table_schema("trades")
    frame = pl.DataFrame({"ts_ns": ["x"], "extra": [1]})
    with pytest.raises(SchemaMismatchError, match=r"missing=.*symbol.*extra=\['extra'\].*ts_ns"):
        TABLES["fills"].check_frame(frame)
