"""One column schema per stored table, shared by the Parquet and BigQuery backends.

Every table starts with the same identity columns: ``ts_ns`` (Int64, event time), ``symbol``,
``agent_id``, ``run_id``, ``producer_id`` and ``seq`` (the producer's sequence number, which
makes writes exactly-once). Table-specific columns follow.

Cash (fees, PnL, average entry) is stored as its exact decimal **string**, not Decimal128:
a Decimal128 column needs one fixed scale for all rows, while fees and PnL carry whatever
scale ``Instrument.notional_quote`` produced (price tick x lot size x fee rate easily needs
more than 18 fractional digits), and BigQuery's NUMERIC keeps only 9. A string round-trips
every ``Decimal`` bit for bit in both stores; queries cast where they aggregate
(:func:`sapphire.storage.query.decimal_column`).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

IDENTITY_COLUMNS = ("ts_ns", "symbol", "agent_id", "run_id", "producer_id", "seq")


class SchemaMismatchError(ValueError):
    """A batch or an existing store table whose columns differ from the expected schema."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    dtype: pl.DataType
    bq_type: str
    nullable: bool = False


@dataclass(frozen=True, slots=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {c.name: c.dtype for c in self.columns}

    @property
    def required(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns if not c.nullable)

    def check_frame(self, frame: pl.DataFrame) -> None:
        """Raise :class:`SchemaMismatchError` naming every missing, extra or mistyped column."""
        expected = self.polars_schema
        got = dict(frame.schema)
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(
            f"{n}: expected {expected[n]}, got {got[n]}"
            for n in set(expected) & set(got)
            if got[n] != expected[n] and got[n] != pl.Null
        )
        if missing or extra or wrong:
            raise SchemaMismatchError(
                f"table {self.name!r}: schema mismatch (missing={missing}, extra={extra}, "
                f"wrong types={wrong})"
            )


_I64 = pl.Int64()
_I8 = pl.Int8()
_STR = pl.String()
_F64 = pl.Float64()
_BOOL = pl.Boolean()


def _identity() -> tuple[Column, ...]:
    return (
        Column("ts_ns", _I64, "INT64"),
        Column("symbol", _STR, "STRING"),
        Column("agent_id", _STR, "STRING"),
        Column("run_id", _STR, "STRING"),
        Column("producer_id", _STR, "STRING"),
        Column("seq", _I64, "INT64"),
    )


def _table(name: str, *cols: Column) -> TableSchema:
    return TableSchema(name, _identity() + cols)


def _opt(name: str, dtype: pl.DataType, bq_type: str) -> Column:
    return Column(name, dtype, bq_type, nullable=True)


TICKS = _table(
    "ticks",
    Column("kind", _STR, "STRING"),  # "trade" | "quote"
    Column("ts_recv_ns", _I64, "INT64"),
    _opt("price_ticks", _I64, "INT64"),
    _opt("qty_lots", _I64, "INT64"),
    _opt("side", _I8, "INT64"),
    _opt("trade_id", _I64, "INT64"),
    _opt("bid_ticks", _I64, "INT64"),
    _opt("bid_lots", _I64, "INT64"),
    _opt("ask_ticks", _I64, "INT64"),
    _opt("ask_lots", _I64, "INT64"),
)

SIGNALS = _table(
    "signals",
    Column("strength", _F64, "FLOAT64"),
    Column("reason", _STR, "STRING"),
)

INTENTS = _table(
    "intents",
    Column("client_order_id", _STR, "STRING"),
    Column("side", _I8, "INT64"),
    Column("qty_lots", _I64, "INT64"),
    _opt("limit_ticks", _I64, "INT64"),
    Column("order_type", _STR, "STRING"),
    Column("tif", _STR, "STRING"),
    Column("reduce_only", _BOOL, "BOOL"),
)

ORDERS = _table(
    "orders",
    Column("event", _STR, "STRING"),  # "submit" | "update"
    Column("client_order_id", _STR, "STRING"),
    _opt("side", _I8, "INT64"),
    _opt("qty_lots", _I64, "INT64"),
    _opt("limit_ticks", _I64, "INT64"),
    _opt("order_type", _STR, "STRING"),
    _opt("tif", _STR, "STRING"),
    Column("status", _STR, "STRING"),
    Column("filled_lots", _I64, "INT64"),
    Column("leaves_lots", _I64, "INT64"),
    _opt("reason", _STR, "STRING"),
    Column("message", _STR, "STRING"),
)

FILLS = _table(
    "fills",
    Column("client_order_id", _STR, "STRING"),
    Column("fill_id", _STR, "STRING"),
    Column("side", _I8, "INT64"),
    Column("price_ticks", _I64, "INT64"),
    Column("qty_lots", _I64, "INT64"),
    Column("fee_quote", _STR, "STRING"),
    Column("is_maker", _BOOL, "BOOL"),
    Column("leaves_lots", _I64, "INT64"),
)

POSITIONS = _table(
    "positions",
    Column("qty_lots", _I64, "INT64"),
    Column("avg_entry_ticks", _STR, "STRING"),
    Column("realized_pnl_quote", _STR, "STRING"),
    Column("fees_quote", _STR, "STRING"),
)

PNL = _table(
    "pnl",
    Column("position_lots", _I64, "INT64"),
    Column("realized_pnl_quote", _STR, "STRING"),
    Column("unrealized_pnl_quote", _STR, "STRING"),
    Column("fees_quote", _STR, "STRING"),
    Column("equity_quote", _STR, "STRING"),
)

RISK_DECISIONS = _table(
    "risk_decisions",
    Column("client_order_id", _STR, "STRING"),
    Column("accepted", _BOOL, "BOOL"),
    Column("requested_lots", _I64, "INT64"),
    _opt("reason", _STR, "STRING"),
    Column("detail", _STR, "STRING"),
)

LLM_DECISIONS = _table(
    "llm_decisions",
    Column("model", _STR, "STRING"),
    Column("action", _STR, "STRING"),
    Column("size_fraction", _F64, "FLOAT64"),
    Column("confidence", _F64, "FLOAT64"),
    Column("rationale", _STR, "STRING"),
    Column("valid", _BOOL, "BOOL"),
    Column("error", _STR, "STRING"),
    Column("latency_ns", _I64, "INT64"),
    Column("prompt_hash", _STR, "STRING"),
)

TABLES: dict[str, TableSchema] = {
    t.name: t
    for t in (
        TICKS,
        SIGNALS,
        INTENTS,
        ORDERS,
        FILLS,
        POSITIONS,
        PNL,
        RISK_DECISIONS,
        LLM_DECISIONS,
    )
}


def table_schema(name: str) -> TableSchema:
    try:
        return TABLES[name]
    except KeyError:
        raise SchemaMismatchError(
            f"unknown table {name!r}; known tables: {sorted(TABLES)}"
        ) from None
