"""The demo shows three agents trading: each of them trades on the bundled sample (its
momentum agent's default 1 bps band was never crossed there, and it never traded)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sapphire.config.system import load_config, parse_config
from sapphire.kernel.runner import InProcessKernel
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("name", ["demo.yaml", "demo_shards.yaml"])
def test_every_demo_agent_trades(name: str, tmp_path: Path) -> None:
    raw = msgspec.to_builtins(load_config(REPO_ROOT / "configs" / name))
    raw["storage"]["root"] = str(tmp_path)
    config = parse_config(raw)
    kernel = InProcessKernel(config, "agents")
    kernel.run()
    traded: dict[str, int] = {}
    for key, row in kernel.summary()["agents"].items():
        agent = key.partition("/")[0]
        traded[agent] = traded.get(agent, 0) + row["traded_lots"]
    assert set(traded) == {a.id for a in config.agents}
    assert all(lots > 0 for lots in traded.values()), traded
