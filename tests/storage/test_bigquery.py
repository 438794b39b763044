"""The BigQuery backend through the real client against bqemulator (started once per session)."""

from __future__ import annotations

import uuid
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import requests

pytest.importorskip("bqemulator")

from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from sapphire.adapters.bigquery import BigQueryBackend, with_backoff
from sapphire.adapters.bq_emulator import Emulator, free_port
from sapphire.adapters.stores import BigQueryParams, BigQuerySource
from sapphire.storage.money import round_money
from sapphire.storage.records import PnlSnapshot
from sapphire.storage.rows import pnl_row
from sapphire.storage.schemas import SchemaMismatchError
from sapphire.storage.sink import StorageSink
from tests.storage.conftest import ticks_from_trades


class SimulatedCrash(BaseException):
    pass


def make_client(endpoint: str, project: str = "test") -> bigquery.Client:
    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": endpoint},
    )


@pytest.fixture
def client(bq_emulator: Emulator) -> bigquery.Client:
    return make_client(bq_emulator.endpoint, bq_emulator.project)


def dataset() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def stored(client: bigquery.Client, table_id: str) -> list[tuple[Any, ...]]:
    sql = f"SELECT * EXCEPT(ts) FROM `{table_id}` ORDER BY producer_id, seq"
    return [tuple(r.values()) for r in client.query(sql).result()]


def two_producers(trades_path: Path, n: int) -> list[pl.DataFrame]:
    a = ticks_from_trades(trades_path, n)
    b = a.with_columns(pl.lit("md-1").alias("producer_id"))
    step = 150
    return [f[i : i + step] for i in range(0, n, step) for f in (a, b)]


@pytest.mark.slow
def test_tables_are_day_partitioned_and_clustered(client: bigquery.Client) -> None:
    backend = BigQueryBackend(client, dataset(), tables=["fills", "ticks"])
    backend.ensure_schema()
    t = client.get_table(backend.table_id("fills"))
    assert t.time_partitioning.type_ == "DAY" and t.time_partitioning.field == "ts"
    assert t.clustering_fields == ["symbol", "agent_id"]
    assert {f.name for f in t.schema} >= {"ts", "ts_ns", "producer_id", "seq", "fee_quote"}
    backend.ensure_schema()  # idempotent on a matching table


@pytest.mark.slow
def test_existing_table_with_other_schema_is_refused(client: bigquery.Client) -> None:
    ds = dataset()
    client.create_dataset(f"{client.project}.{ds}")
    client.create_table(
        bigquery.Table(
            f"{client.project}.{ds}.fills",
            schema=[
                bigquery.SchemaField("ts", "TIMESTAMP"),
                bigquery.SchemaField("fee_quote", "FLOAT64"),
                bigquery.SchemaField("legacy", "STRING"),
            ],
        )
    )
    with pytest.raises(
        SchemaMismatchError,
        match=r"fills.*missing=.*seq.*extra=\['legacy'\].*fee_quote: expected NUMERIC, got FLOAT64",
    ):
        BigQueryBackend(client, ds, tables=["fills"]).ensure_schema()


@pytest.mark.slow
def test_a_table_of_an_earlier_sapphire_gets_the_columns_added_since(
    client: bigquery.Client,
) -> None:
    # fills as Sapphire created it before fee_lots: every existing dataset was refused
    # ("migrate or drop it") by the version that added a column
    from sapphire.adapters.bigquery import bq_schema
    from sapphire.storage.schemas import TABLES

    ds = dataset()
    client.create_dataset(f"{client.project}.{ds}")
    schema = bq_schema(TABLES["fills"])
    # the columns of fills before fee_lots (and liquidation, added after it)
    before = schema[: [f.name for f in schema].index("fee_lots")]
    client.create_table(bigquery.Table(f"{client.project}.{ds}.fills", schema=before))
    backend = BigQueryBackend(client, ds, tables=["fills"])
    backend.ensure_schema()
    fields = {f.name: f for f in client.get_table(backend.table_id("fills")).schema}
    assert fields["fee_lots"].field_type in ("INT64", "INTEGER")
    assert fields["liquidation"].field_type in ("BOOL", "BOOLEAN")
    backend.ensure_schema()  # and then it is Sapphire's table as it stands
    # a column missing elsewhere than at the end is no earlier Sapphire's table: refused
    ds2 = dataset()
    client.create_dataset(f"{client.project}.{ds2}")
    gap = [f for f in bq_schema(TABLES["fills"]) if f.name != "fee_quote"]
    client.create_table(bigquery.Table(f"{client.project}.{ds2}.fills", schema=gap))
    with pytest.raises(SchemaMismatchError, match=r"missing=\['fee_quote'\]"):
        BigQueryBackend(client, ds2, tables=["fills"]).ensure_schema()


def test_a_table_with_a_required_column_or_its_own_numeric_scale_is_refused(
    client: bigquery.Client,
) -> None:
    """Names and types matched, so a table with every column REQUIRED (or money as
    NUMERIC(10, 2)) passed the check, and the first flush with an empty column failed. (The
    fields as BigQuery describes such a table: the emulator keeps neither.)"""
    from sapphire.adapters.bigquery import bq_schema
    from sapphire.storage.schemas import TABLES

    backend = BigQueryBackend(client, dataset(), tables=[])
    required = [
        bigquery.SchemaField(f.name, f.field_type, mode="REQUIRED")
        for f in bq_schema(TABLES["ticks"])
    ]
    with pytest.raises(SchemaMismatchError, match="price_ticks: expected NULLABLE, got REQUIRED"):
        backend.check_schema("ticks", required)
    cents = [
        bigquery.SchemaField(f.name, f.field_type, mode=f.mode, precision=10, scale=2)
        if f.field_type == "NUMERIC"
        else f
        for f in bq_schema(TABLES["fills"])
    ]
    with pytest.raises(
        SchemaMismatchError, match=r"fee_quote: expected NUMERIC, got NUMERIC\(10, 2\)"
    ):
        backend.check_schema("fills", cents)
    for name in ("ticks", "fills"):  # what Sapphire creates passes
        backend.check_schema(name, bq_schema(TABLES[name]))


@pytest.mark.slow
def test_crash_mid_flush_restart_replay_equals_no_fault(
    client: bigquery.Client, trades_path: Path
) -> None:
    batches = two_producers(trades_path, 900)

    clean = BigQueryBackend(client, dataset(), tables=["ticks"], chunk_rows=100)
    sink = StorageSink(clean, batch_size=500)
    for b in batches:
        sink.submit_frame("ticks", b, now_ns=0)
    sink.flush(0)
    want = stored(client, clean.table_id("ticks"))
    assert len(want) == 1800

    class Crashing(BigQueryBackend):
        chunks = 0

        def _insert_chunk(self, name: str, rows: list[dict[str, Any]], ids: list[str]) -> None:
            Crashing.chunks += 1
            if Crashing.chunks == 8:  # 2nd flush (chunks 7..12): one chunk landed, then death
                raise SimulatedCrash
            super()._insert_chunk(name, rows, ids)

    ds = dataset()
    faulty = StorageSink(Crashing(client, ds, tables=["ticks"], chunk_rows=100), batch_size=500)
    with pytest.raises(SimulatedCrash):
        for b in batches:
            faulty.submit_frame("ticks", b, now_ns=0)
    del faulty

    backend = BigQueryBackend(client, ds, tables=["ticks"], chunk_rows=100)
    restarted = StorageSink(backend, batch_size=500)
    marks = restarted.committed()["ticks"]
    # flush 1 held seq 0..299 of both producers; flush 2 sorted by producer landed 300..399
    # of md-0 only: the store holds a prefix per producer, and MAX(seq) says where it ends
    assert marks == {"md-0": 399, "md-1": 299}
    for b in batches:  # producers replay everything unacknowledged (here: everything)
        restarted.submit_frame("ticks", b, now_ns=0)
    restarted.flush(0)
    assert stored(client, backend.table_id("ticks")) == want


def test_a_second_run_into_the_dataset_stores_its_own_rows(
    client: bigquery.Client, trades_path: Path
) -> None:
    # every run writes the same producer names into one dataset: what a sink finds already
    # committed is its own run's, or a second run's rows would be taken for duplicates
    ds = dataset()
    for run_id in ("run-a", "run-b"):
        backend = BigQueryBackend(client, ds, tables=["ticks"], chunk_rows=100, run_id=run_id)
        sink = StorageSink(backend, batch_size=500)
        assert sink.committed().get("ticks", {}) == {}, run_id
        sink.submit_frame("ticks", ticks_from_trades(trades_path, 300, run_id=run_id), now_ns=0)
        sink.flush(0)
    again = StorageSink(BigQueryBackend(client, ds, tables=["ticks"], run_id="run-a"))
    assert again.committed()["ticks"] == {"md-0": 299}  # a restarted run-a finds its rows
    sql = f"SELECT run_id, COUNT(*) AS n FROM `{client.project}.{ds}.ticks` GROUP BY run_id"
    counts = {r["run_id"]: r["n"] for r in client.query(sql).result()}
    assert counts == {"run-a": 300, "run-b": 300}


def test_a_chunk_inserted_twice_is_read_back_once(
    client: bigquery.Client, trades_path: Path, bq_emulator: Emulator
) -> None:
    # a flush retried after an outage re-inserts the chunks that had landed; insert ids
    # deduplicate for about a minute only (the emulator not at all): the reader does
    ds = dataset()
    backend = BigQueryBackend(client, ds, tables=["ticks"], chunk_rows=100, run_id="run-1")
    backend.recover()
    ticks = ticks_from_trades(trades_path, 150)
    rows = ticks.to_dicts()
    for _ in range(2):
        backend._insert_chunk("ticks", rows[:100], [f"id-{i}" for i in range(100)])
    backend._insert_chunk("ticks", rows[100:], [f"id-{i}" for i in range(100, 150)])
    source = BigQuerySource(BigQueryParams(project=bq_emulator.project, dataset=ds), client=client)
    back = source.read("ticks", "run-1").collect()
    assert back.height == 150 and back["seq"].sort().to_list() == list(range(150))


def test_a_summary_and_a_limited_query_download_only_what_they_show(
    client: bigquery.Client, trades_path: Path, bq_emulator: Emulator
) -> None:
    """``sapphire query``'s summary counts in BigQuery and ``--limit`` cuts there: the whole
    run was downloaded for both (24,665 rows for ``--limit 5`` on the demo). Repeated
    chunks count once in either."""
    ds = dataset()
    backend = BigQueryBackend(client, ds, tables=["ticks"], chunk_rows=100, run_id="run-1")
    backend.recover()
    rows = ticks_from_trades(trades_path, 150).to_dicts()
    for _ in range(2):  # a chunk inserted twice
        backend._insert_chunk("ticks", rows[:100], [f"id-{i}" for i in range(100)])
    backend._insert_chunk("ticks", rows[100:], [f"id-{i}" for i in range(100, 150)])
    source = BigQuerySource(BigQueryParams(project=bq_emulator.project, dataset=ds), client=client)
    fetched: list[int] = []
    query = source._query

    def counted(sql: str, params: list[Any]) -> list[dict[str, Any]]:
        got = query(sql, params)
        fetched.append(len(got))
        return got

    source._query = counted  # type: ignore[method-assign]
    summary = source.summary("ticks", "run-1").row(0, named=True)
    expected = ticks_from_trades(trades_path, 150)
    assert summary == {
        "rows": 150,
        "symbols": 1,
        "first_ts_ns": expected["ts_ns"].min(),
        "last_ts_ns": expected["ts_ns"].max(),
    }
    first = source.first_rows("ticks", "run-1", {"symbol": str(expected["symbol"][0])}, 6)
    assert fetched == [1, 6]
    ordered = expected.sort("ts_ns", "producer_id", "seq").head(6)
    assert first["seq"].to_list() == ordered["seq"].to_list()
    assert source.first_rows("ticks", "run-1", {"symbol": "NOSUCH"}, 6).height == 0
    assert source.summary("fills", "run-1")["rows"].item() == 0


@pytest.mark.slow
def test_round_trip_values_and_insert_ids(client: bigquery.Client, trades_path: Path) -> None:
    ticks = ticks_from_trades(trades_path, 120)
    backend = BigQueryBackend(client, dataset(), tables=["ticks"])
    sink = StorageSink(backend, batch_size=500)
    sink.submit_frame("ticks", ticks, now_ns=0)
    assert sink.flush(0) == 120 and backend.insert_calls == 1
    sql = f"SELECT ts, price_ticks, side, bid_ticks FROM `{backend.table_id('ticks')}` ORDER BY seq"
    rows = list(client.query(sql).result())
    assert [r["price_ticks"] for r in rows] == ticks["price_ticks"].to_list()
    assert [r["side"] for r in rows] == ticks["side"].to_list()
    assert all(r["bid_ticks"] is None for r in rows)
    assert int(rows[0]["ts"].timestamp() * 1000) == ticks["ts_ns"][0] // 1_000_000


def test_backoff_retries_transient_errors_exponentially() -> None:
    sleeps: list[float] = []
    unavailable = gexc.ServiceUnavailable("x")  # type: ignore[no-untyped-call]
    attempts = iter([unavailable, requests.ConnectionError("y"), None])

    def flaky() -> str:
        exc = next(attempts)
        if exc is not None:
            raise exc
        return "ok"

    assert with_backoff(flaky, initial_s=0.2, max_s=0.3, sleep=sleeps.append) == "ok"
    assert sleeps == [0.2, 0.3]
    bad = gexc.BadRequest("no")  # type: ignore[no-untyped-call]

    def refused() -> None:
        raise bad

    with pytest.raises(gexc.BadRequest):
        with_backoff(refused, sleep=sleeps.append)
    assert len(sleeps) == 2  # a non-transient error is not retried


def test_unreachable_bigquery_fails_recovery_after_bounded_retries() -> None:
    sleeps: list[float] = []
    dead = make_client(f"http://127.0.0.1:{free_port()}")
    backend = BigQueryBackend(dead, "ds", tables=["ticks"], max_attempts=3, sleep=sleeps.append)
    with pytest.raises(requests.ConnectionError):
        StorageSink(backend)  # without the store's state there is no safe place to resume
    assert sleeps == [0.2, 0.4]


def test_reading_an_unreachable_bigquery_fails_after_bounded_retries() -> None:
    # `sapphire query` / `report --config` read with the library's own retry: 600 s a call,
    # nine tables, and timeout_s / max_attempts ignored (over 11 minutes, no output)
    import time

    dead = make_client(f"http://127.0.0.1:{free_port()}")
    params = BigQueryParams(project="test", dataset="ds", max_attempts=2, timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        BigQuerySource(params, client=dead).read("fills", "some-run").collect()
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_outage_during_flush_keeps_rows_until_bigquery_returns(
    client: bigquery.Client, trades_path: Path
) -> None:
    sleeps: list[float] = []
    backend = BigQueryBackend(
        client, dataset(), tables=["ticks"], max_attempts=2, sleep=sleeps.append
    )
    sink = StorageSink(backend, batch_size=500)
    backend.client = make_client(f"http://127.0.0.1:{free_port()}")  # the endpoint goes away
    ticks = ticks_from_trades(trades_path, 600)
    assert sink.submit_frame("ticks", ticks, now_ns=0).flushed == 0
    assert sink.buffered == 600 and sink.stats.flush_errors == 1 and sleeps == [0.2]
    assert "ConnectionError" in sink.stats.last_error
    backend.client = client  # it is back
    assert sink.flush(1) == 600
    assert [r[5] for r in stored(client, backend.table_id("ticks"))] == list(range(600))


@pytest.mark.slow
def test_malformed_rows_are_rejected_before_bigquery_and_valid_ones_land(
    client: bigquery.Client, trades_path: Path
) -> None:
    rows = ticks_from_trades(trades_path, 3).to_dicts()
    bad = {**rows[1], "price_ticks": "61234.5"}  # a float-ish string where ticks belong
    backend = BigQueryBackend(client, dataset(), tables=["ticks"])
    sink = StorageSink(backend, batch_size=500)
    result = sink.submit("ticks", [rows[0], bad, rows[2]], now_ns=0)
    assert result.accepted == 2 and [r.index for r in result.rejected] == [1]
    assert "price_ticks" in result.rejected[0].reason
    assert sink.flush(0) == 2
    assert [r[5] for r in stored(client, backend.table_id("ticks"))] == [0, 2]


# edge values of DECIMAL(38, 9) / NUMERIC: the largest, a half-even tie, sub-unit residues
MONEY_CASES = [
    ("USDT", Decimal("-0.6300690000000000000000000333")),
    ("USDT", Decimal("0.000000005")),  # tie: to the even 0
    ("USDT", Decimal("-0.000000015")),  # tie: to the even -0.00000002
    ("USDT", Decimal("99999999999999999999999999999.99999999")),
    ("ETH", Decimal("-99999999999999999999999999999.999999999")),
    ("ETH", Decimal("0.0000000015")),  # ETH keeps 9 decimals
    ("BTC", Decimal("1E+3")),
]


@pytest.mark.slow
def test_money_round_trips_exactly_as_numeric(client: bigquery.Client) -> None:
    rows = [
        pnl_row(
            PnlSnapshot(
                ts_event_ns=1_700_000_000_000_000_000 + i,
                agent_id="a",
                symbol=f"S{quote}",
                position_lots=i,
                realized_pnl_quote=value,
                unrealized_pnl_quote=value.copy_negate(),  # exact: unary minus rounds to 28 digits
                fees_quote=value / 7,
                equity_quote=value,
            ),
            run_id="run-m",
            producer_id="coord",
            seq=i,
            quote=quote,
        )
        for i, (quote, value) in enumerate(MONEY_CASES)
    ]
    backend = BigQueryBackend(client, dataset(), tables=["pnl"])
    sink = StorageSink(backend, batch_size=500)
    assert sink.submit("pnl", rows, now_ns=0).rejected == []
    assert sink.flush(0) == len(rows)
    table = client.get_table(backend.table_id("pnl"))
    assert {f.name: f.field_type for f in table.schema}["equity_quote"] == "NUMERIC"

    want = [round_money(value, quote) for quote, value in MONEY_CASES]
    assert want[1] == 0 and want[2] == Decimal("-0.00000002") and want[5] == Decimal("2E-9")
    sql = (
        "SELECT realized_pnl_quote, unrealized_pnl_quote, fees_quote "
        f"FROM `{backend.table_id('pnl')}` ORDER BY seq"
    )
    got = list(client.query(sql).result())
    assert [r["realized_pnl_quote"] for r in got] == want
    assert [r["unrealized_pnl_quote"] for r in got] == [w.copy_negate() for w in want]
    assert [r["fees_quote"] for r in got] == [
        round_money(value / 7, quote) for quote, value in MONEY_CASES
    ]
    # what `sapphire query` / `sapphire report` read: the Parquet reader's dtype and values
    source = BigQuerySource(
        BigQueryParams(project=client.project, dataset=backend.dataset.split(".", 1)[1]),
        client,
    )
    frame = source.read("pnl", "run-m").sort("seq").collect()
    assert frame.schema["equity_quote"] == pl.Decimal(38, 9)
    assert frame["equity_quote"].to_list() == want
    # NUMERIC sums exactly in the store itself (a FLOAT64 would not: 1e29 swallows the cents)
    total_sql = (
        f"SELECT SUM(realized_pnl_quote) AS s FROM `{backend.table_id('pnl')}` "
        "WHERE symbol = 'SUSDT'"
    )
    with localcontext() as ctx:
        ctx.prec = 38  # the default 28 digits would round the expected sum itself
        expected_total = sum(want[:4], Decimal(0))
    assert next(iter(client.query(total_sql).result()))["s"] == expected_total


def test_a_partial_insert_and_a_crash_lose_no_row(
    client: bigquery.Client, trades_path: Path
) -> None:
    # rows 0, 2-4 of a chunk landed, row 1 was refused (backendError) and the process died
    # before its re-send: recovery took MAX(seq) = 4 for stored, so the producer's re-send
    # of row 1 was dropped as a duplicate and lost for good
    ds = dataset()
    backend = BigQueryBackend(client, ds, tables=["ticks"], run_id="run-1")
    backend.recover()
    rows = ticks_from_trades(trades_path, 5, run_id="run-1").to_dicts()
    client.insert_rows_json(
        backend.table_id("ticks"),
        [r for i, r in enumerate(rows) if i != 1],
        row_ids=[f"ticks/md-0/{i}" for i in (0, 2, 3, 4)],
    )
    again = StorageSink(BigQueryBackend(client, ds, tables=["ticks"], run_id="run-1"))
    assert again.committed()["ticks"] == {"md-0": 0}  # the stored run of seqs from 0
    again.submit_frame("ticks", ticks_from_trades(trades_path, 5, run_id="run-1"), now_ns=0)
    assert again.flush(0) == 4
    seqs = [
        r["seq"] for r in client.query(f"SELECT seq FROM `{backend.table_id('ticks')}`").result()
    ]
    assert set(seqs) == {0, 1, 2, 3, 4}


def test_a_retried_flush_sends_only_what_the_failed_one_did_not_store(
    client: bigquery.Client, trades_path: Path
) -> None:
    # the flush's second chunk failed; the sink's retry re-inserted the first chunk's rows,
    # which insert ids deduplicate for a minute only: SQL over the table counted money twice
    ds = dataset()
    backend = BigQueryBackend(client, ds, tables=["ticks"], chunk_rows=50, run_id="run-1")
    sink = StorageSink(backend, batch_size=10_000)
    sink.submit_frame("ticks", ticks_from_trades(trades_path, 50, run_id="run-1"), now_ns=0)
    sink.submit_frame(
        "ticks",
        ticks_from_trades(trades_path, 30, run_id="run-1").with_columns(
            pl.lit("md-1").alias("producer_id")
        ),
        now_ns=0,
    )
    real = backend._insert_chunk
    failures = iter([True])

    def second_producer_fails(name: str, rows: list[dict[str, Any]], ids: list[str]) -> None:
        if rows[0]["producer_id"] == "md-1" and next(failures, False):
            raise ConnectionError("network blip")
        real(name, rows, ids)

    backend._insert_chunk = second_producer_fails  # type: ignore[method-assign]
    assert sink.flush(0) == 0 and sink.stats.flush_errors == 1
    assert sink.flush(10**10) == 80
    sql = f"SELECT producer_id, COUNT(*) AS n FROM `{backend.table_id('ticks')}` GROUP BY 1"
    assert {r["producer_id"]: r["n"] for r in client.query(sql).result()} == {
        "md-0": 50,
        "md-1": 30,
    }


def test_a_retried_flush_skips_rows_stored_past_a_refused_one(
    client: bigquery.Client, trades_path: Path
) -> None:
    """A chunk whose odd rows were refused while its even ones landed holds no prefix: the
    retry sent every row after the first refused one again (54 raw rows for 50)."""
    ds = dataset()
    backend = BigQueryBackend(client, ds, tables=["ticks"], chunk_rows=50, run_id="run-1")
    sink = StorageSink(backend, batch_size=10_000)
    sink.submit_frame("ticks", ticks_from_trades(trades_path, 50, run_id="run-1"), now_ns=0)
    real = backend._insert_chunk
    failures = iter([True])

    def odd_rows_refused(name: str, rows: list[dict[str, Any]], ids: list[str]) -> None:
        if next(failures, False):
            real(name, rows[::2], ids[::2])  # the even rows landed, then the call failed
            raise ConnectionError("network blip")
        real(name, rows, ids)

    backend._insert_chunk = odd_rows_refused  # type: ignore[method-assign]
    assert sink.flush(0) == 0 and sink.stats.flush_errors == 1
    assert sink.flush(10**10) == 50
    sql = f"SELECT COUNT(*) AS n, COUNT(DISTINCT seq) AS d FROM `{backend.table_id('ticks')}`"
    assert [(r["n"], r["d"]) for r in client.query(sql).result()] == [(50, 50)]


def test_rows_refused_again_and_again_fail_the_commit_instead_of_hanging() -> None:
    # a row BigQuery keeps refusing with a transient reason was retried for ever: the run's
    # last flush never returned
    from sapphire.adapters.bigquery import BigQueryInsertError

    class Refusing:
        project = "p"

        def insert_rows_json(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            return [{"index": 0, "errors": [{"reason": "backendError"}]}]

    backend = BigQueryBackend(
        Refusing(),  # type: ignore[arg-type]
        "ds",
        tables=["fills"],
        max_attempts=3,
        sleep=lambda s: None,
    )
    with pytest.raises(BigQueryInsertError, match="still refused after 3 attempts"):
        backend._insert_chunk("fills", [{"x": 1}], ["id"])
