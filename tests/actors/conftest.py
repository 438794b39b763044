"""Fixtures shared by the actor-system tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import ray

from tests.actors.double_thread import API_KEY
from tests.actors.live_env import PREFIX, SECRET
from tests.ray_local import init_local


@pytest.fixture(scope="module")
def ray_live(request: pytest.FixtureRequest) -> Iterator[None]:
    """A local Ray cluster per test module whose workers hold the live test's credentials
    in their environment, as in production (never in a config)."""
    if ray.is_initialized():
        ray.shutdown()
    os.environ[f"{PREFIX}_API_KEY"] = API_KEY
    os.environ[f"{PREFIX}_API_SECRET"] = SECRET
    namespace = f"sapphire-{request.module.__name__.rsplit('.', 1)[-1]}"
    init_local(num_cpus=4, include_dashboard=False, namespace=namespace)
    yield
    ray.shutdown()
