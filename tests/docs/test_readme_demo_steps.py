"""The README's count of the demo's windows is the count a run of the demo prints."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from sapphire.cli import main
from tests.conftest import REPO_ROOT


def test_the_readme_says_how_many_windows_the_demo_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it said 2,981; `sapphire run` and `sapphire backtest` of configs/demo.yaml step 2,977
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw["storage"] = {"root": str(tmp_path / "runs")}
    config = tmp_path / "demo.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    assert main(["backtest", "--config", str(config), "--run-id", "d", "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    [ran] = re.findall(r"events in ([\d,]+) steps", out)
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    [said] = re.findall(r"The Ray system steps through ([\d,]+) exact", readme)
    assert said == ran
