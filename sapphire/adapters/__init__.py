"""Adapters: the I/O edge of Sapphire, where the pure core meets networks and services.

Everything here talks to something outside the process, or stands in for such a thing in tests:

* ccxt: :mod:`~sapphire.adapters.ccxt_gateway` (live order entry),
  :mod:`~sapphire.adapters.ccxt_stream` (ccxt.pro market data), with their helpers
  :mod:`~sapphire.adapters.ccxt_retry`, :mod:`~sapphire.adapters.ccxt_tracking` and
  :mod:`~sapphire.adapters.ccxt_credentials`;
* Redis: :mod:`~sapphire.adapters.redis_cache` (the L2 cache);
* BigQuery: :mod:`~sapphire.adapters.bigquery` (the exactly-once sink backend);
* test doubles: :mod:`~sapphire.adapters.binance_double` (Binance REST over aiohttp),
  :mod:`~sapphire.adapters.binance_ws_double` (its market streams),
  :mod:`~sapphire.adapters.binance_venue` (the venue state behind it) and
  :mod:`~sapphire.adapters.bq_emulator` (the BigQuery emulator, dev only).

The pure core (every other ``sapphire`` subpackage but the CLI) never imports this package,
nor ray, ccxt, redis, google.cloud, aiohttp or websockets; the actor layer (``actors``) wires
adapters in. ``[tool.importlinter]`` in pyproject.toml enforces both, and ``./dev test`` runs it.
The ccxt <-> ticks/lots conversions stay pure in :mod:`sapphire.exchange.ccxt_convert`.
Nothing is imported here, so ``import sapphire.adapters`` pulls in no client library.
"""
