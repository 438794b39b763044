"""The demo config cut short, and `sapphire backtest` on it: what the CLI tests run."""

from __future__ import annotations

from pathlib import Path

import msgspec

from sapphire.cli import main
from tests.conftest import REPO_ROOT


def demo(tmp_path: Path, **data: object) -> Path:
    """configs/demo.yaml on its first 6,000 events (``data`` overrides), stored in tmp_path."""
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw["data"] = {**raw["data"], "max_events": 6_000, **data}
    raw["storage"] = {"root": str(tmp_path / "runs")}
    path = tmp_path / "demo.yaml"
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


def backtest(config: Path, run_id: str) -> int:
    return main(["backtest", "--config", str(config), "--run-id", run_id, "--no-progress"])
