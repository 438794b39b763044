"""Peer side of ``vs_hftbacktest.py``: runs under the separate hftbacktest venv, never Sapphire's.

Usage: python _hftbacktest_mm.py RAW_GZ START_LOCAL_NS HALF_SPREAD_TICKS QTY_LOTS MAX_POS_LOTS
       STEP_NS ENTRY_NS RESPONSE_NS QUEUE(conservative|prob_power) MAKER_FEE TAKER_FEE
Prints one JSON line. The strategy mirrors ``vs_hftbacktest.run_sapphire`` rule for rule.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from hftbacktest import GTX, LIMIT, BacktestAsset, HashMapMarketDepthBacktest
from hftbacktest.data.utils import binancefutures
from hftbacktest.types import DEPTH_SNAPSHOT_EVENT
from numba import njit

REPEATS = 3
TICK = 0.1
LOT = 0.001


@njit
def market_maker(hbt, start_ns, half_ticks, qty_lots, max_pos_lots, step_ns):  # type: ignore[no-untyped-def]
    buy_id = 0
    sell_id = 0
    next_id = 1
    submits = 0
    while hbt.elapse(step_ns) == 0:
        hbt.clear_inactive_orders(0)
        if hbt.current_timestamp < start_ns:
            continue
        depth = hbt.depth(0)
        bb = depth.best_bid_tick
        ba = depth.best_ask_tick
        if bb <= 0 or ba <= 0 or ba <= bb or ba > 10_000_000:
            continue
        two_mid = bb + ba
        bid_t = (two_mid - 2 * half_ticks) // 2
        ask_t = -((-(two_mid + 2 * half_ticks)) // 2)
        pos_lots = round(hbt.position(0) / LOT)
        orders = hbt.orders(0)
        if buy_id != 0 and not orders.__contains__(buy_id):
            buy_id = 0
        if sell_id != 0 and not orders.__contains__(sell_id):
            sell_id = 0
        want_buy = pos_lots < max_pos_lots
        want_sell = pos_lots > -max_pos_lots
        if buy_id != 0:
            o = orders.get(buy_id)
            if (not want_buy) or o.price_tick != bid_t:
                hbt.cancel(0, buy_id, False)
                buy_id = 0
        if sell_id != 0:
            o = orders.get(sell_id)
            if (not want_sell) or o.price_tick != ask_t:
                hbt.cancel(0, sell_id, False)
                sell_id = 0
        if want_buy and buy_id == 0:
            buy_id = next_id
            next_id += 1
            submits += 1
            hbt.submit_buy_order(0, buy_id, bid_t * TICK, qty_lots * LOT, GTX, LIMIT, False)
        if want_sell and sell_id == 0:
            sell_id = next_id
            next_id += 1
            submits += 1
            hbt.submit_sell_order(0, sell_id, ask_t * TICK, qty_lots * LOT, GTX, LIMIT, False)
    return submits


def build(data, entry_ns, response_ns, queue, maker, taker):  # type: ignore[no-untyped-def]
    asset = (
        BacktestAsset()
        .data([data])
        .linear_asset(1.0)
        .constant_order_latency(entry_ns, response_ns)
        .partial_fill_exchange()
        .trading_value_fee_model(maker, taker)
        .tick_size(TICK)
        .lot_size(LOT)
    )
    asset = (
        asset.risk_adverse_queue_model()
        if queue == "conservative"
        else asset.power_prob_queue_model(2.0)
    )
    return HashMapMarketDepthBacktest([asset])


def main() -> None:
    raw, start, half, qty, max_pos, step, entry, resp, queue, maker, taker = sys.argv[1:12]
    t0 = time.perf_counter()
    data = binancefutures.convert(raw)
    convert_s = time.perf_counter() - t0
    # Quote only once the REST snapshot is in (the converter does not sync diffs to it).
    kind = data["ev"] & 0xFF
    snap_local = int(data["local_ts"][np.argmax(kind == DEPTH_SNAPSHOT_EVENT)])
    start_ns = snap_local if start == "auto" else int(start)
    args = (start_ns, int(half), int(qty), int(max_pos), int(step))
    runs = []
    for _ in range(1 + REPEATS):  # the first run compiles numba code: it is not timed
        hbt = build(data, int(entry), int(resp), queue, float(maker), float(taker))
        t0 = time.perf_counter()
        submits = market_maker(hbt, *args)
        wall = time.perf_counter() - t0
        depth = hbt.depth(0)
        mid = (depth.best_bid + depth.best_ask) / 2.0
        sv = hbt.state_values(0)
        runs.append(
            {
                "wall_s": wall,
                "fills": int(sv.num_trades),
                "position_lots": round(sv.position / LOT),
                "balance": float(sv.balance),
                "fee": float(sv.fee),
                "pnl": float(sv.balance + sv.position * mid - sv.fee),
                "submits": int(submits),
                "mid": mid,
            }
        )
        hbt.close()
    timed = sorted(runs[1:], key=lambda r: r["wall_s"])
    out = dict(timed[len(timed) // 2])  # median wall time
    out["walls_s"] = [r["wall_s"] for r in runs[1:]]
    out.update(
        {
            "events": len(data),
            "convert_s": convert_s,
            "first_run_s": runs[0]["wall_s"],
            "start_ns": start_ns,
            "min_feed_latency_ns": int(np.min(data["local_ts"] - data["exch_ts"])),
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
