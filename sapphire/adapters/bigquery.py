"""BigQuery backend: streaming inserts through the real google-cloud-bigquery client.

Tables are DAY-partitioned on ``ts`` (a TIMESTAMP derived from ``ts_ns``, which is kept as
INT64 for nanosecond precision) and clustered on ``[symbol, agent_id]``.

Exactly-once without a transaction: each flush inserts a table's rows sorted by
``(producer_id, seq)`` in chunks of ``chunk_rows``, one chunk after the other, so whatever a
crash leaves stored is, per producer, a **prefix** of its rows. :meth:`recover` therefore
reads each producer's ``MAX(seq)`` back from the tables themselves -- no separate manifest
can disagree with the data. Every row also carries ``insertId = table/producer/seq`` so real
BigQuery's best-effort de-duplication drops a chunk re-sent after a timeout whose first try
did land (the emulator ignores insertId; the prefix rule does not need it).

Money columns are NUMERIC, the same DECIMAL(38, 9) as the Parquet store's (see
:mod:`sapphire.storage.schemas`); rows travel as JSON with their decimals as fixed-point
strings, which BigQuery parses exactly (a JSON number would go through a float).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl
import polars.selectors as cs
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import bigquery

from sapphire.storage.schemas import TABLES, SchemaMismatchError, TableSchema
from sapphire.storage.sink import CommitState

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.BadGateway,
    gexc.GatewayTimeout,
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
)
_TRANSIENT_REASONS = frozenset({"backendError", "internalError", "timeout", "rateLimitExceeded"})
# the client's own retry would wait up to 10 minutes on a dead endpoint; ours is bounded
NO_LIBRARY_RETRY = Retry(predicate=lambda _exc: False)

_TYPE_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "DECIMAL": "NUMERIC"}


class BigQueryInsertError(RuntimeError):
    """Rows BigQuery refused for a non-transient reason (the sink keeps them buffered)."""


def with_backoff(
    call: Callable[[], Any],
    *,
    max_attempts: int = 6,
    initial_s: float = 0.2,
    max_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    transient: tuple[type[BaseException], ...] = TRANSIENT,
) -> Any:
    """Run ``call``; on a transient error sleep ``initial_s * 2**k`` (capped) and try again."""
    delay = initial_s
    for attempt in range(1, max_attempts + 1):
        try:
            return call()
        except transient as exc:
            if attempt == max_attempts:
                raise
            log.warning("bigquery: transient %s (try %d/%d)", exc, attempt, max_attempts)
            sleep(delay)
            delay = min(delay * 2, max_s)
    raise AssertionError("unreachable")


def bq_schema(schema: TableSchema) -> list[bigquery.SchemaField]:
    fields = [bigquery.SchemaField("ts", "TIMESTAMP", mode="REQUIRED")]
    fields += [
        bigquery.SchemaField(c.name, c.bq_type, mode="NULLABLE" if c.nullable else "REQUIRED")
        for c in schema.columns
    ]
    return fields


def _ts(ts_ns: int) -> str:
    # BigQuery TIMESTAMP holds microseconds; ts_ns keeps the full value alongside.
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns // 1000:06d}Z"


_ROW_KEY = ["producer_id", "seq"]


class BigQueryBackend:
    """:class:`~sapphire.storage.sink.SinkBackend` streaming into ``project.dataset``."""

    def __init__(
        self,
        client: bigquery.Client,
        dataset: str,
        *,
        tables: Sequence[str] | None = None,
        chunk_rows: int = 500,
        max_attempts: int = 6,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        run_id: str | None = None,
    ) -> None:
        """``run_id``: the run this sink writes (every run shares the dataset and its
        producers' names, so what it already holds is read for this run only; None: every
        row, for a dataset one producer set writes alone)."""
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        self.client = client
        self.dataset = f"{client.project}.{dataset}"
        self.tables = list(TABLES) if tables is None else list(tables)
        self.chunk_rows = chunk_rows
        self._max_attempts = max_attempts
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self.timeout_s = timeout_s
        self.inserted_rows = 0
        self.insert_calls = 0
        self.run_id = run_id
        # a commit raised since the last one that succeeded: part of its rows may be in
        # the tables, so the next commit first reads what is stored and sends the rest
        self._unsure = False

    def table_id(self, table: str) -> str:
        return f"{self.dataset}.{table}"

    # ------------------------------------------------------------------ schema
    def ensure_schema(self) -> None:
        """Create the dataset and tables; refuse an existing table whose schema differs."""
        self._call(
            functools.partial(
                self.client.create_dataset,
                self.dataset,
                exists_ok=True,
                retry=NO_LIBRARY_RETRY,
                timeout=self.timeout_s,
            )
        )
        for name in self.tables:
            schema = TABLES[name]
            table = bigquery.Table(self.table_id(name), schema=bq_schema(schema))
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field="ts"
            )
            table.clustering_fields = ["symbol", "agent_id"]
            created = self._call(
                functools.partial(
                    self.client.create_table,
                    table,
                    exists_ok=True,
                    retry=NO_LIBRARY_RETRY,
                    timeout=self.timeout_s,
                )
            )
            self.check_schema(name, list(self._appended(name, created).schema))

    def _appended(self, name: str, table: bigquery.Table) -> bigquery.Table:
        """A table an earlier Sapphire created, which lacks only columns added since at the
        end of the schema (``fills.fee_lots``), gets them, NULLABLE: its older rows read
        them as null, as a Parquet store's older files do. Anything else (a column missing
        in the middle, one of another type, one Sapphire does not know) is left to
        :meth:`check_schema` to refuse: upgrading Sapphire refused every existing dataset
        with "migrate or drop it"."""
        want = bq_schema(TABLES[name])
        have = [f.name for f in table.schema]
        if not have or have != [f.name for f in want[: len(have)]] or len(have) == len(want):
            return table
        added = [
            bigquery.SchemaField(f.name, f.field_type, mode="NULLABLE") for f in want[len(have) :]
        ]
        table.schema = [*table.schema, *added]
        updated: bigquery.Table = self._call(
            functools.partial(
                self.client.update_table,
                table,
                ["schema"],
                retry=NO_LIBRARY_RETRY,
                timeout=self.timeout_s,
            )
        )
        log.warning(
            "BigQuery table %s: added the column(s) %s (NULLABLE: its older rows read null)",
            self.table_id(name),
            ", ".join(f.name for f in added),
        )
        return updated

    def check_schema(self, name: str, fields: Sequence[bigquery.SchemaField]) -> None:
        want = {
            f.name: _TYPE_ALIASES.get(f.field_type, f.field_type) for f in bq_schema(TABLES[name])
        }
        got = {f.name: _TYPE_ALIASES.get(f.field_type, f.field_type) for f in fields}
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        wrong = sorted(
            f"{n}: expected {want[n]}, got {got[n]}"
            for n in set(want) & set(got)
            if want[n] != got[n]
        )
        # a column Sapphire may leave empty must not be REQUIRED there (every row with it
        # empty would be refused at the first flush, not here), and a NUMERIC declared with
        # its own precision or scale rounds or refuses the money Sapphire stores
        nullable = {f.name for f in bq_schema(TABLES[name]) if f.mode == "NULLABLE"}
        for f in fields:
            if f.name in nullable and (f.mode or "NULLABLE") != "NULLABLE":
                wrong.append(f"{f.name}: expected NULLABLE, got {f.mode}")
            if f.name in want and want[f.name] == "NUMERIC" and (f.precision or f.scale):
                wrong.append(f"{f.name}: expected NUMERIC, got NUMERIC({f.precision}, {f.scale})")
        if missing or extra or wrong:
            raise SchemaMismatchError(
                f"BigQuery table {self.table_id(name)} does not match Sapphire's {name!r} schema "
                f"(missing={missing}, extra={extra}, wrong types or modes={wrong}); "
                "migrate or drop it"
            )

    # ------------------------------------------------------------------ SinkBackend
    def recover(self) -> CommitState:
        self.ensure_schema()
        state = CommitState()
        for name in self.tables:
            marks = self._stored_marks(name)
            if marks:
                state.watermarks[name] = marks
        return state

    def _stored_marks(self, name: str) -> dict[str, int]:
        """Per producer, the last seq of the stored run of seqs from 0 (a producer's seqs are
        dense from 0). Streaming inserts are no transaction: a chunk whose row 1 was refused
        while rows 2-4 landed holds no prefix, and ``MAX(seq)`` (4) took row 1 for stored,
        so its re-send was dropped as a duplicate and lost. Rows past a gap are sent again
        (readers take each seq once)."""
        # this run's rows only: another run's seqs (same producer names) are not this one's
        where = "" if self.run_id is None else "WHERE run_id = @run_id "
        params = [] if self.run_id is None else [("run_id", self.run_id)]
        sql = (
            "SELECT producer_id, MIN(seq) AS first, "
            "MIN(IF(nxt IS NULL OR nxt > seq + 1, seq, NULL)) AS seq FROM ("
            "SELECT producer_id, seq, LEAD(seq) OVER (PARTITION BY producer_id ORDER BY seq) "
            f"AS nxt FROM (SELECT DISTINCT producer_id, seq FROM `{self.table_id(name)}` "
            f"{where})) GROUP BY producer_id"
        )
        rows = self._call(functools.partial(self._query_rows, sql, params))
        return {str(r["producer_id"]): int(r["seq"]) for r in rows if int(r["first"]) == 0}

    def _stored_seqs(self, name: str, frame: pl.DataFrame) -> pl.DataFrame:
        """``(producer_id, seq)`` of ``frame``'s rows already in the table: every one, not a
        prefix. Streaming inserts are no transaction: a failed chunk may have stored rows past
        its first refused one, and sending them again left them twice in the raw table for
        any reader but Sapphire's own (after insertId's minute of deduplication)."""
        params: list[tuple[str, str | int]] = [
            ("lo", int(frame["seq"].min())),  # type: ignore[arg-type]
            ("hi", int(frame["seq"].max())),  # type: ignore[arg-type]
        ]
        where = "seq BETWEEN @lo AND @hi"
        if self.run_id is not None:
            where += " AND run_id = @run_id"
            params.append(("run_id", self.run_id))
        sql = f"SELECT DISTINCT producer_id, seq FROM `{self.table_id(name)}` WHERE {where}"
        rows = self._call(functools.partial(self._query_rows, sql, params))
        return pl.DataFrame(
            [(str(r["producer_id"]), int(r["seq"])) for r in rows],
            schema={"producer_id": frame.schema["producer_id"], "seq": frame.schema["seq"]},
            orient="row",
        )

    def _query_rows(self, sql: str, params: Sequence[tuple[str, str | int]] = ()) -> list[Any]:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(k, "INT64" if isinstance(v, int) else "STRING", v)
                for k, v in params
            ]
        )
        job = self.client.query(
            sql,
            job_config=config,
            retry=NO_LIBRARY_RETRY,
            job_retry=None,
            timeout=self.timeout_s,
        )
        return list(job.result(retry=NO_LIBRARY_RETRY, job_retry=None, timeout=self.timeout_s))

    def commit(self, flush_id: int, frames: Mapping[str, pl.DataFrame], state: CommitState) -> None:
        del flush_id, state  # the rows themselves are the commit record
        unsure, self._unsure = self._unsure, True  # until this commit has returned
        for name, frame in frames.items():
            if frame.height == 0:
                continue
            if name not in self.tables:
                raise SchemaMismatchError(f"table {name!r} is not managed by this backend")
            if unsure:  # a retried batch: what the failed commit stored is not sent twice
                frame = frame.join(self._stored_seqs(name, frame), on=_ROW_KEY, how="anti")
                if frame.height == 0:
                    continue
            # Decimal -> "-0.630069000": json cannot encode a Decimal, and polars writes the
            # column's fixed scale, never an exponent BigQuery would refuse
            ordered = frame.sort("producer_id", "seq").with_columns(cs.decimal().cast(pl.String))
            rows = ordered.to_dicts()
            for row in rows:
                row["ts"] = _ts(row["ts_ns"])
            for start in range(0, len(rows), self.chunk_rows):
                chunk = rows[start : start + self.chunk_rows]
                ids = [f"{name}/{r['producer_id']}/{r['seq']}" for r in chunk]
                self._insert_chunk(name, chunk, ids)
        self._unsure = False

    def _insert_chunk(self, name: str, rows: list[dict[str, Any]], ids: list[str]) -> None:
        pending_rows, pending_ids = rows, ids
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                self._sleep(self._backoff_initial_s)
            errors = self._call(
                functools.partial(
                    self.client.insert_rows_json,
                    self.table_id(name),
                    pending_rows,
                    row_ids=pending_ids,
                    retry=NO_LIBRARY_RETRY,
                    timeout=self.timeout_s,
                )
            )
            self.insert_calls += 1
            if not errors:
                self.inserted_rows += len(pending_rows)
                return
            failed = {int(e["index"]) for e in errors}
            reasons = {err.get("reason", "") for e in errors for err in e.get("errors", [])}
            if not reasons <= _TRANSIENT_REASONS | {"stopped"}:
                raise BigQueryInsertError(f"{self.table_id(name)}: rows refused: {errors[:3]}")
            self.inserted_rows += len(pending_rows) - len(failed)
            # re-send only the failed rows, with the same insertIds
            keep = sorted(failed)
            pending_rows = [pending_rows[i] for i in keep]
            pending_ids = [pending_ids[i] for i in keep]
        # still refused: the commit fails (the sink keeps the rows and retries the flush)
        # instead of retrying for ever while the run's last flush never returns
        raise BigQueryInsertError(
            f"{self.table_id(name)}: {len(pending_rows)} rows still refused after "
            f"{self._max_attempts} attempts"
        )

    def _call(self, call: Callable[[], Any]) -> Any:
        return with_backoff(
            call,
            max_attempts=self._max_attempts,
            initial_s=self._backoff_initial_s,
            max_s=self._backoff_max_s,
            sleep=self._sleep,
        )
