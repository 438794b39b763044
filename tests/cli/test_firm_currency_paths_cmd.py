"""A firm's currency that some settlement asset has no price in, on the command line: one line
naming ``currency:`` and exit 2 from ``sapphire backtest``, ``sapphire run`` and ``sapphire
tune`` (its system config), before Ray and before anything is stored. Before, the tester's
two configs ran to exit 0 with every order refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.cli import main
from sapphire.kernel.assembly import data_path
from tests.cli.test_firm_currency_cmd import no_ray  # noqa: F401 (the fixture)
from tests.kernel.test_firm_currency_paths import DERIBIT, KRAKEN, deribit_raw, kraken_raw
from tests.risk.test_currency_paths import needs_meta

pytestmark = [
    needs_meta,
    pytest.mark.skipif(
        not (data_path(DERIBIT).exists() and data_path(KRAKEN).exists()),
        reason="shared recorded data not present",
    ),
    pytest.mark.usefixtures("no_ray"),
]


def _write(path: Path, raw: dict[str, Any]) -> Path:
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


def _screen(capsys: pytest.CaptureFixture[str]) -> str:
    screen = capsys.readouterr()
    return " ".join((screen.out + screen.err).split())  # the console wraps at its width


@pytest.mark.parametrize("command", ["backtest", "run"])
def test_the_deribit_options_config_is_refused_naming_both_coins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = _write(tmp_path / "deribit.yaml", deribit_raw(tmp_path))
    assert main([command, "--config", str(path), "--no-progress"]) == 2
    out = _screen(capsys)
    assert "Traceback" not in out and "risk rejected" not in out
    assert f"{path}: currency: not set; chosen from the instruments" in out
    assert "cannot value BTC, ETH" in out
    assert not (tmp_path / "runs" / "store").exists()  # nothing ran, nothing stored


@pytest.mark.parametrize("command", ["backtest", "run"])
def test_the_kraken_config_naming_btc_is_refused_with_usd_suggested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = _write(tmp_path / "kf.yaml", kraken_raw(tmp_path))
    assert main([command, "--config", str(path), "--no-progress"]) == 2
    out = _screen(capsys)
    assert f"{path}: currency: 'BTC' cannot value ETH" in out
    assert "one that values every settlement asset: USD, USDC, USDT" in out
    assert not (tmp_path / "runs" / "store").exists()


def test_tune_refuses_its_system_config_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = {
        "name": "options",
        "agent": "g1",
        "system": deribit_raw(tmp_path),
        "space": {"order_lots": {"type": "choice", "values": [1, 2]}},
        "walk_forward": {"train": 60, "test": 30},
        "objective": {"metric": "pnl"},
        "search": {"algorithm": "optuna", "num_samples": 2, "max_concurrent": 1, "seed": 7},
        "output": {"storage_path": str(tmp_path / "tune")},
    }
    path = _write(tmp_path / "tune.yaml", raw)
    assert main(["tune", "--config", str(path)]) == 2
    out = _screen(capsys)
    assert "system: currency: not set; chosen from the instruments" in out
    assert "cannot value BTC, ETH" in out
    assert not (tmp_path / "tune").exists()
