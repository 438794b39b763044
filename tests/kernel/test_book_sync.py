"""The venue's book is never frozen: every shared Binance USDT-M and spot recording, replayed
through the kernel (what ``sapphire backtest`` and ``sapphire run`` run), keeps the book synced
(a gap is resolved by the next snapshot), never crossed, and equal to the recorded best
bid/ask whenever the bookTicker's update id is the book's own last update id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sapphire.config.system import parse_config
from sapphire.data import sample
from sapphire.kernel.runner import InProcessKernel

SPOT = "configs/instruments/binance-spot-BTCUSDT.json"
USDM = str(sample.instrument_file())
RECORDINGS = {
    "usdm": (
        [
            "shared:book/hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz",
            "shared:book/hftbacktest_binance-usdm_BTCUSDT_bbo.csv.gz",
        ],
        USDM,
        3,  # sessions in the files
    ),
    "spot": (
        [
            "shared:book/hftbacktest_binance-spot_BTCUSDT_depth.csv.gz",
            "shared:book/hftbacktest_binance-spot_BTCUSDT_bbo.csv.gz",
        ],
        SPOT,
        2,
    ),
    "sample": (
        [
            "sample:hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz",
            "sample:hftbacktest_binance-usdm_BTCUSDT_bbo.csv.gz",
        ],
        USDM,
        1,
    ),
}


def checked_config(files: list[str], instrument: str, **data: Any) -> Any:
    return parse_config(
        {
            "data": {"source": "files", "files": files, "instrument_files": [instrument], **data},
            "exchange": {
                "factory": "tests.kernel.probes:book_checking_exchange",
                "params": {"balances": {"USDT": "1000"}},
            },
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_every_recording_keeps_the_venue_book_synced(
    name: str, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAPPHIRE_SHARED_DATA", str(shared_data))
    files, instrument, sessions = RECORDINGS[name]
    # every session of the file back to back, months apart: the venue's book is the subject
    config = checked_config(files, instrument, max_session_gap_s=0)
    kernel = InProcessKernel(config, f"book-{name}")
    kernel.run()
    venue: Any = kernel.venue.gateway
    book = venue.book("BTCUSDT")
    assert kernel.summary()["counters"]["events"] > 10_000
    assert book.is_synced, "the book ended out of sync: a gap was never resolved"
    # one gap at most where the replay moves from one recorded session to the next
    assert book.gaps <= sessions - 1
    assert venue.crossed == 0
    assert venue.quotes > 1_000
    # the book equals the recorded best bid/ask whenever both describe the same update
    assert venue.comparable_matched == venue.comparable
    if name != "spot":  # spot diffs come aggregated per 100 ms: ids rarely coincide
        assert venue.comparable > 10
    # and it follows the market: most recorded best bid/ask are the book's own
    assert venue.matched / (venue.quotes - venue.unsynced) > (0.15 if name == "spot" else 0.6)
