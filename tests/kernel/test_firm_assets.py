"""The firm's money across settlement assets (issue 16): the BTC of an inverse leg and the
USDT of a linear leg are kept apart per asset and converted into ONE firm figure (USDT) at
the BTC price of the run's own instrument; the firm daily-loss limit binds on that figure.
Hand-computed with Fractions from the real instrument files of the cross-venue demo."""

from __future__ import annotations

import io
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import msgspec
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from sapphire.cli.kernel_run import run_in_process
from sapphire.config.system import load_config
from sapphire.kernel.assembly import data_path
from sapphire.model import Instrument, OrderIntent, OrderType, RejectReason, Side
from sapphire.model.instrument import InstrumentKind, OptionType
from sapphire.model.orders import OrderFilled
from sapphire.risk.engine import NS_PER_DAY, RiskEngine
from sapphire.risk.limits import AgentLimits, RiskLimits
from sapphire.risk.portfolio import Portfolio, conversion_rate, reporting_asset

ROOT = Path(__file__).resolve().parents[2]
INV = msgspec.json.decode(
    (ROOT / "configs/instruments/bybit-inverse-BTCUSD.json").read_bytes(), type=Instrument
)
LIN = msgspec.json.decode(
    (ROOT / "configs/instruments/bybit-linear-ETHUSDT.json").read_bytes(), type=Instrument
)
BOTH = {INV.symbol: INV, LIN.symbol: LIN}
TINY = Fraction(1, 10**18)  # 28-digit Decimals against exact Fractions


def fill(
    symbol: str, side: Side, price_ticks: int, lots: int, fee: str = "0", n: int = 0
) -> OrderFilled:
    return OrderFilled(
        ts_event_ns=n,
        client_order_id=f"c{n}",
        agent_id="a",
        symbol=symbol,
        side=side,
        price_ticks=price_ticks,
        qty_lots=lots,
        fee_quote=Decimal(fee),
        is_maker=False,
        fill_id=f"f{n}",
    )


def test_two_assets_convert_at_the_btc_mark_by_hand() -> None:
    pf = Portfolio(BOTH)
    # 1,000 one-USD contracts long at 60,000 USD (tick 0.5), fee 0.00001 BTC
    pf.apply_fill(fill(INV.symbol, Side.BUY, 120_000, 1_000, "0.00001", 1))
    # 1.00 ETH long (0.01-ETH lots) at 2,000 USDT (tick 0.05), fee 0.5 USDT
    pf.apply_fill(fill(LIN.symbol, Side.BUY, 40_000, 100, "0.5", 2))
    marks = {INV.symbol: 122_000.0, LIN.symbol: 39_800.0}  # 61,000 USD; 1,990 USDT
    firm = pf.firm_pnl(marks)

    btc = 1_000 * (Fraction(1, 60_000) - Fraction(1, 61_000)) - Fraction(1, 100_000)
    usdt = Fraction(1990 - 2000) - Fraction(1, 2)
    assert firm.asset == "USDT" and not firm.partial
    assert firm.by_asset["USDT"] == Decimal("-10.5")
    assert abs(Fraction(firm.by_asset["BTC"]) - btc) < TINY
    assert firm.rates == {"BTC": Decimal(61_000)}
    assert abs(Fraction(firm.total) - (btc * 61_000 + usdt)) < TINY
    # the old sum of unlike units would be about -10.5; the coin leg is worth about +16 USDT
    assert firm.total > 5


def test_a_coin_without_a_price_is_left_out_and_said_so() -> None:
    pf = Portfolio(BOTH)
    pf.apply_fill(fill(INV.symbol, Side.BUY, 120_000, 1_000, n=1))
    pf.apply_fill(fill(INV.symbol, Side.SELL, 121_000, 1_000, n=2))  # realized, in BTC
    pf.apply_fill(fill(LIN.symbol, Side.BUY, 40_000, 100, "0.5", 3))
    firm = pf.firm_pnl({LIN.symbol: 40_000.0})  # no BTCUSD mark (yet)
    assert firm.partial and firm.missing == ("BTC",)
    assert firm.by_asset["BTC"] > 0
    assert firm.total == Decimal("-0.5")  # the USDT leg only: no BTC added as if USDT


def test_reporting_asset_and_rates() -> None:
    assert reporting_asset({LIN.symbol: LIN}) == "USDT"
    assert reporting_asset({INV.symbol: INV}) == "BTC"  # a COIN-M run stays in its coin
    assert reporting_asset(BOTH) == "USDT"
    # a BTC-quoted spot pair beside BTCUSDT: still a USDT firm (the alphabet made it BTC, so
    # capital_quote and the firm's loss limit were read in BTC)
    ethbtc = Instrument(symbol="ETHBTC", base="ETH", quote="BTC", tick_size="0.00001",
                        lot_size="0.001")  # fmt: skip
    assert reporting_asset({LIN.symbol: LIN, "ETHBTC": ethbtc}) == "USDT"
    assert reporting_asset({"ETHBTC": ethbtc, LIN.symbol: LIN}) == "USDT"
    eth_inv = Instrument(
        symbol="ETHUSD",
        kind=InstrumentKind.INVERSE_PERPETUAL,
        base="ETH",
        quote="USD",
        tick_size="0.05",
        lot_size="1",
    )
    coin_m = {INV.symbol: INV, "ETHUSD": eth_inv}
    assert reporting_asset(coin_m) == "USD"
    assert conversion_rate("ETH", "USD", coin_m, {"ETHUSD": 40_000.0}) == Decimal(2000)
    # an option's mark is a premium, never the coin's price
    option = Instrument(
        symbol="BTC-C",
        kind=InstrumentKind.OPTION,
        base="BTC",
        quote="USDT",
        tick_size="1",
        lot_size="1",
        strike="60000",
        option_type=OptionType.CALL,
        expiry_ns=1,
    )
    assert conversion_rate("BTC", "USDT", {"BTC-C": option}, {"BTC-C": 500.0}) is None
    # the other way round: USDT in BTC
    assert conversion_rate("USDT", "BTC", BOTH, {INV.symbol: 120_000.0}) == 1 / Decimal(60_000)


def _engine(firm_limit: str) -> RiskEngine:
    limits = RiskLimits(
        price_band_bps=100,
        max_firm_daily_loss_quote=firm_limit,
        kill_on_daily_loss=False,
        default_agent=AgentLimits(max_daily_loss_quote="1000000"),
    )
    eng = RiskEngine(limits, BOTH, Portfolio(BOTH))
    eng.update_mark(INV.symbol, 120_000.0)
    eng.update_mark(LIN.symbol, 40_000.0)
    return eng


def _coin_loss(eng: RiskEngine, contracts: int) -> None:
    day = 20_000 * NS_PER_DAY
    eng.refresh(day)  # the day starts flat
    eng._portfolio.apply_fill(fill(INV.symbol, Side.BUY, 120_000, contracts, n=1))
    eng.update_mark(INV.symbol, 118_000.0)  # BTC 60,000 -> 59,000 USD
    eng.refresh(day + 1_000)


def test_firm_loss_limit_trips_on_a_loss_in_the_coin_leg() -> None:
    eng = _engine("500")
    _coin_loss(eng, 40_000)
    loss_btc = 40_000 * (Fraction(1, 60_000) - Fraction(1, 59_000))  # about -0.0113 BTC
    daily = eng.firm_daily_pnl()
    assert abs(Fraction(daily.by_asset["BTC"]) - loss_btc) < TINY
    assert abs(Fraction(daily.total) - loss_btc * 59_000) < TINY  # about -666.67 USDT
    assert eng.firm_breached  # the BTC figure alone (-0.0113) is far inside 500
    order = OrderIntent(
        ts_event_ns=20_000 * NS_PER_DAY + 2_000,
        agent_id="a",
        seq=9,
        symbol=LIN.symbol,
        side=Side.SELL,
        qty_lots=1,
        limit_ticks=40_000,
        order_type=OrderType.LIMIT,
    )
    decision = eng.check(order, 0, order.ts_event_ns)
    assert decision.reason is RejectReason.RISK_DAILY_LOSS and "firm" in decision.detail


def test_half_the_coin_loss_stays_inside_the_firm_limit() -> None:
    eng = _engine("500")
    _coin_loss(eng, 20_000)  # about -333 USDT
    assert not eng.firm_breached
    assert Decimal(-334) < eng.firm_daily_pnl().total < Decimal(-333)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(110_000, 130_000), st.integers(1, 5_000)),
        min_size=1,
        max_size=12,
    ),
    st.integers(110_000, 130_000),
    st.booleans(),
)
def test_a_single_asset_firm_is_unchanged(
    trades: list[tuple[bool, int, int]], mark: int, inverse: bool
) -> None:
    inst = (
        INV
        if inverse
        else Instrument(
            symbol="BTCUSDT", base="BTC", quote="USDT", tick_size="0.5", lot_size="0.001"
        )
    )
    pf = Portfolio({inst.symbol: inst})
    for n, (buy, price, lots) in enumerate(trades):
        fee = inst.fee_quote(price, lots, maker=False)
        pf.apply_fill(fill(inst.symbol, Side.BUY if buy else Side.SELL, price, lots, str(fee), n))
    marks = {inst.symbol: float(mark)}
    firm = pf.firm_pnl(marks)
    assert firm.asset == inst.settle_asset and not firm.partial and not firm.rates
    assert firm.total == pf.total_pnl_quote(None, marks)  # the same Decimal, not just close
    assert str(firm.total) == str(pf.total_pnl_quote(None, marks))


@pytest.mark.skipif(
    not data_path("shared:book/cryptofeed_bybit_inverse_ws_2021-04-17.log.gz").exists(),
    reason="shared recorded data not present",
)
def test_cross_venue_summary_prints_one_firm_figure_in_usdt(tmp_path: Path) -> None:
    """The end-of-run screen of the cross-venue demo: per-asset firm totals (never added)
    and the one USDT figure, which is the BTC total at the printed BTC price plus USDT."""
    raw = msgspec.to_builtins(load_config(ROOT / "configs/demo_cross_venue.yaml"))
    raw["storage"]["root"] = str(tmp_path / "runs")
    for venue in raw["data"]["venues"]:
        venue["instrument_files"] = [str(ROOT / f) for f in venue["instrument_files"]]
    path = tmp_path / "cross.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = io.StringIO()
    assert run_in_process(path, "firm", False, Console(file=out, width=250)) == 0, out.getvalue()
    lines = out.getvalue().splitlines()
    per_asset = {
        line.split()[-1]: Decimal(line.split()[-2]) for line in lines if "firm total" in line
    }
    assert set(per_asset) == {"BTC", "USDT"}
    (firm,) = [line for line in lines if "firm PnL in USDT" in line]
    price = Decimal(re.search(r"BTC at ([\d.]+)", firm).group(1))  # type: ignore[union-attr]
    assert 50_000 < price < 70_000  # Bybit BTCUSD on 2021-04-17
    got = Decimal(firm.split()[-2])
    # the printed per-asset figures are rounded to 8 decimals: a BTC rounding of 5e-9 BTC
    # is worth about 0.0003 USDT at this price
    assert abs(got - (per_asset["BTC"] * price + per_asset["USDT"])) < Decimal("0.001")


KRAKEN_ETH = (
    '{"symbol":"PI_ETHUSD","venue":"KRAKENF","kind":"inverse_perpetual","base":"ETH",'
    '"quote":"USD","tick_size":"0.05","lot_size":"1","min_qty":"1","max_qty":"0",'
    '"min_notional":"0","maker_fee_bps":"2","taker_fee_bps":"5","contract_size":"1",'
    '"settle":"ETH"}'
)


def _eth_trades(tmp: Path) -> Path:
    """The recording's PI_ETHUSD trades are one print; its trade_snapshot holds the 100
    before the subscription (history, not replayed). Re-sent one every 0.25 s from the
    recording's start as live ``trade`` messages, in a log of their own, they give the
    momentum agent prices to trade on (the loader's own path, the venue's own book)."""
    import gzip
    import json

    path = data_path("shared:book/cryptofeed_kraken-futures_inverse_ws_2021-07-22.log.gz")
    with gzip.open(path, "rt") as fh:
        url = next(fh)  # the stream's URL line, by which the log is known
        for line in fh:
            head, _, body = line.partition(": ")
            msg = json.loads(body) if body.startswith("{") else {}
            if msg.get("feed") == "trade_snapshot" and msg.get("product_id") == "PI_ETHUSD":
                start, history = float(head), msg["trades"][::-1]  # sent newest first
                break
    out = tmp / "kf_eth_trades_2021-07-22.log"  # the day: one session with the book
    lines = [url.rstrip("\n")]
    for i, trade in enumerate(history):
        at = start + 0.25 * i
        lines.append(f"{at:.6f}: " + json.dumps({**trade, "time": int(at * 1000)}))
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.skipif(
    not data_path("shared:book/cryptofeed_kraken-futures_inverse_ws_2021-07-22.log.gz").exists(),
    reason="shared recorded data not present",
)
def test_the_screen_shows_eth_money_at_its_stored_scale(tmp_path: Path) -> None:
    """ETH is stored to 9 decimals: the screen rounded it to 8 and printed 9 digits, so
    -0.003470666 in the tables read -0.003470670 on the screen."""
    from sapphire.config.system import parse_config
    from sapphire.kernel.runner import InProcessKernel
    from sapphire.storage.money import quote_scale, round_money

    (tmp_path / "eth.json").write_text(KRAKEN_ETH)
    config = parse_config(
        {
            "data": {
                "source": "files",
                "files": [
                    "shared:book/cryptofeed_kraken-futures_inverse_ws_2021-07-22.log.gz",
                    str(_eth_trades(tmp_path)),
                ],
                "instrument_files": [str(tmp_path / "eth.json")],
            },
            "agents": [
                {
                    "id": "mom",
                    "kind": "momentum",
                    "symbol": "PI_ETHUSD",
                    "params": {
                        "order_lots": 3000,
                        "allow_short": True,
                        "fast_span": 3,
                        "slow_span": 10,
                        "threshold_bps": 0.05,
                    },
                },
                {  # never trades: its zeros are ETH's too
                    "id": "idle",
                    "kind": "momentum",
                    "symbol": "PI_ETHUSD",
                    "params": {"threshold_bps": 10_000.0},
                },
            ],
            "capital_quote": "100000000",
            "risk": {
                "price_band_bps": 100,
                "default_agent": {
                    "max_position_lots": 100000,
                    "max_notional_quote": "100",
                    "max_order_lots": 20000,
                    "max_orders_per_second": 50,
                },
            },
            "exchange": {"kind": "paper", "params": {"balances": {"ETH": "100", "USD": "0"}}},
            "storage": {"root": str(tmp_path / "runs")},
        }
    )
    kernel = InProcessKernel(config, "eth-scale")
    kernel.run()
    rows = kernel.summary()["agents"]
    row, idle = rows["mom/PI_ETHUSD"], rows["idle/PI_ETHUSD"]
    assert row["unit"] == "ETH" and quote_scale("ETH") == 9
    assert idle["traded_lots"] == 0 and idle["pnl_quote"] == idle["fees_quote"] == "0.000000000"
    core = kernel.coordinator.core
    state = core.portfolio.positions[("mom", "PI_ETHUSD")]
    assert state.traded_lots > 0
    exact = {"realized_quote": state.realized_pnl_quote, "fees_quote": state.fees_quote}
    for key, value in exact.items():
        assert row[key] == f"{round_money(value, 'ETH'):f}", key
        assert len(row[key].partition(".")[2]) == 9, key
    assert any(row[k][-1] != "0" for k in exact)  # a ninth digit, not an 8-dp figure padded
