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
        "fills": [R.fill_row(fill, quote="USDT", **IDS)],
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
                quote="USDT",
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
                quote="USDT",
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


def test_money_is_rounded_once_to_the_quote_scale_when_the_row_is_built() -> None:
    rows = all_rows()
    fee = rows["fills"][0]["fee_quote"]
    # 0.00098765|432...: 8 decimals for USDT, the exponent fixed (not normalised)
    assert fee == Decimal("0.00098765") and fee.as_tuple().exponent == -8
    position = rows["positions"][0]
    assert position["avg_entry_ticks"].as_tuple().exponent == -9  # ticks: 9 decimals
    assert position["realized_pnl_quote"].as_tuple().exponent == -8
    # the frame holds exactly what the row held
    frame = R.rows_to_frame(table_schema("fills"), rows["fills"]).frame
    assert frame["fee_quote"].to_list() == [Decimal("0.00098765")]


@given(st.decimals(places=9, min_value=-(10**12), max_value=10**12))
def test_a_row_keeps_a_value_already_at_the_columns_scale_exactly(value: Decimal) -> None:
    # round_money at ETH's scale (9) is the identity on 9-decimal values: no second rounding
    row = R.fill_row(
        OrderFilled(
            ts_event_ns=TS,
            client_order_id="c",
            agent_id="a",
            symbol="XRPETH",
            side=Side.BUY,
            price_ticks=1,
            qty_lots=1,
            fee_quote=value,
            is_maker=True,
            fill_id="f",
        ),
        quote="ETH",
        **IDS,
    )
    out = R.rows_to_frame(table_schema("fills"), [row])
    assert out.rejected == [] and out.frame["fee_quote"].to_list() == [value]


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
        {**good, "fee_quote": 0.5},  # a float: cents already lost
        {**good, "fee_quote": Decimal("0.0000000001")},  # not rounded when built
        {**good, "fee_quote": Decimal("NaN")},
        {**good, "fee_quote": Decimal("1E+29")},  # past NUMERIC's 29 integer digits
    ]
    out = R.rows_to_frame(table_schema("fills"), [good, *bad, good])
    assert out.frame.height == 2
    assert [r.index for r in out.rejected] == list(range(1, 12))
    text = " | ".join(r.reason for r in out.rejected)
    for fragment in ("qty_lots", "is_maker", "fill_id", "required", "nope", "not a mapping", "300"):
        assert fragment in text
    money = [r.reason for r in out.rejected[-4:]]
    assert "got float" in money[0] and "more than 9 decimals" in money[1]
    assert "not finite" in money[2] and "does not fit DECIMAL(38, 9)" in money[3]
    # trailing zeros past the scale change nothing, so they are not a rounding skipped
    assert (
        R.row_error(table_schema("fills"), {**good, "fee_quote": Decimal("0.5000000000000")})
        is None
    )


def test_unknown_table_and_frame_mismatch_name_the_problem() -> None:
    with pytest.raises(SchemaMismatchError, match="unknown table 'trades'"):
        table_schema("trades")
    frame = pl.DataFrame({"ts_ns": ["x"], "extra": [1]})
    with pytest.raises(SchemaMismatchError, match=r"missing=.*symbol.*extra=\['extra'\].*ts_ns"):
        TABLES["fills"].check_frame(frame)
