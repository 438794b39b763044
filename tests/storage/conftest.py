"""Fixtures for storage tests: real trades as tick rows, a Redis key prefix, the BQ emulator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import redis

from sapphire.storage.schemas import TICKS

TRADES_CSV = "trades/hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz"


def ticks_from_trades(
    path: Path, n: int, *, run_id: str = "run-1", producer_id: str = "md-0"
) -> pl.DataFrame:
    """The first ``n`` real USDT-M BTCUSDT trades as ``ticks`` rows (tick 0.1, lot 0.001)."""
    raw = pl.read_csv(path, n_rows=n, schema_overrides={"price": pl.String, "qty": pl.String})
    frame = raw.select(
        (pl.col("trade_ts_ms") * 1_000_000).cast(pl.Int64).alias("ts_ns"),
        pl.lit("BTCUSDT").alias("symbol"),
        pl.lit("").alias("agent_id"),
        pl.lit(run_id).alias("run_id"),
        pl.lit(producer_id).alias("producer_id"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"),
        pl.lit("trade").alias("kind"),
        pl.col("local_ts_ns").cast(pl.Int64).alias("ts_recv_ns"),
        (pl.col("price").cast(pl.Decimal(20, 8)) * 10).cast(pl.Int64).alias("price_ticks"),
        (pl.col("qty").cast(pl.Decimal(20, 8)) * 1000).cast(pl.Int64).alias("qty_lots"),
        pl.when(pl.col("taker_side") == "buy").then(1).otherwise(-1).cast(pl.Int8).alias("side"),
        pl.col("trade_id").cast(pl.Int64),
    )
    for col in TICKS.columns:
        if col.name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=col.dtype).alias(col.name))
    return frame.select(TICKS.names).cast(TICKS.polars_schema)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def trades_path(shared_data: Path) -> Path:
    return shared_data / TRADES_CSV


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix; its keys are deleted afterwards. Skips if no Redis on 6379."""
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"test:storage:{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
