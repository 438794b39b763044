"""One column schema per stored table, shared by the Parquet and BigQuery backends.

Every table starts with the same identity columns: ``ts_ns`` (Int64, event time), ``symbol``,
``agent_id``, ``run_id``, ``producer_id`` and ``seq`` (the producer's sequence number, which
makes writes exactly-once). Table-specific columns follow.

Money (fees, PnL, equity) and the average entry price are stored as fixed-point decimals:
Parquet ``DECIMAL(38, 9)`` (polars ``pl.Decimal(38, 9)``) and BigQuery ``NUMERIC``, which is
exactly that type, so a value one store holds the other holds too (29 integer digits, 9
fractional). The rule, all of it in :mod:`sapphire.storage.money` (no polars: the paper venue
rounds its fees by it in a process that stores nothing):

* a quote-denominated value is rounded to its quote asset's scale (:func:`quote_scale`: 8,
  a satoshi, for USDT, USDC, USD, BTC and any asset not listed; 9, a gwei, for ETH; never
  more than :data:`MONEY_SCALE_MAX` = 9, what NUMERIC keeps);
* ``avg_entry_ticks`` (a mean of integer tick prices, not money) is rounded to 9 decimals
  of a tick (:data:`AVG_TICKS_SCALE`);
* rounding is ``ROUND_HALF_EVEN`` (:func:`round_money`), done exactly once, when the row is
  built (:mod:`sapphire.storage.rows`); a row whose Decimal has more fractional digits than
  the column keeps is rejected rather than rounded a second time by a writer, and a value
  that does not fit 29 integer digits is an error, never a wrapped or truncated number.

Read back, a value is a ``Decimal`` equal to the rounded one (its exponent is the column's,
-9: ``Decimal("1.5")`` is stored and comes back as ``Decimal("1.500000000")``). The exact
long strings of earlier stores carried every digit of ``Instrument.notional_quote`` (28 and
more), which nothing reads at that precision; fixed-point columns aggregate natively in both
stores, sort numerically, and need no cast. A store written with those string columns is
refused, not misread: BigQuery's schema check names the columns, a Parquet scan fails with
a polars SchemaError.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from sapphire.storage.money import MONEY_PRECISION, MONEY_SCALE_MAX

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

# ---------------------------------------------------------------------------- money
_MONEY = pl.Decimal(MONEY_PRECISION, MONEY_SCALE_MAX)


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
    Column("fee_quote", _MONEY, "NUMERIC"),
    Column("is_maker", _BOOL, "BOOL"),
    Column("leaves_lots", _I64, "INT64"),
    # crossed inside the firm (no venue, no fee); last, so older readers' columns keep places
    Column("internal", _BOOL, "BOOL"),
    # lots of the traded coin the venue kept as the fee (OrderFilled.fee_lots)
    Column("fee_lots", _I64, "INT64"),
    # the venue's close of a position it liquidated (OrderFilled.liquidation)
    Column("liquidation", _BOOL, "BOOL"),
)

POSITIONS = _table(
    "positions",
    Column("qty_lots", _I64, "INT64"),
    Column("avg_entry_ticks", _MONEY, "NUMERIC"),
    Column("realized_pnl_quote", _MONEY, "NUMERIC"),
    Column("fees_quote", _MONEY, "NUMERIC"),
)

PNL = _table(
    "pnl",
    Column("position_lots", _I64, "INT64"),
    Column("realized_pnl_quote", _MONEY, "NUMERIC"),
    Column("unrealized_pnl_quote", _MONEY, "NUMERIC"),
    Column("fees_quote", _MONEY, "NUMERIC"),
    Column("equity_quote", _MONEY, "NUMERIC"),
    # a perpetual's funding (in equity_quote); last, so older readers' columns keep places
    Column("funding_quote", _MONEY, "NUMERIC"),
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
    # why the model's answer was not used, and what decided instead (see LlmDecisionRecord)
    Column("fallback", _STR, "STRING"),
    Column("before_cutoff", _BOOL, "BOOL"),
    # metering: from the serving replica, priced at the run's price table
    Column("prompt_tokens", _I64, "INT64"),
    Column("completion_tokens", _I64, "INT64"),
    Column("queue_wait_ns", _I64, "INT64"),
    Column("batch_size", _I64, "INT64"),
    Column("cache_hit", _BOOL, "BOOL"),
    Column("cpu_s", _F64, "FLOAT64"),
    Column("gpu_s", _F64, "FLOAT64"),
    Column("cost", _MONEY, "NUMERIC"),
    Column("cost_currency", _STR, "STRING"),
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
