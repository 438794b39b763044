"""The import contracts in pyproject.toml cover the whole package (``lint-imports`` checks them).

A forbidden contract only guards the modules it names, so a new ``sapphire`` subpackage left out
of the pure-core list would escape it silently; this test makes that a failure instead.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EDGE = {"sapphire.adapters", "sapphire.cli"}  # the I/O edge and the command's composition root


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def _subpackages() -> set[str]:
    return {f"sapphire.{p.parent.name}" for p in (ROOT / "sapphire").glob("*/__init__.py")}


def test_pure_core_contract_names_every_subpackage_but_the_edge() -> None:
    pure = set(_contracts()["pure-core"]["source_modules"])
    assert _subpackages() >= EDGE
    assert pure == _subpackages() - EDGE


def test_pure_core_forbids_ray_network_clients_and_the_edge() -> None:
    forbidden = set(_contracts()["pure-core"]["forbidden_modules"])
    assert {"ray", "ccxt", "redis", "google", "aiohttp", "websockets"} <= forbidden
    assert EDGE | {"actors"} <= forbidden


def test_sapphire_never_imports_actors_except_the_cli_handlers() -> None:
    contract = _contracts()["no-actors"]
    assert contract["source_modules"] == ["sapphire"]
    assert contract["forbidden_modules"] == ["actors"]
    assert all(rule.startswith("sapphire.cli.") for rule in contract["ignore_imports"])
