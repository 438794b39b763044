"""The tester's two configs, refused before anything runs: a firm's currency (named or chosen)
that some settlement asset of the run has no price in. Before, both started, and risk refused
every order "risk_no_market" (stored detail: no BTC price in USD to value the capital
allocation), exit 0. The instruments are the tester's, from the venues' shared metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.config.system import SystemConfig, load_config, parse_config
from sapphire.kernel.assembly import data_path, firm_currency, load_instruments
from sapphire.kernel.builders import WiringError
from sapphire.kernel.runner import InProcessKernel
from tests.conftest import REPO_ROOT
from tests.risk.test_currency_paths import (
    BTC_PERP,
    BTC_PUT,
    ETH_CALL,
    FI_XBT,
    PI_ETH,
    _of,
    needs_meta,
)

DERIBIT = "shared:book/cryptofeed_deribit_options_ws_2021-07-22.log.gz"
KRAKEN = "shared:book/cryptofeed_kraken-futures_inverse_ws_2021-07-22.log.gz"

pytestmark = needs_meta


def _files(tmp_path: Path, *keys: tuple[str, str]) -> list[str]:
    """Each instrument as a file of its own, as the tester exported them."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = []
    for symbol, inst in _of(*keys).items():
        path = tmp_path / f"{symbol}.json"
        path.write_bytes(msgspec.json.encode(inst))
        out.append(str(path))
    return out


def deribit_raw(tmp_path: Path, currency: str = "", with_perp: bool = False) -> dict[str, Any]:
    """/tmp/qa/deribit.yaml: a grid maker on a BTC-settled put and momentum on an
    ETH-settled call, both quoted in USD, 1 of capital."""
    keys = [BTC_PUT, ETH_CALL] + ([BTC_PERP] if with_perp else [])
    return {
        "data": {
            "source": "files",
            "files": [DERIBIT],
            "instrument_files": _files(tmp_path, *keys),
        },
        "agents": [
            {
                "id": "g1",
                "kind": "grid_maker",
                "symbol": BTC_PUT[1],
                "params": {"half_spread_ticks": 0, "order_lots": 1, "max_position_lots": 5},
            },
            {
                "id": "m1",
                "kind": "momentum",
                "symbol": ETH_CALL[1],
                "params": {
                    "order_lots": 1,
                    "allow_short": True,
                    "fast_span": 2,
                    "slow_span": 3,
                    "threshold_bps": 0.01,
                },
            },
        ],
        "capital_quote": "1",
        "currency": currency,
        "exchange": {"kind": "paper", "params": {"balances": {"BTC": "1", "ETH": "10"}}},
        "storage": {"backend": "parquet", "root": str(tmp_path / "runs")},
    }


def kraken_raw(tmp_path: Path, currency: str = "BTC") -> dict[str, Any]:
    """/tmp/qa/kf.yaml: ``currency: BTC`` beside the ETH-settled PI_ETHUSD."""
    return {
        "data": {
            "source": "files",
            "files": [KRAKEN],
            "instrument_files": _files(tmp_path, PI_ETH, FI_XBT),
        },
        "agents": [
            {
                "id": "mm",
                "kind": "avellaneda_stoikov",
                "symbol": PI_ETH[1],
                "params": {
                    "order_amount": 10,
                    "max_inventory": 100,
                    "risk_factor": 0.01,
                    "kappa": 2.0,
                    "order_refresh_time": 0.3,
                },
            },
            {
                "id": "mr",
                "kind": "mean_reversion",
                "symbol": FI_XBT[1],
                "params": {
                    "order_lots": 1,
                    "allow_short": True,
                    "window": 8,
                    "entry_z": 1.0,
                    "exit_z": 0.1,
                },
            },
        ],
        "capital_quote": "1",
        "currency": currency,
        "exchange": {"kind": "paper", "params": {"balances": {"BTC": "1", "ETH": "10"}}},
        "storage": {"backend": "parquet", "root": str(tmp_path / "runs")},
    }


def _refusal(config: SystemConfig) -> str:
    instruments = load_instruments(config.data)
    with pytest.raises(WiringError) as err:
        firm_currency(config, instruments)
    message = str(err.value)
    assert message.startswith("currency: ") and "\n" not in message
    # every runner checks its config before anything runs: the in-process kernel too
    with pytest.raises(WiringError, match=r"^currency: "):
        InProcessKernel(config, "refused", instruments=instruments, events=iter(()))
    return message


def test_chosen_with_btc_and_eth_options_names_both_and_that_it_was_chosen(
    tmp_path: Path,
) -> None:
    message = _refusal(parse_config(deribit_raw(tmp_path)))
    assert "not set; chosen from the instruments (settled in BTC, ETH) it is USD" in message
    assert "cannot value BTC, ETH" in message
    assert "no asset of the instruments values every settlement asset" in message


@pytest.mark.parametrize(("currency", "missing"), [("BTC", "ETH"), ("ETH", "BTC")])
def test_a_named_option_coin_cannot_value_the_other(
    tmp_path: Path, currency: str, missing: str
) -> None:
    message = _refusal(parse_config(deribit_raw(tmp_path, currency)))
    assert message.startswith(f"currency: {currency!r} cannot value {missing}: ")
    assert "no asset of the instruments values every settlement asset" in message


def test_named_btc_beside_eth_settled_pi_ethusd_suggests_usd(tmp_path: Path) -> None:
    message = _refusal(parse_config(kraken_raw(tmp_path)))
    assert message == (
        "currency: 'BTC' cannot value ETH: no spot, perpetual or future of the run prices "
        "ETH in BTC; one that values every settlement asset: USD, USDC, USDT "
        '("" chooses USD)'
    )


@pytest.mark.parametrize("currency", ["", "USD", "USDT"])
def test_the_kraken_contracts_in_usd_are_accepted(tmp_path: Path, currency: str) -> None:
    config = parse_config(kraken_raw(tmp_path, currency))
    assert firm_currency(config, load_instruments(config.data)) == (currency or "USD")


def test_a_btc_perpetual_beside_the_options_still_leaves_eth_unvalued(tmp_path: Path) -> None:
    # BTC now has a USD price, ETH still none: USD values BTC only
    message = _refusal(parse_config(deribit_raw(tmp_path, "USD", with_perp=True)))
    assert message.startswith("currency: 'USD' cannot value ETH: ")


def test_the_cross_venue_demo_still_starts_in_usdt() -> None:
    """BTC-settled inverse BTCUSD beside USDT-settled ETHUSDT: BTCUSD prices BTC in USD,
    read at par with USDT."""
    config = load_config(REPO_ROOT / "configs/demo_cross_venue.yaml")
    if not all(data_path(f).exists() for v in config.data.venues for f in v.files):
        pytest.skip("shared recorded data not present")
    assert firm_currency(config, load_instruments(config.data)) == "USDT"
