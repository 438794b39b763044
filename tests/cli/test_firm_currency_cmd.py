"""The config's ``currency`` on the command line: a currency of no instrument is one line
naming the field and exit 2 from ``sapphire backtest`` and ``sapphire run`` (before Ray);
the start-up line says who chose the currency; the run records it beside its store, and
``sapphire report`` reads the capital in the recorded currency (a run recorded before the
field, a bare list of instruments, still reads, by the rule)."""

from __future__ import annotations

import argparse
import html
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.cli import main, report_cmd
from sapphire.cli.query_cmd import (
    INSTRUMENTS_FILE,
    read_instruments,
    read_run_instruments,
    write_instruments,
)
from sapphire.kernel.assembly import data_path
from sapphire.model import Instrument
from tests.kernel.test_firm_currency import DATA, reviewer_raw


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for a config that cannot run")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.mark.usefixtures("no_ray")
@pytest.mark.parametrize("command", ["backtest", "run"])
def test_a_currency_of_no_instrument_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = _write(tmp_path, reviewer_raw(tmp_path, "XBT"))  # BitMEX's name for BTC
    assert main([command, "--config", str(path), "--no-progress"]) == 2
    screen = capsys.readouterr()
    out = " ".join((screen.out + screen.err).split())  # the console wraps at its width
    assert "Traceback" not in out
    assert f"{path}: currency: 'XBT'" in out and "one of: BTC, USD, USDC, USDT" in out
    assert not (tmp_path / "runs" / "store").exists()  # nothing ran, nothing stored


def test_the_startup_line_says_the_config_named_the_currency() -> None:
    from sapphire.cli.progress import startup_line
    from sapphire.config.system import parse_config

    xbt = Instrument(
        symbol="XBTUSD",
        kind="inverse_perpetual",
        base="XBT",
        quote="USD",
        tick_size="0.5",
        lot_size="1",
    )
    hl = Instrument(
        symbol="BTC",
        kind="perpetual",
        base="BTC",
        quote="USDC",
        tick_size="1",
        lot_size="0.00001",
    )
    both = {xbt.symbol: xbt, hl.symbol: hl}
    named = parse_config({"data": {"source": "sample"}, "capital_quote": "1", "currency": "XBT"})
    line = startup_line("backtest", "r", named, "s", [], None, both)
    assert "capital 1 XBT (the firm's currency, as currency names it; settled in USDC, XBT)" in (
        line
    )
    # no balances: the paper account holds nothing, and the line says so before the run
    assert "venue paper with no balances (set exchange.params.balances" in line
    funded = parse_config(
        {"data": {"source": "sample"}, "exchange": {"params": {"balances": {"BTC": "1"}}}}
    )
    assert "no balances" not in startup_line("backtest", "r", funded, "s", [], None, both)


def test_the_record_reads_old_runs_and_keeps_the_currency(tmp_path: Path) -> None:
    inv = Instrument(
        symbol="BTCUSD",
        kind="inverse_perpetual",
        base="BTC",
        quote="USD",
        tick_size="0.5",
        lot_size="1",
    )
    write_instruments(tmp_path / "new", {inv.symbol: inv}, "BTC")
    record = read_run_instruments(tmp_path / "new")
    assert record.currency == "BTC" and record.by_symbol() == {inv.symbol: inv}
    old = tmp_path / "old"  # what runs recorded before the field: the bare list
    old.mkdir()
    (old / INSTRUMENTS_FILE).write_bytes(msgspec.json.encode([inv]))
    assert read_run_instruments(old).currency == ""
    assert read_instruments(old) == {inv.symbol: inv}
    assert read_run_instruments(tmp_path / "none").by_symbol() == {}


def _report_stats(config: Path, run_id: str, out: Path) -> dict[str, tuple[str, str]]:
    parser = argparse.ArgumentParser()
    report_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", run_id, "--config", str(config), "--out", str(out)])
    assert args.handler(args) == 0
    text = (out / f"{run_id}.html").read_text(encoding="utf-8")
    found = re.findall(
        r"<div class='stat'><div class='l'>(.*?)</div><div class='v'>(.*?)</div>"
        r"(?:<div class='n'>(.*?)</div>)?</div>",
        text,
    )
    return {html.unescape(k): (html.unescape(v), html.unescape(n)) for k, v, n in found}


@pytest.mark.skipif(not data_path(DATA).exists(), reason="shared recorded data not present")
def test_the_report_reads_the_capital_in_the_currency_the_run_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = reviewer_raw(tmp_path, "BTC")
    path = _write(tmp_path, raw)
    assert main(["backtest", "--config", str(path), "--run-id", "named", "--no-progress"]) == 0
    assert "capital 1 BTC (the firm's currency, as currency names it" in " ".join(
        capsys.readouterr().out.split()
    )
    folder = tmp_path / "runs" / "named"
    record = read_run_instruments(folder)
    assert record.currency == "BTC" and set(record.by_symbol()) == {"BTCUSD", "ETH"}
    stats = _report_stats(path, "named", tmp_path / "btc")
    pnl = float(stats["firm PnL"][0].removesuffix(" BTC"))
    assert pnl != 0  # the run traded: a return to read
    assert not any(label.startswith("firm PnL (") for label in stats)  # nothing converted
    # 1 BTC of capital: the return is the BTC PnL itself
    ret = float(stats["firm return"][0].replace("%", ""))
    assert ret == pytest.approx(pnl * 100, rel=5e-3)
    # the same rows, recorded as a run of the rule's USDC firm: the report follows the
    # record, not the config (which still names BTC), and converts at the last BTC price
    write_instruments(folder, record.by_symbol(), "USDC")
    stats = _report_stats(path, "named", tmp_path / "usdc")
    assert "firm PnL (USDC)" in stats
    at = re.search(r"BTC at ([\d.]+) USDC", stats["firm PnL (USDC)"][1])
    assert at is not None, stats["firm PnL (USDC)"]
    rate = float(at.group(1))
    assert 55_000 < rate < 65_000  # Bybit BTCUSD on 2021-04-17
    assert float(stats["firm return"][0].replace("%", "")) == pytest.approx(
        pnl * rate * 100, rel=5e-3
    )
