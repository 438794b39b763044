"""Storage: exactly-once event sinks (Parquet, BigQuery) and the L1 > Redis > store cache.

Pure parts: :mod:`~sapphire.storage.schemas` (tables), :mod:`~sapphire.storage.rows`
(messages -> rows, validation), :mod:`~sapphire.storage.records` (risk/LLM/PnL records),
:mod:`~sapphire.storage.sink` (de-dup, buffering, flush policy), :mod:`~sapphire.storage.cache`
(L1) and :mod:`~sapphire.storage.compression`. I/O adapters at the edge:
:mod:`~sapphire.storage.parquet_backend`, :mod:`~sapphire.storage.query` (local files) and
:mod:`~sapphire.storage.tiered` (the hierarchy, over any :class:`~sapphire.storage.tiered.L2Cache`).
The network backends live in :mod:`sapphire.adapters`: :mod:`~sapphire.adapters.bigquery`,
:mod:`~sapphire.adapters.redis_cache` and the dev-only :mod:`~sapphire.adapters.bq_emulator`.
Nothing is imported here, and nothing in this package imports Redis or BigQuery.
"""
