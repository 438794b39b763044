"""The README's count of the demo's windows is the count a run of the demo prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.demo_runs import backtest, demo
from tests.conftest import REPO_ROOT


def test_the_readme_says_how_many_windows_the_demo_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it said 2,981 when `sapphire run` and `sapphire backtest` of configs/demo.yaml stepped
    # 2,977 (2,964 since its crosses stay inside the touch)
    assert backtest(demo(tmp_path, max_events=None), "d") == 0
    out = " ".join(capsys.readouterr().out.split())
    [ran] = re.findall(r"events in ([\d,]+) steps", out)
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    [said] = re.findall(r"The Ray system steps through ([\d,]+) exact", readme)
    assert said == ran
