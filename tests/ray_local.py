"""Start a local Ray cluster for a test, trying again when it fails to come up.

Why: CI has two cores and pytest-xdist runs two test files at once; a cluster starting while
the other worker's cluster is busy sometimes misses Ray's own start-up deadlines (the GCS or
the raylet not answering in time: "timed out during startup", "Failed to connect to GCS").
Those are the machine's load, not the product: one clean retry after the half-started
cluster is shut down. A cluster that fails three times fails the test with Ray's error.
"""

from __future__ import annotations

import time
from typing import Any

import ray

ATTEMPTS = 3


def init_local(**options: Any) -> Any:
    """``ray.init(address="local", **options)``, retried on a start-up failure."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return ray.init(address="local", **options)
        except Exception:
            # What a failed start left (a GCS or raylet of this process) is this process's own.
            ray.shutdown()
            if attempt == ATTEMPTS:
                raise
            time.sleep(2.0 * attempt)
    raise AssertionError("unreachable")
