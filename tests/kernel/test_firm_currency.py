"""The config's ``currency`` in the kernel: checked against the run's instruments before
anything runs, and the currency the run's caps are read in. The reviewer's case replayed:
Bybit's BTC-settled inverse BTCUSD (recorded) beside a USDC-settled perpetual with no data,
``capital_quote: "1"`` and ``max_notional_quote: "0.5"``, meant as BTC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.config.system import SystemConfig, parse_config
from sapphire.kernel.assembly import build_core, data_path, firm_currency
from sapphire.kernel.builders import WiringError
from sapphire.kernel.runner import InProcessKernel
from sapphire.model import Instrument, RejectReason
from tests.conftest import REPO_ROOT

DATA = "shared:book/cryptofeed_bybit_inverse_ws_2021-04-17.log.gz"
INV_FILE = REPO_ROOT / "configs/instruments/bybit-inverse-BTCUSD.json"
HL = {
    "symbol": "ETH",
    "venue": "HYPERLIQUID",
    "kind": "perpetual",
    "base": "ETH",
    "quote": "USDC",
    "tick_size": "0.1",
    "lot_size": "0.0001",
}


def reviewer_raw(tmp_path: Path, currency: str, order_lots: int = 100) -> dict[str, Any]:
    """The reviewer's config (its instrument files written to ``tmp_path``), as a file holds
    it: a momentum agent on the recorded BTCUSD, 1 of capital, a 0.5 notional limit."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "inv.json").write_bytes(INV_FILE.read_bytes())
    (tmp_path / "hl.json").write_text(json.dumps(HL))
    raw: dict[str, Any] = {
        "data": {
            "source": "files",
            "files": [DATA],
            "instrument_files": [str(tmp_path / "inv.json"), str(tmp_path / "hl.json")],
        },
        "agents": [
            {
                "id": "mom",
                "kind": "momentum",
                "symbol": "BTCUSD",
                "params": {
                    "order_lots": order_lots,
                    "allow_short": True,
                    "fast_span": 3,
                    "slow_span": 10,
                    "threshold_bps": 0.05,
                },
            }
        ],
        "capital_quote": "1",
        "currency": currency,
        "risk": {
            "price_band_bps": 100,
            "default_agent": {
                "max_position_lots": 10**6,
                "max_notional_quote": "0.5",
                "max_order_lots": 10**6,
                "max_orders_per_second": 50,
            },
        },
        "exchange": {"kind": "paper", "params": {"balances": {"BTC": "10", "USDC": "0"}}},
        "storage": {"root": str(tmp_path / "runs")},
    }
    return raw


def _config(tmp_path: Path, currency: str, order_lots: int = 100) -> SystemConfig:
    return parse_config(reviewer_raw(tmp_path, currency, order_lots))


def _instruments() -> dict[str, Instrument]:
    """The two instrument files' instruments, as ``load_instruments`` reads them."""
    inv = msgspec.json.decode(INV_FILE.read_bytes(), type=Instrument)
    hl = msgspec.convert(HL, Instrument)
    return {inv.symbol: inv, hl.symbol: hl}


@pytest.mark.parametrize(
    ("currency", "expected"),
    [("", "USDC"), ("BTC", "BTC"), ("USDC", "USDC"), ("USD", "USD"), ("USDT", "USDT")],
)
def test_a_currency_of_the_instruments_is_taken(
    tmp_path: Path, currency: str, expected: str
) -> None:
    # USDT: a dollar, read at par with the USD and USDC the instruments name (same_money)
    config = _config(tmp_path, currency)
    assert firm_currency(config, _instruments()) == expected
    core = build_core(config, _instruments())
    assert core.portfolio.reporting_asset == expected


@pytest.mark.parametrize("currency", ["EUR", "ETH", "btc", "XBT"])
def test_another_currency_is_one_line_naming_the_field_and_the_choices(
    tmp_path: Path, currency: str
) -> None:
    # ETH: only a base (what the USDC perp trades); XBT: BitMEX's name, not these instruments'
    config = _config(tmp_path, currency)
    with pytest.raises(WiringError) as err:
        firm_currency(config, _instruments())
    message = str(err.value)
    assert message.startswith("currency: ") and "\n" not in message
    assert repr(currency) in message and "BTC, USD, USDC, USDT" in message
    with pytest.raises(WiringError, match=r"^currency: "):
        InProcessKernel(config, "bad", instruments=_instruments(), events=iter(()))


needs_data = pytest.mark.skipif(
    not data_path(DATA).exists(), reason="shared recorded data not present"
)


def _run(config: SystemConfig, run_id: str) -> tuple[InProcessKernel, dict[Any, int]]:
    kernel = InProcessKernel(config, run_id)
    kernel.run()
    return kernel, dict(kernel.coordinator.core.risk.rejections)


@needs_data
def test_by_the_rule_every_order_is_over_the_capital_read_in_usdc(tmp_path: Path) -> None:
    kernel, rejected = _run(_config(tmp_path, ""), "rule")
    core = kernel.coordinator.core
    assert core.portfolio.reporting_asset == "USDC"
    # 100 USD of contracts (0.0016 BTC) against 1 USDC of capital (0.000016 BTC)
    assert (
        set(rejected) == {RejectReason.RISK_MAX_NOTIONAL}
        and rejected[RejectReason.RISK_MAX_NOTIONAL] >= 2
    )
    assert core.fill_count == 0


@needs_data
def test_named_btc_the_orders_trade_and_the_half_btc_limit_binds(tmp_path: Path) -> None:
    kernel, rejected = _run(_config(tmp_path / "a", "BTC"), "named")
    core = kernel.coordinator.core
    assert core.portfolio.reporting_asset == "BTC"
    assert rejected == {} and core.fill_count >= 1
    assert kernel.summary()["firm_pnl"]["asset"] == "BTC"
    # 40,000 USD of contracts at ~61,000 USD is 0.66 BTC: within 1 BTC of capital, over the
    # 0.5 BTC limit, so every order of the same signals is refused for it
    kernel, rejected = _run(_config(tmp_path / "b", "BTC", order_lots=40_000), "over")
    assert set(rejected) == {RejectReason.RISK_MAX_NOTIONAL}
    assert kernel.coordinator.core.fill_count == 0


def test_a_checkpoint_from_before_the_field_restores_into_the_configs_currency(
    tmp_path: Path,
) -> None:
    """A restore replaces the core's portfolio with the checkpoint's: one written before the
    field holds no currency, and the resumed run would read its caps in USDC again."""
    config = _config(tmp_path, "BTC")
    old = InProcessKernel(config, "old", instruments=_instruments(), events=iter(()))
    del old.coordinator.core.portfolio.currency  # as a portfolio pickled before the field
    assert old.coordinator.core.portfolio.reporting_asset == "USDC"
    data = old.coordinator.snapshot()
    resumed = InProcessKernel(config, "old", instruments=_instruments(), events=iter(()))
    resumed.coordinator.restore(data)
    assert resumed.coordinator.core.portfolio is not old.coordinator.core.portfolio
    assert resumed.coordinator.core.portfolio.reporting_asset == "BTC"
