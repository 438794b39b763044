"""Where a run's rows go and come back from: the Parquet store or BigQuery, chosen by
``storage.backend``. One builder for the sink backend (``sapphire run`` and ``sapphire
backtest`` both use it) and one reader (``sapphire query`` and ``sapphire report``), so a run
stored in BigQuery reads back exactly as one stored in Parquet.

BigQuery settings live in ``storage.params`` (:class:`BigQueryParams`). Credentials never
appear in a config: the client takes Application Default Credentials, or the service-account
key file named by the environment variable ``credentials_env`` (or a secret file, see
:func:`sapphire.config.secrets.load_secret`); ``anonymous: true`` is for an emulator only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import polars as pl

from sapphire.config.secrets import SecretError, check_env_name, load_secret
from sapphire.config.system import StorageConfig, SystemConfig
from sapphire.storage.query import read_table
from sapphire.storage.schemas import table_schema
from sapphire.storage.sink import SinkBackend

if TYPE_CHECKING:
    from google.cloud import bigquery


class StoreError(ValueError):
    """A storage setting that cannot be used (one line, naming the field)."""


class BigQueryParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    project: str
    dataset: str
    location: str = "US"
    # e.g. an emulator (http://127.0.0.1:9050); "" = Google's endpoint
    api_endpoint: str = ""
    # env var naming a service-account JSON key file (or NAME_FILE / secrets_dir); "" = ADC
    credentials_env: str = ""
    secrets_dir: str = ""
    anonymous: bool = False  # no credentials at all: an emulator
    chunk_rows: int = 500  # streaming insert batch (the seed's 500)
    timeout_s: float = 30.0
    max_attempts: int = 6

    def __post_init__(self) -> None:
        try:
            check_env_name("storage.params.credentials_env", self.credentials_env)
        except SecretError as exc:
            raise StoreError(str(exc)) from None
        if not self.project or not self.dataset:
            raise StoreError("storage.params: project and dataset are required for bigquery")
        if self.chunk_rows < 1 or self.timeout_s <= 0 or self.max_attempts < 1:
            raise StoreError("storage.params: chunk_rows, timeout_s, max_attempts must be > 0")


def bigquery_params(storage: StorageConfig) -> BigQueryParams:
    try:
        return msgspec.convert(storage.params, BigQueryParams)
    except (msgspec.ValidationError, StoreError) as exc:
        raise StoreError(f"storage.params (bigquery): {exc}") from None


def bigquery_client(params: BigQueryParams) -> bigquery.Client:
    from google.cloud import bigquery

    kwargs: dict[str, Any] = {"project": params.project, "location": params.location}
    if params.api_endpoint:
        kwargs["client_options"] = {"api_endpoint": params.api_endpoint}
    if params.anonymous:
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
    elif params.credentials_env:
        try:
            secret = load_secret(params.credentials_env, secrets_dir=params.secrets_dir or None)
        except SecretError as exc:
            raise StoreError(f"storage.params.credentials_env: {exc}") from None
        assert secret is not None  # required=True
        kwargs["credentials"] = _service_account(params.credentials_env, secret.reveal())
    return bigquery.Client(**kwargs)


def _service_account(name: str, value: str) -> Any:
    """Credentials from the secret ``name``: a key file's path (``NAME``, as
    GOOGLE_APPLICATION_CREDENTIALS) or the key itself (the JSON, as ``NAME_FILE``, a
    secrets_dir file or CI variables give it). No error says the value: read as a path,
    a key's JSON raised "File name too long: '<the private key>'", printed by every command."""
    from google.oauth2 import service_account

    where = f"storage.params.credentials_env: {name}"
    creds = service_account.Credentials
    if value.lstrip().startswith("{"):
        try:
            info = json.loads(value)
            return creds.from_service_account_info(info)  # type: ignore[no-untyped-call]
        except (ValueError, KeyError, TypeError) as exc:
            # the library's messages name fields, never values; its type is enough here
            raise StoreError(
                f"{where} holds no usable service account key ({type(exc).__name__})"
            ) from None
    try:
        is_file = Path(value).is_file()
    except (OSError, ValueError):  # too long, or a NUL: no path
        is_file = False
    if not is_file:
        raise StoreError(f"{where} names no key file (and holds no key's JSON)")
    try:
        return creds.from_service_account_file(value)  # type: ignore[no-untyped-call]
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(
            f"{where}: its key file is no usable service account key ({type(exc).__name__})"
        ) from None


def _parquet_backend(root: str, run_id: str) -> SinkBackend:
    from sapphire.storage.parquet_backend import ParquetBackend

    # One dataset for all runs (rows carry run_id); one manifest per run's sink.
    return ParquetBackend(Path(root) / "store", sink_id=run_id)


def _bigquery_backend(params: BigQueryParams, run_id: str) -> SinkBackend:
    from sapphire.adapters.bigquery import BigQueryBackend

    # recover() creates the dataset and tables and checks their schema before any write,
    # and reads what this run (one dataset holds every run) already committed
    return BigQueryBackend(
        bigquery_client(params),
        params.dataset,
        chunk_rows=params.chunk_rows,
        timeout_s=params.timeout_s,
        max_attempts=params.max_attempts,
        run_id=run_id,
    )


def backend_builder(storage: StorageConfig, run_id: str) -> Callable[[], SinkBackend]:
    """A picklable builder of the run's sink backend (settings checked here, at start)."""
    from functools import partial

    if storage.backend == "bigquery":
        return partial(_bigquery_backend, bigquery_params(storage), run_id)
    return partial(_parquet_backend, str(Path(storage.root).resolve()), run_id)


def stored_tables(storage: StorageConfig, run_id: str) -> list[str]:
    """The tables that hold rows of run ``run_id`` already. A run id names one run: a second
    run under it would have its rows dropped as the first's duplicates (same producers and
    seqs) and mixed into that run's."""
    marks = backend_builder(storage, run_id)().recover().watermarks
    return sorted(table for table, by_producer in marks.items() if by_producer)


# ---------------------------------------------------------------------------- reading back
class StoreSource(Protocol):
    """A stored run's tables, as ``sapphire query`` and ``sapphire report`` read them."""

    @property
    def location(self) -> str: ...

    def read(self, table: str, run_id: str | None = None) -> pl.LazyFrame: ...

    def summary(self, table: str, run_id: str) -> pl.DataFrame:
        """One row: ``rows``, ``symbols``, ``first_ts_ns``, ``last_ts_ns`` of the run."""
        ...

    def first_rows(
        self, table: str, run_id: str, equals: Mapping[str, str], limit: int
    ) -> pl.DataFrame:
        """The run's rows whose columns equal ``equals``, in time order (``ts_ns``, then
        producer and sequence), the first ``limit`` of them (0: all)."""
        ...


SUMMARY_SCHEMA = {
    "rows": pl.Int64,
    "symbols": pl.Int64,
    "first_ts_ns": pl.Int64,
    "last_ts_ns": pl.Int64,
}
ROW_ORDER = ("ts_ns", "producer_id", "seq")


class ParquetSource:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def read(self, table: str, run_id: str | None = None) -> pl.LazyFrame:
        # a read of a run is all its committed rows, or an error, when it is collected
        # (read_table: counted against the files read, which a merge may move meanwhile)
        return read_table(self.root, table, run_id)

    def summary(self, table: str, run_id: str) -> pl.DataFrame:
        return (
            self.read(table, run_id)
            .select(
                pl.len().alias("rows"),
                pl.col("symbol").n_unique().alias("symbols"),
                pl.col("ts_ns").min().alias("first_ts_ns"),
                pl.col("ts_ns").max().alias("last_ts_ns"),
            )
            .collect()
            .cast(SUMMARY_SCHEMA)  # type: ignore[arg-type]
        )

    def first_rows(
        self, table: str, run_id: str, equals: Mapping[str, str], limit: int
    ) -> pl.DataFrame:
        lf = self.read(table, run_id)
        for column, value in equals.items():
            lf = lf.filter(pl.col(column) == value)
        lf = lf.sort(*ROW_ORDER)
        return (lf.head(limit) if limit > 0 else lf).collect()


class BigQuerySource:
    """Reads a run back with one query per table; the frame has the Parquet reader's schema
    (plus ``date``), so everything downstream is the same."""

    def __init__(self, params: BigQueryParams, client: bigquery.Client | None = None) -> None:
        self.params = params
        self.client = client or bigquery_client(params)

    @property
    def location(self) -> str:
        return f"bigquery:{self.params.project}.{self.params.dataset}"  # as store_location

    def _table_id(self, table: str) -> str:
        return f"{self.params.project}.{self.params.dataset}.{table}"

    def _rows_sql(
        self, table: str, columns: str, run_id: str | None, equals: Mapping[str, str]
    ) -> tuple[str, list[Any]]:
        """``columns`` of a table's rows, each (run, producer, seq) once: a batch retried
        after an outage may have inserted its first chunks twice (BigQuery drops repeated
        insert ids for about a minute only), and counting or limiting in the query must
        not see the repeats."""
        from google.cloud import bigquery

        where = ["TRUE"]
        params: list[Any] = []
        for i, (column, value) in enumerate({"run_id": run_id, **equals}.items()):
            if value is None:
                continue
            if column not in table_schema(table).names:
                raise ValueError(f"table {table!r} has no column {column!r}")
            where.append(f"{column} = @p{i}")
            params.append(bigquery.ScalarQueryParameter(f"p{i}", "STRING", value))
        sql = (
            f"SELECT {columns} FROM `{self._table_id(table)}` WHERE {' AND '.join(where)} "
            "QUALIFY ROW_NUMBER() OVER (PARTITION BY run_id, producer_id, seq ORDER BY ts_ns) = 1"
        )
        return sql, params

    def _query(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        """The rows of one query (none where the table does not exist)."""
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        from sapphire.adapters.bigquery import NO_LIBRARY_RETRY, with_backoff

        config = bigquery.QueryJobConfig(query_parameters=params)

        def run() -> list[dict[str, Any]]:
            # the library's own retries (600 s a call) are off, as for writes: the backend's
            # bounded backoff retries what is transient, then the read fails in one line
            job = self.client.query(
                sql,
                job_config=config,
                timeout=self.params.timeout_s,
                retry=NO_LIBRARY_RETRY,
                job_retry=None,
            )
            result = job.result(timeout=self.params.timeout_s, retry=NO_LIBRARY_RETRY)
            return [dict(r.items()) for r in result]

        try:
            rows: list[dict[str, Any]] = with_backoff(run, max_attempts=self.params.max_attempts)
        except gexc.NotFound:
            return []
        return rows

    def _frame(self, table: str, rows: list[dict[str, Any]]) -> pl.LazyFrame:
        frame = pl.DataFrame(rows, schema=table_schema(table).polars_schema, orient="row")
        date = pl.from_epoch(pl.col("ts_ns"), time_unit="ns").dt.date().alias("date")
        return frame.with_columns(date).lazy()

    def read(self, table: str, run_id: str | None = None) -> pl.LazyFrame:
        columns = ", ".join(table_schema(table).names)
        return self._frame(table, self._query(*self._rows_sql(table, columns, run_id, {})))

    def summary(self, table: str, run_id: str) -> pl.DataFrame:
        """Counted in the query: the run's rows never leave BigQuery for a summary."""
        inner, params = self._rows_sql(table, "symbol, ts_ns", run_id, {})
        sql = (
            # `rows` is a reserved word in GoogleSQL: quoted
            "SELECT COUNT(*) AS `rows`, COUNT(DISTINCT symbol) AS symbols, "
            f"MIN(ts_ns) AS first_ts_ns, MAX(ts_ns) AS last_ts_ns FROM ({inner})"
        )
        found = self._query(sql, params) or [{"rows": 0, "symbols": 0}]
        return pl.DataFrame(found, schema=SUMMARY_SCHEMA, orient="row")

    def first_rows(
        self, table: str, run_id: str, equals: Mapping[str, str], limit: int
    ) -> pl.DataFrame:
        """Filtered, ordered and cut in the query: ``--limit 5`` reads 5 rows."""
        columns = ", ".join(table_schema(table).names)
        sql, params = self._rows_sql(table, columns, run_id, equals)
        sql += f" ORDER BY {', '.join(ROW_ORDER)}"
        if limit > 0:
            sql += f" LIMIT {int(limit)}"
        return self._frame(table, self._query(sql, params)).collect()


def next_query(run_id: str, config_path: str | os.PathLike[str], config: SystemConfig) -> str:
    """The command that shows a run's fills, wherever it is stored."""
    if config.storage.backend == "bigquery":
        return f"sapphire query {run_id} --config {config_path} --table fills"
    store = Path(config.storage.root).resolve() / "store"
    return f"sapphire query {run_id} --root {store} --table fills"


def store_location(config: SystemConfig) -> str:
    """Where a config's runs are stored, as the end-of-run screen names it."""
    if config.storage.backend == "bigquery":
        params = bigquery_params(config.storage)
        return f"bigquery:{params.project}.{params.dataset}"
    return str(Path(config.storage.root).resolve() / "store")


def open_source(config: SystemConfig) -> StoreSource:
    """The store of a system config, for reading runs back."""
    if config.storage.backend == "bigquery":
        return BigQuerySource(bigquery_params(config.storage))
    return ParquetSource(Path(config.storage.root).resolve() / "store")
