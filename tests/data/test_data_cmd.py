"""``sapphire data inspect``: reports rejects with exit 0, fails with 2 on unreadable files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from sapphire.cli import main
from sapphire.data.sample import sample_paths


def test_inspect_corrupted_copy_reports_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = gzip.decompress(sample_paths().bbo.read_bytes()).decode().splitlines()[:200]
    row = lines[10].split(",")
    row[5] = "not-a-price"
    lines[10] = ",".join(row)
    row = lines[20].split(",")
    row[5], row[7] = row[7], row[5]
    lines[20] = ",".join(row)
    row = lines[30].split(",")
    row[0] = "garbage line"  # a session of one row, out of order: no session of the file
    lines[30] = ",".join(row)
    path = tmp_path / "hftbacktest_binance-usdm_BTCUSDT_bbo.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    code = main(["data", "inspect", str(path), "--instrument-file", str(sample_paths().instrument)])
    out = capsys.readouterr().out
    assert code == 0
    assert "format:  hftbacktest_csv" in out
    assert "rejected malformed: 1" in out and "rejected crossed_book: 1" in out
    assert "line 11: malformed" in out
    assert "sessions: ['2024-08-08']\n" in out


@pytest.mark.parametrize("content", [None, b"\x1f\x8b\x08garbage", b"x"])
def test_inspect_unreadable_file_exits_2(
    tmp_path: Path, content: bytes | None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz"
    if content is not None:
        path.write_bytes(content)
    assert main(["data", "inspect", str(path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_inspect_unknown_format_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert main(["data", "inspect", str(path)]) == 2


def test_inspect_a_file_whose_times_never_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # every row's time unreadable (columns in another order than the header): it said
    # nothing but a TypeError traceback
    path = tmp_path / "hftbacktest_binance-spot_BTCUSDT_trades.csv"
    head = "session,local_ts_ns,event_ts_ms,trade_ts_ms,trade_id,price,qty,is_buyer_maker"
    path.write_text(f"{head}\ns,x,y,z,7,61602.01,0.5,1\ns,x,y,z,8,61602.01,0.5,0\n")
    assert main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "time:   none readable" in out and "rejected malformed: 2" in out


def test_an_instrument_file_is_one_symbols_not_every_symbols(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cryptofeed log holds many symbols: --instrument-file names one of them, and the
    others' rows are counted unknown_symbol (they were read on its tick and lot grid)."""
    from tests.conftest import REPO_ROOT

    log = shared_data / "book" / "cryptofeed_bybit_linear_ws_2021-04-17.log.gz"
    inst = REPO_ROOT / "configs" / "instruments" / "bybit-linear-ETHUSDT.json"
    if not inst.exists():
        pytest.skip("no ETHUSDT instrument file")
    assert main(["data", "inspect", str(log), "--instrument-file", str(inst)]) == 0
    out = capsys.readouterr().out
    assert "rejected unknown_symbol" in out


@pytest.mark.parametrize(
    ("meta", "symbols"),
    [
        ("exchange/hyperliquid-sdk_hyperliquid_meta_2023-07-17.json", ["BTC", "ETH/USDC:USDC"]),
        ("exchange/cryptofeed_bitmex_instrument_active_2021-07-22.json.gz", ["XBTUSD"]),
    ],
)
def test_a_venue_metadata_file_gives_the_instrument_files_a_run_names(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    shared_data: Path,
    meta: str,
    symbols: list[str],
) -> None:
    """A metadata file of a venue's markets is refused as one instrument with the command
    that writes them (it read "unknown field `universe`" or "Expected `object`"); the
    written files are the venue's instruments as live trading loads them."""
    from sapphire.adapters.venue_instruments import load_venue_instruments
    from sapphire.data.instruments import load_instrument_file
    from sapphire.data.validation import DataFileError

    path = shared_data / meta
    with pytest.raises(DataFileError, match="sapphire data instruments") as refused:
        load_instrument_file(path)
    assert len(str(refused.value).splitlines()) == 1
    out = tmp_path / "inst"
    argv = ["data", "instruments", str(path), "--out", str(out)]
    assert main([*argv, *(a for s in symbols for a in ("--symbol", s))]) == 0
    venue = load_venue_instruments(path).instruments
    by_unified = {i.unified: i for i in venue.values()}
    written = sorted(out.glob("*.json"))
    assert len(written) == len(symbols)
    loaded = {load_instrument_file(f).symbol: load_instrument_file(f) for f in written}
    for s in symbols:
        want = venue.get(s) or by_unified[s]
        assert loaded[want.symbol] == want
    capsys.readouterr()
    assert main([*argv, "--symbol", "NOPE"]) == 2
    err = capsys.readouterr().err
    assert "no instrument NOPE" in err and len(err.strip().splitlines()) == 1
