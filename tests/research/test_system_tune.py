"""What a system tune replays is what ``sapphire backtest`` of the same config replays."""

from __future__ import annotations

from pathlib import Path

import msgspec

from sapphire.config.system import parse_config
from sapphire.kernel.runner import InProcessKernel
from sapphire.research import system_tune
from tests.conftest import REPO_ROOT


def test_a_capped_replay_spans_the_same_data_in_tune_and_backtest(tmp_path: Path) -> None:
    # data.max_events counts rows (a depth message its levels) in every runner: the tune cut
    # events, so its folds spanned about 90 s of the sample where the backtest stops near 24 s
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw["data"]["max_events"] = 30_000
    raw["storage"] = {"root": str(tmp_path)}
    dataset = system_tune.load_system(raw, "mm_as")
    kernel = InProcessKernel(parse_config(raw), "cap")
    kernel.run()
    assert dataset.end == kernel.cutter.state.last_end_ns
