"""Peer side of ``vs_nautilus.py``: runs under the separate nautilus_trader venv, never Sapphire's.

Usage: python _nautilus_ema.py TICKS_PARQUET FAST SLOW ORDER_LOTS SIZES(comma separated) [REPEATS]

Reads the tick table written by ``vs_nautilus.py`` (ts_ns, price_ticks at 0.1, qty_lots at
0.001, buyer aggressor flag, trade_id), builds TradeTicks with ``TradeTickDataWrangler`` for
``TestInstrumentProvider.btcusdt_perp_binance()`` and, for each size, runs the low-level
``BacktestEngine`` with one EMA-cross strategy on the first SIZE ticks. Prints one JSON line
per size: orders, fills, PnL, the wrangling time and the fastest of REPEATS (default 1)
``engine.run()`` wall times (each repeat a fresh engine).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from decimal import Decimal

import pandas as pd
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.indicators import ExponentialMovingAverage
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import InstrumentId, Venue
from nautilus_trader.model.objects import Money, Quantity
from nautilus_trader.persistence.wranglers import TradeTickDataWrangler
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy


class TickEmaCrossConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    fast: int
    slow: int
    order_lots: int


class TickEmaCross(Strategy):
    """Target +order_lots while the fast EMA is above the slow one, -order_lots below;
    one market order for the difference on each cross (EMAs of trade prices)."""

    def __init__(self, config: TickEmaCrossConfig) -> None:
        super().__init__(config)
        self.fast = ExponentialMovingAverage(config.fast)
        self.slow = ExponentialMovingAverage(config.slow)
        self.regime = 0
        self.position_lots = 0
        self.instrument = None

    def on_start(self) -> None:
        self.instrument = self.cache.instrument(self.config.instrument_id)
        self.register_indicator_for_trade_ticks(self.config.instrument_id, self.fast)
        self.register_indicator_for_trade_ticks(self.config.instrument_id, self.slow)
        self.subscribe_trade_ticks(self.config.instrument_id)

    def on_trade_tick(self, tick: TradeTick) -> None:
        if not self.slow.initialized:
            return
        fast, slow = self.fast.value, self.slow.value
        regime = 1 if fast > slow else -1 if fast < slow else self.regime
        if regime == self.regime:
            return
        self.regime = regime
        gap = regime * self.config.order_lots - self.position_lots
        if gap == 0:
            return
        self.position_lots += gap
        order = self.order_factory.market(
            instrument_id=self.config.instrument_id,
            order_side=OrderSide.BUY if gap > 0 else OrderSide.SELL,
            quantity=Quantity(abs(gap) / 1000, 3),
        )
        self.submit_order(order)


def run(ticks: list[TradeTick], fast: int, slow: int, lots: int) -> dict[str, object]:
    instrument = TestInstrumentProvider.btcusdt_perp_binance()
    engine = BacktestEngine(
        BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR", bypass_logging=True))
    )
    engine.add_venue(
        venue=Venue("BINANCE"),
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=None,
        starting_balances=[Money(1_000_000, USDT)],
    )
    engine.add_instrument(instrument)
    engine.add_data(ticks)
    strategy = TickEmaCross(
        TickEmaCrossConfig(
            instrument_id=instrument.id, fast=fast, slow=slow, order_lots=lots, strategy_id="T-1"
        )
    )
    engine.add_strategy(strategy)
    t0, c0 = time.perf_counter(), time.process_time()
    engine.run()
    run_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    cache = engine.cache
    fills = []
    commission = Decimal(0)
    for order in cache.orders():
        for event in order.events:
            if type(event).__name__ == "OrderFilled":
                fills.append(
                    {
                        "ts_ns": event.ts_event,
                        "side": 1 if event.order_side == OrderSide.BUY else -1,
                        "price": str(event.last_px),
                        "qty": str(event.last_qty),
                        "commission": str(event.commission.as_decimal()),
                    }
                )
                commission += event.commission.as_decimal()
    fills.sort(key=lambda f: f["ts_ns"])
    account = engine.portfolio.account(Venue("BINANCE"))
    last = ticks[-1].price.as_decimal()
    position = sum(Decimal(f["qty"]) * f["side"] for f in fills)
    realized = sum(
        (Decimal(str(p.realized_pnl.as_decimal())) for p in cache.positions()), Decimal(0)
    )
    balance = account.balance_total(USDT).as_decimal()
    # Unrealized PnL at the last trade, computed here from the fills' average cost so both
    # sides mark the same way.
    cash_flow = (
        sum(-Decimal(f["price"]) * Decimal(f["qty"]) * f["side"] for f in fills) - commission
    )
    result = {
        "ticks": len(ticks),
        "run_s": run_s,
        "cpu_s": cpu_s,
        "orders": len(cache.orders()),
        "fills": len(fills),
        "position": str(position),
        "commission": str(commission),
        "realized_pnl": str(realized),
        "balance_change": str(balance - Decimal(1_000_000)),
        "equity_change_at_last": str(cash_flow + position * last),
        "first_fills": fills[:5],
        "fill_ts": [f["ts_ns"] for f in fills],
        "fill_px": [f["price"] for f in fills],
    }
    engine.dispose()
    return result


def main() -> int:
    path, fast, slow, lots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    sizes = [int(s) for s in sys.argv[5].split(",")]
    repeats = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    logging.disable(logging.WARNING)
    table = pd.read_parquet(path).head(max(sizes))
    instrument = TestInstrumentProvider.btcusdt_perp_binance()
    frame = pd.DataFrame(
        {
            "price": table["price_ticks"].to_numpy() / 10,
            "quantity": table["qty_lots"].to_numpy() / 1000,
            "side": ["BUY" if b else "SELL" for b in table["buyer"].to_numpy()],
            "trade_id": table["trade_id"].astype(str).to_numpy(),
        },
        index=pd.to_datetime(table["ts_ns"].to_numpy(), utc=True),
    )
    t0 = time.perf_counter()
    all_ticks = TradeTickDataWrangler(instrument).process(frame)
    wrangle_s = time.perf_counter() - t0
    for size in sizes:
        runs = [run(all_ticks[:size], fast, slow, lots) for _ in range(repeats)]
        out = min(runs, key=lambda r: r["run_s"])  # type: ignore[arg-type,return-value]
        out["run_s_all"] = [r["run_s"] for r in runs]
        out["wrangle_s_all"] = wrangle_s
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
