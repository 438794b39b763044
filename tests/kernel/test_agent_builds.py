"""An agent is built once to check it and once to run it, never more: a user's agent may
be costly to build (a model client, a large state), and every extra build was paid at
each start."""

from __future__ import annotations

from pathlib import Path

import pytest

from sapphire.kernel.assembly import check_agents, load_instruments
from sapphire.kernel.builders import WiringError
from sapphire.kernel.runner import InProcessKernel
from tests.kernel import probes
from tests.kernel.conftest import kernel_config

AGENTS = [
    {"id": "a", "kind": "tests.kernel.probes:CountedAgent", "symbol": "BTCUSDT"},
    {"id": "b", "kind": "tests.kernel.probes:CountedAgent", "symbol": "BTCUSDT"},
]


def test_the_kernel_builds_each_agent_once_to_check_and_once_to_run(tmp_path: Path) -> None:
    config = kernel_config(tmp_path, agents=AGENTS, data={"source": "sample", "max_events": 200})
    probes.BUILDS.clear()
    kernel = InProcessKernel(config, "builds")
    assert sorted(probes.BUILDS) == ["a", "a", "b", "b"]
    kernel.run()
    assert sorted(probes.BUILDS) == ["a", "a", "b", "b"]


def test_check_agents_still_refuses_an_agent_that_cannot_build(tmp_path: Path) -> None:
    bad = [*AGENTS, {"id": "c", "kind": "tests.kernel.probes:Nope", "symbol": "BTCUSDT"}]
    config = kernel_config(tmp_path, agents=bad, data={"source": "sample", "max_events": 200})
    with pytest.raises(WiringError, match="agent c"):
        check_agents(config, load_instruments(config.data))
