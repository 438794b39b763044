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

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import polars as pl

from sapphire.config.secrets import SecretError, load_secret
from sapphire.config.system import StorageConfig, SystemConfig
from sapphire.storage.query import check_complete, read_table
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
        from google.oauth2 import service_account

        try:
            secret = load_secret(params.credentials_env, secrets_dir=params.secrets_dir or None)
        except SecretError as exc:
            raise StoreError(f"storage.params.credentials_env: {exc}") from None
        assert secret is not None  # required=True
        # the variable holds a key file's path (GOOGLE_APPLICATION_CREDENTIALS style)
        key_file = secret.reveal()
        if not Path(key_file).is_file():
            name = params.credentials_env
            raise StoreError(f"storage.params.credentials_env: {name} names no key file")
        load_key = service_account.Credentials.from_service_account_file
        kwargs["credentials"] = load_key(key_file)  # type: ignore[no-untyped-call]
    return bigquery.Client(**kwargs)


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


class ParquetSource:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def read(self, table: str, run_id: str | None = None) -> pl.LazyFrame:
        if run_id is not None:  # a read of a run is all its committed rows, or an error

            def count() -> int:  # a fresh scan each time: files a flush just moved count
                rows: int = read_table(self.root, table, run_id).select(pl.len()).collect().item()
                return rows

            check_complete(self.root, table, run_id, count)
        return read_table(self.root, table, run_id)


class BigQuerySource:
    """Reads a run back with one query per table; the frame has the Parquet reader's schema
    (plus ``date``), so everything downstream is the same."""

    def __init__(self, params: BigQueryParams, client: bigquery.Client | None = None) -> None:
        self.params = params
        self.client = client or bigquery_client(params)

    @property
    def location(self) -> str:
        return f"bigquery:{self.params.project}.{self.params.dataset}"  # as store_location

    def read(self, table: str, run_id: str | None = None) -> pl.LazyFrame:
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        from sapphire.adapters.bigquery import NO_LIBRARY_RETRY, with_backoff

        schema = table_schema(table)
        table_id = f"{self.params.project}.{self.params.dataset}.{table}"
        sql = f"SELECT {', '.join(schema.names)} FROM `{table_id}`"
        params = []
        if run_id is not None:
            sql += " WHERE run_id = @run_id"
            params.append(bigquery.ScalarQueryParameter("run_id", "STRING", run_id))
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
            rows = with_backoff(
                run,
                max_attempts=self.params.max_attempts,
            )
        except gexc.NotFound:
            rows = []
        frame = pl.DataFrame(rows, schema=schema.polars_schema, orient="row")
        # a row is (run, producer, seq): a batch retried after an outage may have inserted
        # its first chunks twice (BigQuery drops repeated insert ids for about a minute only)
        frame = frame.unique(subset=["run_id", "producer_id", "seq"], maintain_order=True)
        date = pl.from_epoch(pl.col("ts_ns"), time_unit="ns").dt.date().alias("date")
        return frame.with_columns(date).lazy()


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
