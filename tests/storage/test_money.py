"""Money stored as money: the per-quote-asset scale, half-even rounding once at row building,
and exact Decimal round trips through the Parquet store (the BigQuery one is in
test_bigquery.py)."""

from __future__ import annotations

import argparse
import csv
import io
import tempfile
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sapphire.cli import query_cmd
from sapphire.kernel.rows import StepRows
from sapphire.model import Instrument, OrderFilled, Position, Side
from sapphire.storage.money import (
    MONEY_SCALE_MAX,
    QUOTE_SCALES,
    quote_scale,
    round_money,
    round_to_scale,
)
from sapphire.storage.parquet_backend import ParquetBackend
from sapphire.storage.query import read_table
from sapphire.storage.records import PnlSnapshot
from sapphire.storage.rows import pnl_row
from sapphire.storage.schemas import TABLES
from sapphire.storage.sink import StorageSink

MONEY_COLUMNS = ("realized_pnl_quote", "unrealized_pnl_quote", "fees_quote", "equity_quote")
QUOTES = ("USDT", "USDC", "USD", "BTC", "ETH", "eth", "", "NEWCOIN")
LIMIT = Decimal(10) ** (38 - MONEY_SCALE_MAX)  # NUMERIC / DECIMAL(38, 9): 29 integer digits


def half_even(value: Decimal, scale: int) -> Decimal:
    """The rule computed another way: Python rounds a Fraction half to even."""
    # from a string: exact, where scaleb() would round to the context's 28 digits
    return Decimal(f"{round(Fraction(value) * 10**scale)}E-{scale}")


def instrument(symbol: str, quote: str) -> Instrument:
    return Instrument(symbol=symbol, quote=quote, tick_size="0.01", lot_size="0.001")


def test_one_scale_per_quote_asset_never_past_numeric() -> None:
    for quote in ("USDT", "USDC", "USD", "BTC", "", "NEWCOIN"):
        assert quote_scale(quote) == 8  # a satoshi
    assert quote_scale("ETH") == quote_scale("eth") == 9  # a gwei
    assert all(scale <= MONEY_SCALE_MAX == 9 for scale in QUOTE_SCALES.values())
    with pytest.raises(ValueError, match=r"scale must be in 0\.\.9"):
        round_to_scale(Decimal(1), 10)


def test_rounding_is_half_even_at_the_scale() -> None:
    assert round_money(Decimal("-0.6300690000000000000000000333"), "USDT") == Decimal("-0.630069")
    assert round_money(Decimal("0.000000005"), "USDT") == 0  # tie, to the even 0
    assert round_money(Decimal("0.000000015"), "USDT") == Decimal("0.00000002")  # tie, up
    assert round_money(Decimal("-0.000000025"), "BTC") == Decimal("-0.00000002")
    assert round_money(Decimal("0.0000000051"), "USDT") == Decimal("0.00000001")
    assert round_money(Decimal("0.0000000005"), "ETH") == 0  # 9 decimals for ETH
    assert round_money(Decimal("0.0000000015"), "ETH") == Decimal("0.000000002")
    # the exponent is the scale's: 1000 is stored as 1000.00000000, not 1E+3
    assert round_money(Decimal("1E+3"), "USDT").as_tuple().exponent == -8


def test_values_a_money_column_cannot_hold_are_errors_not_wrapped_numbers() -> None:
    fits = Decimal("99999999999999999999999999999.999999999")
    assert round_money(fits, "ETH") == fits  # the largest NUMERIC
    for bad in (
        Decimal("1E+29"),
        -fits - Decimal("0.000000001"),
        fits,  # at 8 decimals it rounds up to 1e29
        Decimal("NaN"),
        Decimal("-Infinity"),
    ):
        with pytest.raises(ValueError, match=r"does not fit|finite"):
            round_money(bad, "USDT")


def test_step_rows_round_each_symbol_at_its_quote_assets_scale() -> None:
    rows = StepRows(
        "r",
        "coord",
        instruments={
            "BTCUSDT": instrument("BTCUSDT", "USDT"),
            "XRPETH": instrument("XRPETH", "ETH"),
        },
    )
    fee = Decimal("0.0000123456789123")  # what tick x lot x bps easily produces
    for symbol in ("BTCUSDT", "XRPETH", "UNLISTED"):
        rows.add_report(
            OrderFilled(
                ts_event_ns=1,
                client_order_id=f"c-{symbol}",
                agent_id="a",
                symbol=symbol,
                side=Side.BUY,
                price_ticks=100,
                qty_lots=3,
                fee_quote=fee,
                is_maker=False,
                fill_id=symbol,
            )
        )
    fills = rows.take_new()["fills"]
    assert fills.schema["fee_quote"] == pl.Decimal(38, 9)
    assert fills["fee_quote"].to_list() == [
        Decimal("0.00001235"),  # USDT: 8
        Decimal("0.000012346"),  # ETH: 9
        Decimal("0.00001235"),  # no instrument: the default 8
    ]


def test_stored_pnl_and_fees_read_back_as_the_same_decimals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = StepRows(
        "run-m",
        "coord",
        instruments={
            "BTCUSDT": instrument("BTCUSDT", "USDT"),
            "XRPETH": instrument("XRPETH", "ETH"),
        },
    )
    # the rounding residues (-0.4e-8 and -0.45e-8 at USDT's scale) add up past half a unit
    realized = Decimal("-0.6300690040000000000000000333")
    fees = Decimal("0.12345678449999")
    for i, symbol in enumerate(("BTCUSDT", "XRPETH")):
        rows.add_position(
            Position(
                ts_event_ns=1_700_000_000_000_000_000 + i,
                agent_id="a",
                symbol=symbol,
                qty_lots=-4,
                avg_entry_ticks=Decimal(1_834_567) / 3,
                realized_pnl_quote=realized,
                fees_quote=fees,
            )
        )
        rows.add_pnl(
            PnlSnapshot(
                ts_event_ns=1_700_000_000_000_000_000 + i,
                agent_id="a",
                symbol=symbol,
                position_lots=-4,
                realized_pnl_quote=realized,
                unrealized_pnl_quote=Decimal("12345678901234567890.123456785"),
                fees_quote=fees,
                equity_quote=realized - fees,
            )
        )
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=10_000)
    for table, frame in rows.take_new().items():
        sink.submit_frame(table, frame, now_ns=0)
    assert sink.flush(0) == 4

    pnl = read_table(tmp_path, "pnl", "run-m").sort("symbol").collect()
    assert {pnl.schema[c] for c in MONEY_COLUMNS} == {pl.Decimal(38, 9)}
    usdt, eth = pnl.to_dicts()
    assert usdt["realized_pnl_quote"] == Decimal("-0.630069")
    assert eth["realized_pnl_quote"] == Decimal("-0.630069004")
    assert usdt["fees_quote"] == Decimal("0.12345678") and eth["fees_quote"] == Decimal(
        "0.123456784"
    )
    # 20 integer digits kept exactly; for USDT a tie in the 9th decimal goes to the even 8
    assert usdt["unrealized_pnl_quote"] == Decimal("12345678901234567890.12345678")
    assert eth["unrealized_pnl_quote"] == Decimal("12345678901234567890.123456785")
    # rounded once, from the exact value, not the difference of the rounded parts (...578)
    assert usdt["equity_quote"] == Decimal("-0.75352579")
    positions = read_table(tmp_path, "positions", "run-m").sort("symbol").collect()
    assert positions["avg_entry_ticks"].to_list() == [Decimal("611522.333333333")] * 2
    # the store sums exactly, with no cast
    total = read_table(tmp_path, "pnl", "run-m").select(pl.col("fees_quote").sum()).collect()
    assert total.item() == Decimal("0.246913564")
    # `sapphire query` prints them as plain fixed-point text, no float digits, no exponent
    parser = argparse.ArgumentParser()
    query_cmd.register(parser.add_subparsers(dest="command"))
    argv = ["query", "run-m", "--table", "pnl", "--root", str(tmp_path), "--format", "csv"]
    args = parser.parse_args(argv)
    assert args.handler(args) == 0
    out = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["fees_quote"] for r in out] == ["0.123456780", "0.123456784"]
    assert out[0]["unrealized_pnl_quote"] == "12345678901234567890.123456780"


finite = st.decimals(
    allow_nan=False, allow_infinity=False, min_value=-LIMIT * 10, max_value=LIMIT * 10
)


@settings(deadline=None, max_examples=60)
@given(values=st.lists(finite, min_size=1, max_size=12), quote=st.sampled_from(QUOTES))
@example(values=[Decimal("0.000000005"), Decimal("-0.000000015")], quote="USDT")
@example(values=[Decimal("99999999999999999999999999999.9999999995")], quote="ETH")
def test_any_decimal_is_stored_and_read_back_as_itself_rounded_half_even(
    values: list[Decimal], quote: str
) -> None:
    scale = quote_scale(quote)
    expected = [half_even(v, scale) for v in values]
    if any(abs(e) >= LIMIT for e in expected):  # past DECIMAL(38, 9): refused, never stored
        with pytest.raises(ValueError, match="does not fit"):
            for v in values:
                round_money(v, quote)
        return
    rows = [
        pnl_row(
            PnlSnapshot(
                ts_event_ns=i,
                agent_id="a",
                symbol="S",
                position_lots=0,
                realized_pnl_quote=v,
                unrealized_pnl_quote=v.copy_negate(),  # exact: unary minus rounds to 28 digits
                fees_quote=v,
                equity_quote=v,
            ),
            run_id="r",
            producer_id="p",
            seq=i,
            quote=quote,
        )
        for i, v in enumerate(values)
    ]
    with tempfile.TemporaryDirectory() as root:
        sink = StorageSink(ParquetBackend(root, durable=False), batch_size=10_000)
        result = sink.submit("pnl", rows, now_ns=0)
        assert result.rejected == []
        sink.flush(0)
        back = read_table(root, "pnl").sort("seq").collect()
    assert back["realized_pnl_quote"].to_list() == expected
    assert back["unrealized_pnl_quote"].to_list() == [e.copy_negate() for e in expected]
    assert back.schema == {**TABLES["pnl"].polars_schema, "date": pl.Date}
