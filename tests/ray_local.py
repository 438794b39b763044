"""Local Ray clusters for tests: started once per test process and options, retried when one
fails to come up.

Why one per process: a cluster costs ~5.6 s of CPU to start (its GCS, raylet, agents and
prestarted workers) and ~1.4 s to stop, on CI's 2 cores shared by two pytest-xdist workers.
Most test modules ask for the same one (``num_cpus=4``, no dashboard), so a module done with
it releases it (:func:`release_local`) instead of stopping it, and the next module asking for
the same options takes it over. A module asking for others gets a new one; a test in a module
that asked for none finds none (:func:`drop_released`, run before every test: a test may
check that nothing started Ray, or start its own). What a module leaves behind is what a run
leaves: every test's system is shut down by the test (``shutdown_system``), and the actors'
names carry their run id.

Why the retries: CI has two cores and pytest-xdist runs two test files at once; a cluster
starting while the other worker's cluster is busy sometimes misses Ray's own start-up
deadlines (the GCS or the raylet not answering in time: "timed out during startup", "Failed
to connect to GCS"). Those are the machine's load, not the product: one clean retry after the
half-started cluster is shut down. A cluster that fails three times fails the test with Ray's
error.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray

ATTEMPTS = 3

_held: tuple[str, dict[str, Any]] | None = None  # (GCS address, options) of this process's
_in_use = False  # a module holds it (between its init_local and release_local)


def _options_key(options: dict[str, Any]) -> dict[str, Any]:
    # the driver's namespace names nothing the tests look up (every system actor's namespace
    # is the config's), so a module asking for another one still takes the cluster over
    return {k: v for k, v in options.items() if k != "namespace"}


def _current_address() -> str | None:
    if not ray.is_initialized():
        return None
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # a cluster half gone: not one to take over
        return None


def init_local(env: dict[str, str] | None = None, **options: Any) -> Any:
    """A local cluster with ``options`` (those of ``ray.init(address="local", ...)``), this
    process's released one where it was started with the same options and ``env``, else a new
    one. ``env``: set in this process's environment before a new cluster starts, so its
    workers inherit it (as a deployment's workers have their credentials)."""
    global _held, _in_use
    key = {**_options_key(options), "env": dict(sorted((env or {}).items()))}
    if _held is not None and _held[1] == key and _current_address() == _held[0]:
        _in_use = True
        return None
    if ray.is_initialized():  # a released cluster of other options, or a test's own ray.init
        ray.shutdown()
    os.environ.update(env or {})
    for attempt in range(1, ATTEMPTS + 1):
        try:
            context = ray.init(address="local", **options)
        except Exception:
            # What a failed start left (a GCS or raylet of this process) is this process's own.
            ray.shutdown()
            if attempt == ATTEMPTS:
                raise
            time.sleep(2.0 * attempt)
            continue
        address = _current_address()
        _held = (address, key) if address else None
        _in_use = True
        return context
    raise AssertionError("unreachable")


def release_local() -> None:
    """A module is done with its cluster: kept for the next module that asks the same."""
    global _in_use
    _in_use = False


def drop_released() -> None:
    """Stop the cluster no module holds (before a test of a module that asked for none)."""
    if _held is not None and not _in_use:
        shutdown_local()


def shutdown_local() -> None:
    """Stop this process's cluster, held or not (the end of the session)."""
    global _held, _in_use
    if _held is not None and _current_address() == _held[0]:
        ray.shutdown()
    _held = None
    _in_use = False
