"""Peer side of ``vs_freqtrade.py``: runs under the separate freqtrade venv, never Sapphire's.

Usage: python _freqtrade_ema.py OHLCV_CSV_GZ EXCHANGE_INFO_JSON_GZ FAST SLOW FEE STAKE REPEATS

Builds a throw-away user_data dir (feather candles named like freqtrade's own
``BTC_USDT-1m.feather``, one EMA-cross strategy, a config with ROI and stop-loss out of reach),
serves ccxt's ``load_markets`` offline from the recorded Binance exchangeInfo (parsed by ccxt's
own Binance class), then runs freqtrade's backtesting ``REPEATS`` times in-process, timing the
indicator/signal step and the trade loop itself (freqtrade reports whole seconds only).
Prints one JSON line: trades and timings.
"""

from __future__ import annotations

import gzip
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pandas as pd

PAIR, TIMEFRAME = "BTC/USDT", "1m"

STRATEGY = """
import talib.abstract as ta
from freqtrade.strategy import IStrategy
import freqtrade.vendor.qtpylib.indicators as qtpylib


class FtEmaCross(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "{timeframe}"
    startup_candle_count = 400
    minimal_roi = {{"0": 100}}
    stoploss = -0.99
    trailing_stop = False
    use_exit_signal = True
    exit_profit_only = False
    ignore_roi_if_entry_signal = False
    can_short = False
    process_only_new_candles = True

    def populate_indicators(self, df, metadata):
        df["ema_fast"] = ta.EMA(df, timeperiod={fast})
        df["ema_slow"] = ta.EMA(df, timeperiod={slow})
        return df

    def populate_entry_trend(self, df, metadata):
        df.loc[qtpylib.crossed_above(df["ema_fast"], df["ema_slow"]), "enter_long"] = 1
        return df

    def populate_exit_trend(self, df, metadata):
        df.loc[qtpylib.crossed_below(df["ema_fast"], df["ema_slow"]), "exit_long"] = 1
        return df
"""


def serve_markets_offline(exchange_info: dict[str, Any]) -> None:
    """Replace the network fetch with ccxt's own parsing of the recorded exchangeInfo."""

    def prepare(api: Any) -> Any:
        # parse_market reads these; a real fetch fills them from margin endpoints.
        api.options["crossMarginPairsData"] = []
        api.options["isolatedMarginPairsData"] = []
        return api.set_markets(api.parse_markets(exchange_info["symbols"]))

    async def load_async(self: Any, reload: bool = False, params: Any = None) -> Any:
        if reload or not self.markets:
            return prepare(self)
        return self.markets

    def load_sync(self: Any, reload: bool = False, params: Any = None) -> Any:
        if reload or not self.markets:
            return prepare(self)
        return self.markets

    ccxt_async.binance.load_markets = load_async
    ccxt.binance.load_markets = load_sync


def write_user_data(root: Path, ohlcv: Path, fast: int, slow: int) -> None:
    data = root / "data" / "binance"
    data.mkdir(parents=True)
    raw = pd.read_csv(ohlcv)
    time_col = "timestamp_ms" if "timestamp_ms" in raw.columns else raw.columns[0]
    if time_col == "timestamp_ms":
        date = pd.to_datetime(raw[time_col], unit="ms", utc=True)
    else:
        date = pd.to_datetime(raw[time_col], utc=True)
    frame = pd.DataFrame(
        {
            "date": date,
            **{c: raw[c].astype("float64") for c in ("open", "high", "low", "close", "volume")},
        }
    )
    frame.to_feather(data / f"{PAIR.replace('/', '_')}-{TIMEFRAME}.feather")
    (root / "strategies").mkdir()
    (root / "strategies" / "ft_ema_cross.py").write_text(
        STRATEGY.format(timeframe=TIMEFRAME, fast=fast, slow=slow)
    )


def config(root: Path, fee: float, stake: float) -> dict[str, Any]:
    return {
        "max_open_trades": 1,
        "stake_currency": "USDT",
        "stake_amount": stake,
        "dry_run": True,
        "dry_run_wallet": stake * 10,
        "timeframe": TIMEFRAME,
        "trading_mode": "spot",
        "fee": fee,
        "minimal_roi": {"0": 100},
        "stoploss": -0.99,
        "order_types": {
            "entry": "market",
            "exit": "market",
            "stoploss": "market",
            "stoploss_on_exchange": False,
        },
        "entry_pricing": {"price_side": "other", "use_order_book": False},
        "exit_pricing": {"price_side": "other", "use_order_book": False},
        "exchange": {
            "name": "binance",
            "key": "",
            "secret": "",
            "pair_whitelist": [PAIR],
            "pair_blacklist": [],
            "ccxt_config": {"options": {"fetchMarkets": ["spot"]}},
        },
        "pairlists": [{"method": "StaticPairList"}],
        "user_data_dir": str(root),
        "datadir": str(root / "data" / "binance"),
        "strategy": "FtEmaCross",
        "strategy_path": str(root / "strategies"),
        "dataformat_ohlcv": "feather",
        "export": "none",
        "runmode": "backtest",
        "internals": {},
    }


def main() -> int:
    ohlcv, info_path = Path(sys.argv[1]), Path(sys.argv[2])
    fast, slow, fee, stake, repeats = (
        int(sys.argv[3]),
        int(sys.argv[4]),
        float(sys.argv[5]),
        float(sys.argv[6]),
        int(sys.argv[7]),
    )
    logging.disable(logging.WARNING)
    with gzip.open(info_path) if info_path.suffix == ".gz" else open(info_path, "rb") as fh:
        serve_markets_offline(json.load(fh))

    from freqtrade.commands.optimize_commands import setup_optimize_configuration
    from freqtrade.data.converter import trim_dataframes
    from freqtrade.data.history import get_timerange
    from freqtrade.enums import RunMode
    from freqtrade.optimize.backtesting import Backtesting

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_user_data(root, ohlcv, fast, slow)
        cfg_path = root / "config.json"
        cfg_path.write_text(json.dumps(config(root, fee, stake)))
        args = {
            "config": [str(cfg_path)],
            "user_data_dir": str(root),
            "datadir": str(root / "data" / "binance"),
            "strategy": "FtEmaCross",
            "strategy_path": str(root / "strategies"),
            "export": "none",
            "fee": fee,
        }
        cfg = setup_optimize_configuration(args, RunMode.BACKTEST)
        t0 = time.perf_counter()
        bt = Backtesting(cfg)
        setup_s = time.perf_counter() - t0
        data, timerange = bt.load_bt_data()
        strat = bt.strategylist[0]
        signal_s, loop_s, cpu_s = [], [], []
        result: dict[str, Any] = {}
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            bt._set_strategy(strat)
            processed = strat.advise_all_indicators(data)
            trimmed = trim_dataframes(processed, timerange, bt.required_startup)
            min_date, max_date = get_timerange(trimmed)
            t1 = time.perf_counter()
            result = bt.backtest(processed=processed, start_date=min_date, end_date=max_date)
            t2 = time.perf_counter()
            cpu_s.append(time.process_time() - c0)
            signal_s.append(t1 - t0)
            loop_s.append(t2 - t1)
        rows = len(next(iter(data.values())))
    trades = result["results"]
    out = {
        "candles": rows,
        "setup_s": setup_s,
        "indicators_s": signal_s,
        "loop_s": loop_s,
        "cpu_s": cpu_s,
        "final_balance": result["final_balance"],
        "trades": [
            {
                "open_ns": int(pd.Timestamp(t.open_date).value),
                "close_ns": int(pd.Timestamp(t.close_date).value),
                "open_rate": float(t.open_rate),
                "close_rate": float(t.close_rate),
                "amount": float(t.amount),
                "profit_abs": float(t.profit_abs),
                "profit_ratio": float(t.profit_ratio),
                "exit_reason": str(t.exit_reason),
            }
            for t in trades.itertuples()
        ],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
