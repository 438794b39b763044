"""Storage: exactly-once event sinks (Parquet, BigQuery) and the L1 > Redis > store cache.

Pure parts: :mod:`~sapphire.storage.schemas` (tables), :mod:`~sapphire.storage.rows`
(messages -> rows, validation), :mod:`~sapphire.storage.records` (risk/LLM/PnL records),
:mod:`~sapphire.storage.sink` (de-dup, buffering, flush policy), :mod:`~sapphire.storage.cache`
(L1) and :mod:`~sapphire.storage.compression`. I/O adapters at the edge:
:mod:`~sapphire.storage.parquet_backend`, :mod:`~sapphire.storage.query`,
:mod:`~sapphire.storage.bigquery_backend`, :mod:`~sapphire.storage.redis_cache`,
:mod:`~sapphire.storage.tiered` and the dev-only :mod:`~sapphire.storage.bq_emulator`.
Nothing is imported here, so ``import sapphire.storage`` pulls in neither Redis nor BigQuery.
"""
