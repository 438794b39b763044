"""An agent given none of the events it reads says so in the summary: an A-S maker on a
depth-only feed (it reads trades, quotes and snapshots) never quoted, and the run ended as
if the market had been quiet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sapphire.config.system import parse_config
from sapphire.kernel.runner import InProcessKernel

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "backtest_avellaneda_stoikov.yaml"


@pytest.mark.parametrize(
    ("feeds", "derived"), [(("depth",), "off"), (("depth",), "auto"), (("depth", "bbo"), "auto")]
)
def test_an_agent_that_reads_nothing_of_the_data_is_named(
    tmp_path: Path,
    shared_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    feeds: tuple[str, ...],
    derived: str,
) -> None:
    monkeypatch.chdir(REPO)  # the config's instrument file is relative to the repository
    raw: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    raw["data"]["files"] = [
        str(shared_data / "book" / f"hftbacktest_binance-spot_BTCUSDT_{feed}.csv.gz")
        for feed in feeds
    ]
    raw["data"]["end_ns"] = raw["data"]["start_ns"] + 10_000_000_000
    raw["data"]["derived_quotes"] = derived  # auto: depth alone gives quotes of its top
    raw["storage"] = {"root": str(tmp_path)}
    kernel = InProcessKernel(parse_config(raw), "unheard")
    kernel.run()
    summary = kernel.summary()
    if derived == "off":
        assert list(summary["unheard"]) == ["as_1"]
        assert "is a BookSnapshot, Quote, Trade" in summary["unheard"]["as_1"]
    else:
        assert summary["unheard"] == {}
