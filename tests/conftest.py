"""Shared fixtures: where the real recorded data lives, and the instruments of the recordings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repo (CI copies shared/ there); overridable by env."""
    override = os.environ.get("SAPPHIRE_SHARED_DATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared recorded data not found at {path}")
    return path
