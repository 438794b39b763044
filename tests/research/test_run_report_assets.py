"""The run report's money in the right asset and over the right rows: a PnL in another
asset than the capital's, PnL rows past the last price, runs of several settlement assets,
multi-day trade lists and agents that never traded. Every expected figure is worked out
here from the rows the test stores, not read from the report's code."""

from __future__ import annotations

import html
import math
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest

from sapphire.model.instrument import Instrument
from sapphire.research.run_report import (
    TABLES,
    RunData,
    Units,
    summary,
    trade_list,
    write_run_report,
)
from sapphire.storage.parquet_backend import ParquetBackend
from sapphire.storage.schemas import table_schema
from sapphire.storage.sink import CommitState

NS_HOUR = 3_600_000_000_000
NS_DAY = 24 * NS_HOUR
NS_YEAR = 365.25 * NS_DAY
START = 1_637_020_800_000_000_000  # 2021-11-16 00:00 UTC

# Bybit's inverse BTCUSD (PnL in BTC) beside a USDT-margined ETH perpetual: the firm's
# currency, the capital's, is USDT
INVERSE = Instrument(
    symbol="BTCUSD",
    kind="inverse_perpetual",
    base="BTC",
    quote="USD",
    tick_size="0.5",
    lot_size="1",
)
LINEAR = Instrument(
    symbol="ETHUSDT",
    kind="perpetual",
    base="ETH",
    quote="USDT",
    tick_size="0.01",
    lot_size="0.001",
)
# Kraken Futures' inverse contracts: ETH-settled beside BTC-settled
ETH_INV = Instrument(
    symbol="PI_ETHUSD",
    kind="inverse_perpetual",
    base="ETH",
    quote="USD",
    tick_size="0.05",
    lot_size="1",
)
BTC_INV = Instrument(
    symbol="FI_XBTUSD",
    kind="inverse_future",
    base="BTC",
    quote="USD",
    tick_size="0.5",
    lot_size="1",
)
SCALE = {"BTC": 8, "ETH": 9, "USDT": 8}  # the stored money's digits per asset


def _frame(table: str, rows: list[dict[str, object]]) -> pl.DataFrame:
    schema = table_schema(table).polars_schema
    full = [
        {name: None for name in schema} | {"run_id": "r", "producer_id": "p", "seq": i} | row
        for i, row in enumerate(rows)
    ]
    return pl.DataFrame(full, schema=schema)


def _run(**tables: list[dict[str, object]]) -> RunData:
    return RunData("r", {t: _frame(t, tables.get(t, [])) for t in TABLES})


def _pnl(agent: str, symbol: str, ts: int, equity: Decimal, **more: object) -> dict[str, object]:
    return {
        "ts_ns": ts,
        "agent_id": agent,
        "symbol": symbol,
        "position_lots": 100,
        "equity_quote": equity,
        "unrealized_pnl_quote": equity,
    } | more


def _fill(agent: str, symbol: str, ts: int, fee: Decimal) -> dict[str, object]:
    return {
        "ts_ns": ts,
        "agent_id": agent,
        "symbol": symbol,
        "side": 1,
        "price_ticks": 1000,
        "qty_lots": 1,
        "fee_quote": fee,
        "is_maker": False,
        "internal": False,
        "client_order_id": f"{agent}-{ts}",
    }


def _report(
    run: RunData,
    tmp_path: Path,
    instruments: list[Instrument],
    capital: float | None = 10_000.0,
    agents: dict[str, str] | None = None,
) -> tuple[dict[str, tuple[str, str]], str, pl.DataFrame]:
    """The page's stats (label -> (value, note)), its text and the agents table."""
    more = {} if agents is None else {"agents": agents}
    report = write_run_report(
        lambda table, _run_id: run.tables[table].lazy(),
        run.run_id,
        tmp_path,
        {i.symbol: i for i in instruments},
        capital,
        **more,
    )
    text = report.html.read_text(encoding="utf-8")
    return _stats(text), text, report.summary


def _stats(text: str) -> dict[str, tuple[str, str]]:
    found = re.findall(
        r"<div class='stat'><div class='l'>(.*?)</div><div class='v'>(.*?)</div>"
        r"(?:<div class='n'>(.*?)</div>)?</div>",
        text,
    )
    return {html.unescape(k): (html.unescape(v), html.unescape(n)) for k, v, n in found}


def _walk(n: int, seed: int, step: str) -> list[Decimal]:
    """A PnL path of ``n`` points from 0, each move a whole number of ``step``."""
    moves = np.random.default_rng(seed).integers(-5, 6, n)
    moves[0] = 0
    return [Decimal(int(m)) * Decimal(step) for m in np.cumsum(moves)]


def _sharpe(equity: list[float], ts: list[int]) -> float:
    """Annualised at the mean marking rate (``sapphire.backtest.analytics``): n marks hold
    n - 1 returns over the span, in years (n of them over-stated the ratio by
    sqrt(n / (n - 1)))."""
    eq = np.asarray(equity)
    r = np.diff(eq) / np.abs(eq[:-1])
    periods = (len(ts) - 1) / ((ts[-1] - ts[0]) / NS_YEAR)
    return float(r.mean() / r.std(ddof=1) * math.sqrt(periods))


def _pct(text: str) -> float:
    return float(text.replace("%", "").strip())


# -- 1: a PnL in another asset than the capital's ---------------------------------------------
def test_a_btc_pnl_is_converted_to_the_usdt_capital_for_return_and_ratios(
    tmp_path: Path,
) -> None:
    # only the BTC-settled contract traded, the USDT market only quoted: the report divided
    # the BTC PnL by the USDT capital (-5.84e-08 %) and labelled it "BTC/USDT"
    ts = [START + i * NS_HOUR for i in range(49)]
    equity = _walk(49, 1, "0.00000100")
    price_ticks = 121_245
    run = _run(
        pnl=[_pnl("mm", "BTCUSD", t, e) for t, e in zip(ts, equity, strict=True)],
        ticks=[
            {"ts_ns": ts[-1], "symbol": "BTCUSD", "kind": "trade", "price_ticks": price_ticks},
            {
                "ts_ns": ts[-1],
                "symbol": "ETHUSDT",
                "kind": "quote",
                "bid_ticks": 400_000,
                "ask_ticks": 400_001,
            },
        ],
    )
    stats, _, _ = _report(run, tmp_path, [INVERSE, LINEAR])
    rate = Decimal(price_ticks) * Decimal("0.5")  # USDT per BTC at the last trade
    pnl_btc = equity[-1]
    pnl_usdt = pnl_btc * rate
    assert stats["firm PnL"][0] == f"{pnl_btc:.8f} BTC"
    assert stats["firm PnL (USDT)"][0] == (
        f"{pnl_usdt.quantize(Decimal('1e-8'), rounding=ROUND_HALF_EVEN)} USDT"
    )
    assert _pct(stats["firm return"][0]) == pytest.approx(float(pnl_usdt) / 10_000 * 100, rel=5e-3)
    expected = _sharpe([10_000 + float(rate) * float(e) for e in equity], ts)
    assert float(stats["Sharpe (firm)"][0]) == pytest.approx(expected, abs=0.006)
    assert "BTC/USDT" not in str(stats)


def test_a_btc_pnl_with_no_price_to_convert_it_has_no_return(tmp_path: Path) -> None:
    ts = [START + i * NS_HOUR for i in range(49)]
    equity = _walk(49, 2, "0.00000100")
    run = _run(pnl=[_pnl("mm", "BTCUSD", t, e) for t, e in zip(ts, equity, strict=True)])
    stats, _, _ = _report(run, tmp_path, [INVERSE, LINEAR])
    assert stats["firm PnL"][0] == f"{equity[-1]:.8f} BTC"
    assert stats["firm return"][0] == "n/a" and "BTC" in stats["firm return"][1]
    assert stats["Sharpe (firm)"][0] == "n/a" and stats["Sortino (firm)"][0] == "n/a"
    assert "capital in USDT" in stats["Sharpe (firm)"][1]


# -- 3: PnL rows after the prices end ---------------------------------------------------------
def _bars_then_funding(flat_end: bool = False) -> tuple[RunData, list[int], list[Decimal]]:
    """Two days of 5-minute bars (no ticks stored: a bar run), the position marked at each
    close, then funding rows every 8 hours for 10 days at the last close: a day of funding
    still settled, then nothing moves."""
    n = 2 * 24 * 12 + 1
    ts = [START + i * 300_000_000_000 for i in range(n)]
    unreal = _walk(n, 3, "0.25")
    rows = [
        _pnl("ema", "ETHUSDT", t, u, unrealized_pnl_quote=u)
        for t, u in zip(ts, unreal, strict=True)
    ]
    equity = list(unreal)
    last = ts[-1]
    funding = Decimal(0)
    for k in range(1, 31):
        t = last + k * 8 * NS_HOUR
        if k <= 3:
            funding -= Decimal("0.5")
        ts.append(t)
        equity.append(unreal[-1] + funding)
        position = 0 if flat_end else 100
        rows.append(
            _pnl(
                "ema",
                "ETHUSDT",
                t,
                equity[-1],
                unrealized_pnl_quote=unreal[-1],
                position_lots=position,
            )
        )
    # flat: closed by a fill at the first funding time
    fills = [_fill("ema", "ETHUSDT", last + 8 * NS_HOUR, Decimal(0))] if flat_end else []
    return _run(pnl=rows, fills=fills), ts, equity


def test_span_and_ratios_end_at_the_last_fresh_mark(tmp_path: Path) -> None:
    # a funding file longer than the prices: 26 days of rows at the last close made the
    # span 31.4 days and the Sharpe -2.95 (-7.09 for the data cut at the last bar)
    run, ts, equity = _bars_then_funding()
    last_move = START + 2 * NS_DAY  # the last close that moved the mark
    kept = [i for i, t in enumerate(ts) if t - last_move <= NS_DAY]
    left_out = len(ts) - len(kept)
    assert left_out == 27  # 30 funding rows, of which the first day's 3 are kept
    stats, _, _ = _report(run, tmp_path, [LINEAR])
    span = (ts[kept[-1]] - ts[0]) / NS_DAY
    assert stats["span"][0] == f"{span:.1f} days"
    assert f"{left_out} PnL rows" in stats["span"][1]
    expected = _sharpe([10_000 + float(equity[i]) for i in kept], [ts[i] for i in kept])
    assert float(stats["Sharpe (firm)"][0]) == pytest.approx(expected, abs=0.006)
    # the firm's PnL is every row's, the funding after the prices included
    assert stats["firm PnL"][0] == f"{equity[-1]:.8f} USDT"


def test_a_flat_firm_or_a_short_quiet_end_keeps_every_row(tmp_path: Path) -> None:
    # no position: no mark to be stale (and the store cannot tell the prices ended)
    run, ts, _ = _bars_then_funding(flat_end=True)
    stats, _, _ = _report(run, tmp_path / "flat", [LINEAR])
    assert stats["span"] == (f"{(ts[-1] - ts[0]) / NS_DAY:.1f} days", "")
    # rows past the last stored tick by seconds (a book moved the mark, books are not
    # stored): fresh, by the kernel's funding rule of a day
    tick_ts = [START + i * 1_000_000_000 for i in range(60)]
    quiet = _run(
        pnl=[_pnl("mm", "ETHUSDT", t, Decimal(1)) for t in tick_ts],
        ticks=[{"ts_ns": tick_ts[10], "symbol": "ETHUSDT", "kind": "trade", "price_ticks": 5}],
    )
    stats, _, _ = _report(quiet, tmp_path / "quiet", [LINEAR])
    assert stats["span"] == (f"{(tick_ts[-1] - tick_ts[0]) / 1e9:.0f} s", "")


# -- 4: several settlement assets -------------------------------------------------------------
def _text(value: Decimal, asset: str) -> str:
    return f"{value.quantize(Decimal(1).scaleb(-SCALE[asset]), rounding=ROUND_HALF_EVEN):f}"


def test_each_row_of_a_run_of_several_assets_names_its_own_and_its_scale(
    tmp_path: Path,
) -> None:
    # Kraken Futures, ETH- and BTC-settled: the agents table and the trade list showed both
    # at ETH's 9 digits with no unit, and the plot's series "mom_eth" and "mr_btc"
    eth, btc = Decimal("-0.009833470"), Decimal("-0.00432612")
    eth_fee, btc_fee = Decimal("0.000000123"), Decimal("0.00001566")
    run = _run(
        pnl=[
            _pnl("mom_eth", "PI_ETHUSD", START, Decimal(0)),
            _pnl("mom_eth", "PI_ETHUSD", START + 1_000_000_000, eth),
            _pnl("mr_btc", "FI_XBTUSD", START, Decimal(0)),
            _pnl("mr_btc", "FI_XBTUSD", START + 1_000_000_000, btc),
        ],
        fills=[
            _fill("mom_eth", "PI_ETHUSD", START + 1, eth_fee),
            _fill("mr_btc", "FI_XBTUSD", START + 2, btc_fee),
        ],
    )
    _, text, table = _report(run, tmp_path, [ETH_INV, BTC_INV])
    rows = {r["agent_id"]: r for r in table.to_dicts()}
    assert set(rows) == {"mom_eth (ETH)", "mr_btc (BTC)"}
    assert rows["mom_eth (ETH)"]["asset"] == "ETH" and rows["mr_btc (BTC)"]["asset"] == "BTC"
    assert rows["mom_eth (ETH)"]["final_equity"] == _text(eth, "ETH") == "-0.009833470"
    assert rows["mr_btc (BTC)"]["final_equity"] == _text(btc, "BTC") == "-0.00432612"
    assert rows["mr_btc (BTC)"]["max_drawdown"] == _text(btc, "BTC")
    # the page: the same cells, and the trade list's fee in each fill's own asset and scale
    assert f"<td>mr_btc (BTC)</td><td>1</td><td>0</td><td>BTC</td><td>{_text(btc, 'BTC')}</td>" in (
        text
    )
    assert f"<td>ETH</td><td>{_text(eth_fee, 'ETH')}</td>" in text
    assert f"<td>BTC</td><td>{_text(btc_fee, 'BTC')}</td>" in text
    assert "0.000015660" not in text  # BTC's fee at ETH's scale
    # the plot's series carry their asset
    assert '"mom_eth (ETH)"' in text and '"mr_btc (BTC)"' in text


# -- 6: dates in the trade list ---------------------------------------------------------------
def test_the_trade_list_dates_its_times_when_the_fills_span_days() -> None:
    late = START + 23 * NS_HOUR + 50 * 60_000_000_000 + 3_000_000  # 23:50:00.003
    early = late + 115 * 60_000_000_000  # 01:45:00.003 the next day
    units = Units({LINEAR.symbol: LINEAR})
    fills = [_fill("ema", "ETHUSDT", t, Decimal(1)) for t in (late, early)]
    shown = trade_list(_run(fills=fills), units)["time"].to_list()

    def utc(ns: int, fmt: str) -> str:
        return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime(fmt) + (
            f".{ns // 1_000_000 % 1000:03d}"
        )

    assert shown == [utc(late, "%Y-%m-%d %H:%M:%S"), utc(early, "%Y-%m-%d %H:%M:%S")]
    assert shown[0].startswith("2021-11-16 ") and shown[1].startswith("2021-11-17 ")
    # one day: the time alone
    same_day = trade_list(_run(fills=fills[:1]), units)["time"].to_list()
    assert same_day == [utc(late, "%H:%M:%S")]


# -- 7: agents that never traded --------------------------------------------------------------
def test_configured_agents_that_never_traded_are_listed_with_zeros(tmp_path: Path) -> None:
    run = _run(
        pnl=[_pnl("mm", "ETHUSDT", START, Decimal("1.5"))],
        fills=[_fill("mm", "ETHUSDT", START, Decimal("0.1"))],
    )
    configured = {"mm": "ETHUSDT", "idle": "ETHUSDT"}
    table = summary(run, "USDT", {"ETHUSDT": "USDT"}, configured)
    rows = {r["agent_id"]: r for r in table.to_dicts()}
    assert set(rows) == set(configured)
    idle = rows["idle"]
    assert idle["fills"] == 0 and idle["risk_checked"] == 0 and idle["final_position_lots"] == 0
    assert idle["final_equity"] == 0 and idle["max_drawdown"] == 0
    assert rows["mm"]["final_equity"] == Decimal("1.5")
    # in a run of several assets the idle agent's zeros are in its own asset, at its scale,
    # and its name carries the asset as the others' do
    both = {"ETHUSDT": "ETH", "FI_XBTUSD": "BTC"}
    run = _run(
        pnl=[
            _pnl("mm", "ETHUSDT", START, Decimal("1.5")),
            _pnl("mr", "FI_XBTUSD", START, Decimal("-0.5")),
        ]
    )
    table = summary(run, "BTC/ETH", both, {"mm": "ETHUSDT", "mr": "FI_XBTUSD", "idle": "FI_XBTUSD"})
    rows = {r["agent_id"]: r for r in table.to_dicts()}
    assert set(rows) == {"mm (ETH)", "mr (BTC)", "idle (BTC)"}
    assert rows["idle (BTC)"]["asset"] == "BTC"
    assert rows["idle (BTC)"]["final_equity"] == _text(Decimal(0), "BTC") == "0.00000000"
    assert rows["mm (ETH)"]["final_equity"] == _text(Decimal("1.5"), "ETH") == "1.500000000"


def test_a_parquet_store_reads_the_agents_of_the_config_its_run_recorded(tmp_path: Path) -> None:
    # `sapphire run` records its trading config in <storage.root>/<run_id>/run-config.json
    run = _run(
        pnl=[_pnl("mm", "ETHUSDT", START, Decimal("1.5"))],
        fills=[_fill("mm", "ETHUSDT", START, Decimal("0.1"))],
    )
    store = tmp_path / "runs" / "store"
    frames = {t: f for t, f in run.tables.items() if f.height}
    ParquetBackend(store, sink_id="r").commit(1, frames, CommitState(1, {}))
    folder = tmp_path / "runs" / "r"
    folder.mkdir()
    recorded = {"agents": [{"id": "mm", "symbol": "ETHUSDT"}, {"id": "idle", "symbol": "X"}]}
    (folder / "run-config.json").write_bytes(msgspec.json.encode(recorded))
    report = write_run_report(store, "r", tmp_path / "out", {LINEAR.symbol: LINEAR}, 10_000.0)
    assert report.summary["agent_id"].to_list() == ["idle", "mm"]
    assert "<td>idle</td><td>0</td>" in report.html.read_text(encoding="utf-8")
