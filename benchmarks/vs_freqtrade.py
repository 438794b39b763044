"""One EMA-cross strategy on 45,031 real 1m candles: Sapphire's vectorized engine vs freqtrade.

    .venv/bin/python benchmarks/vs_freqtrade.py [--peer-python /tmp/ft-venv/bin/python]
        [--fast 12] [--slow 26] [--repeats 5]

The peer (freqtrade 2026.9) runs in its own venv through ``_freqtrade_ema.py`` in a subprocess;
it is never imported here. Both sides: the BTC-PERP 1m file, TA-Lib EMAs on the close, enter
long when the fast EMA crosses above the slow one, exit when it crosses below, signal at a
candle's close and fill at the next candle's open, 10 bps fee per side, no slippage, one
position at a time, stop-loss and ROI out of reach (-0.99 / 10000 %). freqtrade sizes each
entry at 1000 USDT (amount rounded to Binance's 0.00001 BTC step); Sapphire trades a fixed
0.021 BTC. Profit ratios per trade are size-free, so they are compared trade for trade.

Timings exclude reading the file on both sides: freqtrade's indicator step
(``advise_all_indicators``) plus its backtest loop (signal lists + trade loop), against
Sapphire's ``run_vectorized`` (signals + fills + equity curve), medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sapphire.agents.bar_policy import StakeConfig
from sapphire.agents.strategies.ema_cross import EmaCross
from sapphire.backtest import _loaders
from sapphire.backtest.bar_gateway import BarCosts
from sapphire.backtest.ledger import BacktestResult
from sapphire.backtest.vectorized import run_vectorized
from sapphire.model import Instrument
from sapphire.model.events import Side

REPO = Path(__file__).resolve().parents[1]
OHLCV = "ohlcv/nautilus_btc-perp_1m_2021-12-31_2022-02-01.csv.gz"
EXCHANGE_INFO = "exchange/cryptofeed_binance_spot_exchangeInfo_2021-10-12.json.gz"
FEE = 0.001
STAKE_USDT = 1000.0
STAKE_LOTS = 2100  # 0.021 BTC, about 1000 USDT at the file's prices


def shared_data() -> Path:
    override = os.environ.get("SAPPHIRE_SHARED_DATA")
    return Path(override) if override else REPO.parent / "shared" / "data"


class EmaCrossNoStop(EmaCross):
    """freqtrade's ``stoploss = -0.99``: the stop never fires on these prices."""

    stoploss = -0.99


def run_peer(python: str, data: Path, fast: int, slow: int, repeats: int) -> dict[str, Any]:
    cmd = [
        python,
        str(REPO / "benchmarks" / "_freqtrade_ema.py"),
        str(data / OHLCV),
        str(data / EXCHANGE_INFO),
        str(fast),
        str(slow),
        str(FEE),
        str(STAKE_USDT),
        str(repeats),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/tmp")
    if proc.returncode != 0:
        raise SystemExit(f"freqtrade peer failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def sapphire_trades(result: BacktestResult, inst: Instrument) -> list[dict[str, Any]]:
    """Round trips from the fills (long only: a buy opens, the next sell closes)."""
    trades = []
    fills = result.fills
    tick = float(inst.tick_size)
    for buy, sell in zip(fills[::2], fills[1::2], strict=False):
        assert buy.side is Side.BUY and sell.side is Side.SELL
        entry, exit_ = buy.price_ticks * tick, sell.price_ticks * tick
        # freqtrade's profit ratio: exit value net of fee over entry cost with fee.
        ratio = (exit_ * (1 - FEE)) / (entry * (1 + FEE)) - 1
        trades.append(
            {
                "open_ns": buy.ts_event_ns,
                "close_ns": sell.ts_event_ns,
                "open_rate": entry,
                "close_rate": exit_,
                "profit_ratio": ratio,
                "pnl": float(
                    inst.notional_quote(sell.price_ticks, sell.qty_lots)
                    - inst.notional_quote(buy.price_ticks, buy.qty_lots)
                    - buy.fee_quote
                    - sell.fee_quote
                ),
            }
        )
    return trades


def compare(ft: list[dict[str, Any]], sp: list[dict[str, Any]], tol_ratio: float) -> None:
    ft_open = {t["open_ns"]: t for t in ft}
    sp_open = {t["open_ns"]: t for t in sp}
    both = sorted(set(ft_open) & set(sp_open))
    same_exit = [k for k in both if ft_open[k]["close_ns"] == sp_open[k]["close_ns"]]
    same_price = [
        k
        for k in same_exit
        if ft_open[k]["open_rate"] == sp_open[k]["open_rate"]
        and ft_open[k]["close_rate"] == sp_open[k]["close_rate"]
    ]
    ratio_ok = [
        k
        for k in same_price
        if abs(ft_open[k]["profit_ratio"] - sp_open[k]["profit_ratio"]) <= tol_ratio
    ]
    print(
        f"  agreement (timestamps exact, 0 ns tolerance): {len(both)} entries at the same candle,"
        f" {len(same_exit)} of them exit at the same candle, {len(same_price)} at identical"
        f" prices, {len(ratio_ok)} with |profit ratio diff| <= {tol_ratio:g}"
    )
    only_ft = [ft_open[k] for k in sorted(set(ft_open) - set(sp_open))]
    only_sp = [sp_open[k] for k in sorted(set(sp_open) - set(ft_open))]
    for t in only_ft:
        print(f"  only freqtrade: open {t['open_ns']} close {t['close_ns']} ({t['exit_reason']})")
    for t in only_sp:
        print(f"  only Sapphire:  open {t['open_ns']} close {t['close_ns']}")
    for k in both:
        if k not in same_exit:
            print(
                f"  exit differs for entry {k}: freqtrade {ft_open[k]['close_ns']}"
                f" ({ft_open[k]['exit_reason']}), Sapphire {sp_open[k]['close_ns']}"
            )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer-python", default="/tmp/ft-venv/bin/python")
    parser.add_argument("--fast", type=int, default=12)
    parser.add_argument("--slow", type=int, default=26)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = shared_data()
    load_before = os.getloadavg()[0]

    raw = _loaders.read_ohlcv(data / OHLCV)
    inferred = _loaders.instrument_for(raw, "BTCUSDT")
    inst = Instrument(
        symbol="BTCUSDT",
        base="BTC",
        quote="USDT",
        tick_size=inferred.tick_size,
        lot_size="0.00001",
        maker_fee_bps="10",
        taker_fee_bps="10",
    )
    frame = _loaders.tick_frame(raw, inst)
    strategy = EmaCrossNoStop({"fast": args.fast, "slow": args.slow})
    costs = BarCosts(fee_bps=Decimal(10))
    stake = StakeConfig(stake_lots=STAKE_LOTS, initial_cash=Decimal(100_000))
    run_vectorized(strategy, frame, inst, costs, stake)  # warm imports and caches
    times, cpu = [], []
    result = None
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_vectorized(strategy, frame, inst, costs, stake)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert result is not None
    sp_s = statistics.median(times)
    sp_cpu = statistics.median(cpu)

    peer = run_peer(args.peer_python, data, args.fast, args.slow, args.repeats)
    ft_ind = statistics.median(peer["indicators_s"])
    ft_loop = statistics.median(peer["loop_s"])
    ft_trades = peer["trades"]
    sp_trades = sapphire_trades(result, inst)
    # freqtrade closes a trade still open at the end of the data ("force_exit" at the last
    # close); Sapphire keeps the position and marks it. Compare closed round trips.
    ft_closed = [t for t in ft_trades if t["exit_reason"] != "force_exit"]
    open_left = result.fills[-1].position_after if result.fills else 0

    print(
        f"EMA cross {args.fast}/{args.slow} on {frame.height:,} BTC-PERP 1m candles"
        f" (freqtrade saw {peer['candles']:,}), fee {FEE:.1%}/side, no stop/ROI"
    )
    print(
        f"  trades: freqtrade {len(ft_trades)} ({len(ft_trades) - len(ft_closed)} force-exited at"
        f" the end), Sapphire {len(sp_trades)} closed round trips"
        f" + {'1 position left open' if open_left else 'flat at the end'}"
    )
    compare(ft_closed, sp_trades, 1e-12)
    ft_ratio = sum(t["profit_ratio"] for t in ft_closed)
    sp_ratio = sum(t["profit_ratio"] for t in sp_trades)
    ft_profit = sum(t["profit_abs"] for t in ft_closed)
    sp_profit = sum(t["pnl"] for t in sp_trades)
    print(
        f"  sum of profit ratios (closed trades): freqtrade {ft_ratio:+.10f},"
        f" Sapphire {sp_ratio:+.10f}"
    )
    print(
        f"  total profit (closed trades, own sizing): freqtrade {ft_profit:+.4f} USDT at"
        f" {STAKE_USDT:g} USDT/trade; Sapphire {sp_profit:+.4f} USDT at"
        f" {STAKE_LOTS * float(inst.lot_size):g} BTC/trade"
        f" (final equity {result.final_equity:.4f} from {stake.initial_cash})"
    )
    ft_total = ft_ind + ft_loop
    print(
        f"  time: freqtrade indicators {ft_ind * 1e3:.1f} ms + backtest loop {ft_loop * 1e3:.1f} ms"
        f" = {ft_total * 1e3:.1f} ms; Sapphire run_vectorized {sp_s * 1e3:.2f} ms"
        f" ({frame.height / sp_s:,.0f} candles/s)"
    )
    print(
        f"  speed ratio: {ft_total / sp_s:.0f}x (loop only vs whole Sapphire run:"
        f" {ft_loop / sp_s:.0f}x); goal >= 100x"
    )
    ft_cpu = statistics.median(peer["cpu_s"])
    print(
        f"  per CPU second (process time, less sensitive to other load): freqtrade"
        f" {ft_cpu * 1e3:.1f} ms, Sapphire {sp_cpu * 1e3:.2f} ms, ratio {ft_cpu / sp_cpu:.0f}x"
    )
    print(
        f"machine load average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f}"
        f" on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
