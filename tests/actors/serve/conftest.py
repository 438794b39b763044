"""One small local Ray cluster for the Serve tests of this folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ray_local import drop_released, init_local


@pytest.fixture(scope="module")
def ray_serve() -> Iterator[None]:
    pytest.importorskip("llama_cpp")
    import ray
    from ray import serve

    drop_released()  # another module's cluster, kept for a module asking the same
    started = not ray.is_initialized()
    if started:
        # Random GCS port (never Redis' 6379); no dashboard: 2 shared cores.
        init_local(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    yield
    serve.shutdown()
    if started:
        ray.shutdown()
