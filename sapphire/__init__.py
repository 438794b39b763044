"""Sapphire: pure trading logic (no Ray, no network, no clock).

The money rule, decided once for the whole platform
----------------------------------------------------
* **Prices are integer ticks** and **quantities are integer lots** of their
  :class:`~sapphire.model.instrument.Instrument` (fields ``*_ticks`` / ``*_lots``).
  Matching, books, risk limits and agents compare and add plain ``int``; no float ever
  decides whether an order crosses or how much is filled.
* **Cash amounts** (balances, notionals, fees, PnL, funding) are :class:`decimal.Decimal`
  in the instrument's quote asset (fields ``*_quote``). They are produced only by the
  instrument (``Instrument.notional_quote``), so the conversion from ticks x lots to money
  lives in one place.
* Floats appear only at the research edge (polars frames, indicators, A-S maths); they are
  turned into ticks/lots by ``Instrument.price_to_ticks`` / ``qty_to_lots`` with an explicit
  rounding direction before anything is traded.

Time
----
Every timestamp is an ``int`` of nanoseconds since the Unix epoch, UTC: ``ts_event_ns`` (the
exchange's event time) and ``ts_recv_ns`` (local receive time, where the recording has it).
Nothing in this package reads the clock: callers pass ``now_ns``.

Layers
------
Every subpackage is pure except two edges: :mod:`sapphire.adapters` (ccxt, Redis, BigQuery and
the test doubles that stand in for them) and :mod:`sapphire.cli` (the command, which starts the
Ray layer in ``actors``). The pure core imports neither edge, nor Ray or a network client, and
nothing in ``sapphire`` imports ``actors`` but the CLI's run/tune handlers; ``lint-imports``
(``[tool.importlinter]`` in pyproject.toml) enforces this in ``./dev test``.
"""

__version__ = "0.1.0"
