"""The progress bar's total: a damaged recording leaves it without one, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from sapphire.cli.progress import estimate_events
from sapphire.data.sample import sample_paths


@pytest.mark.parametrize("cap", [None, 500])
def test_a_cut_gzip_leaves_the_bar_without_a_total(tmp_path: Path, cap: int | None) -> None:
    whole = sample_paths().trades.read_bytes()
    cut = tmp_path / "trades.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])  # the run counts the cut as one malformed row
    assert estimate_events([cut], cap) == cap
    damaged = tmp_path / "t.parquet"
    damaged.write_bytes(b"PAR1 not parquet")
    assert estimate_events([damaged], cap) == cap


def test_the_startup_line_says_what_the_capital_is_in() -> None:
    """The firm's currency is chosen from the instruments' settlement assets: one added
    instrument settled in USDC beside BTC-settled ones moves ``capital_quote`` (and every
    money limit) from BTC into USDC. The line before the run names the asset, and where
    several settle, that it was chosen."""
    from sapphire.cli.progress import startup_line
    from sapphire.config.system import parse_config
    from sapphire.model.instrument import Instrument, InstrumentKind

    config = parse_config({"data": {"source": "sample"}, "capital_quote": "1"})
    xbt = Instrument(
        symbol="XBTUSD",
        kind=InstrumentKind.INVERSE_PERPETUAL,
        base="XBT",
        quote="USD",
        tick_size="0.5",
        lot_size="1",
    )
    alone = startup_line("backtest", "r", config, "s", [], None, {"XBTUSD": xbt})
    assert "; capital 1 XBT; store s" in alone
    hl = Instrument(
        symbol="BTC",
        kind=InstrumentKind.PERPETUAL,
        base="BTC",
        quote="USDC",
        tick_size="1",
        lot_size="0.00001",
    )
    both = startup_line("backtest", "r", config, "s", [], None, {"XBTUSD": xbt, "BTC": hl})
    assert (
        "capital 1 USDC (the firm's currency, chosen from the instruments: set currency to "
        "name it; settled in USDC, XBT)"
    ) in both
