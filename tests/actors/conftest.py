"""Fixtures shared by the actor-system tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.actors.double_thread import API_KEY
from tests.actors.live_env import PREFIX, SECRET
from tests.ray_local import init_local, release_local


@pytest.fixture(scope="module")
def ray_live(request: pytest.FixtureRequest) -> Iterator[None]:
    """A local Ray cluster per test module whose workers hold the live test's credentials
    in their environment, as in production (never in a config)."""
    env = {f"{PREFIX}_API_KEY": API_KEY, f"{PREFIX}_API_SECRET": SECRET}
    namespace = f"sapphire-{request.module.__name__.rsplit('.', 1)[-1]}"
    init_local(env, num_cpus=4, include_dashboard=False, namespace=namespace)
    yield
    release_local()
