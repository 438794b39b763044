"""One market maker, the 2024-08-08 USDT-M BTCUSDT data: Sapphire's paper exchange vs hftbacktest.

    .venv/bin/python benchmarks/vs_hftbacktest.py [--queue conservative|prob_power]
        [--peer-python /tmp/peer-venv/bin/python] [--repeats 3]

The peer runs in its own venv (default /tmp/peer-venv, hftbacktest 2.4.4) through
``_hftbacktest_mm.py`` in a subprocess; it is never imported here. Strategy on both sides:
every 100 ms of local time, quote one post-only order per side at floor/ceil(mid -/+ 20 ticks),
10 lots, position limit 50 lots, cancel-and-replace when the price moves. Latencies: 10 ms entry
and 10 ms response. Prints fills, final position, PnL, events/s and the throughput ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

from sapphire.book.fast import FastBook
from sapphire.book.sync import sync_plan
from sapphire.data.instruments import known_instrument
from sapphire.exchange.columnar import ColumnarFeed, FastBookView, replay_until
from sapphire.exchange.config import PaperExchangeBuilder
from sapphire.exchange.paper import PaperExchange
from sapphire.model.events import AnyMarketEvent, BookDelta, BookSnapshot, Side, Trade
from sapphire.model.orders import (
    CancelOrder,
    OrderFilled,
    OrderUpdate,
    SubmitOrder,
    TimeInForce,
)

REPO = Path(__file__).resolve().parents[1]
SESSION, SYMBOL = "2024-08-08", "BTCUSDT"
HALF_TICKS, QTY_LOTS, MAX_POS, STEP_NS = 20, 10, 50, 100_000_000
ENTRY_NS = RESPONSE_NS = 10_000_000


def shared_data() -> Path:
    override = os.environ.get("SAPPHIRE_SHARED_DATA")
    return Path(override) if override else REPO.parent / "shared" / "data"


def _units(col: str, per: int) -> pl.Expr:
    return (pl.col(col).cast(pl.Float64) * per).round().cast(pl.Int64)


def load(data: Path) -> tuple[list[AnyMarketEvent], int]:
    """Events with the venue's transaction time ``T`` as ``ts_event_ns`` (as hftbacktest's
    converter uses) and local time shifted so that no feed latency is negative (likewise).
    Returns the events in local order and the snapshot's local time."""
    ids = ("first_update_id", "final_update_id", "prev_final_update_id")
    depth = (
        pl.read_csv(
            data / "book" / "hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz",
            schema_overrides={"price": pl.String, "qty": pl.String},
        )
        .filter(pl.col("session") == SESSION)
        .with_columns(_units("price", 10).alias("px"), _units("qty", 1000).alias("q"))
        .with_columns(*(pl.col(c).cast(pl.Int64) for c in ids))
        .with_columns((pl.col("txn_ts_ms") * 1_000_000).alias("exch"))
    )
    trades = (
        pl.read_csv(
            data / "trades" / "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz",
            schema_overrides={"price": pl.String, "qty": pl.String},
        )
        .filter(pl.col("session") == SESSION)
        .with_columns(_units("price", 10).alias("px"), _units("qty", 1000).alias("q"))
        .with_columns((pl.col("trade_ts_ms") * 1_000_000).alias("exch"))
    )
    lag = min(
        int((depth["local_ts_ns"] - depth["exch"]).min()),  # type: ignore[arg-type]
        int((trades["local_ts_ns"] - trades["exch"]).min()),  # type: ignore[arg-type]
    )
    shift = -lag if lag < 0 else 0
    keyed: list[tuple[int, int, AnyMarketEvent]] = []
    snap = depth.filter(pl.col("is_snapshot") == 1)
    bids = snap.filter(pl.col("side") == "bid").sort("px", descending=True)
    asks = snap.filter(pl.col("side") == "ask").sort("px")
    snap_local = int(snap["local_ts_ns"][0]) + shift
    keyed.append(
        (
            snap_local,
            0,
            BookSnapshot(
                ts_event_ns=int(snap["exch"][0]),
                ts_recv_ns=snap_local,
                symbol=SYMBOL,
                bids=tuple(zip(bids["px"], bids["q"], strict=True)),
                asks=tuple(zip(asks["px"], asks["q"], strict=True)),
                update_id=int(snap["final_update_id"][0]),
            ),
        )
    )
    rows = (
        depth.filter(pl.col("is_snapshot") == 0)
        .select("local_ts_ns", "exch", *ids, "side", "px", "q")
        .rows()
    )
    for i, (local, exch, first, final, prev, side, px, q) in enumerate(rows):
        last = i + 1 == len(rows) or rows[i + 1][3] != final
        delta = BookDelta(
            ts_event_ns=exch,
            ts_recv_ns=local + shift,
            symbol=SYMBOL,
            side=Side.BUY if side == "bid" else Side.SELL,
            price_ticks=px,
            qty_lots=q,
            first_update_id=first,
            final_update_id=final,
            prev_final_update_id=prev or 0,
            last_in_batch=last,
        )
        keyed.append((local + shift, 1, delta))
    for local, exch, tid, px, q, taker in trades.select(
        "local_ts_ns", "exch", "trade_id", "px", "q", "taker_side"
    ).rows():
        side = Side.BUY if taker == "buy" else Side.SELL
        trade = Trade(
            ts_event_ns=exch,
            ts_recv_ns=local + shift,
            symbol=SYMBOL,
            price_ticks=px,
            qty_lots=q,
            taker_side=side,
            trade_id=tid,
        )
        keyed.append((local + shift, 2, trade))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [e for _, _, e in keyed], snap_local


def load_columnar(data: Path) -> tuple[ColumnarFeed, int]:
    """The same rows as :func:`load`, as columns in Binance-sync order (``sync_plan``), and
    the first row's local time (diffs held for the snapshot are re-timed to it)."""
    ids = ("first_update_id", "final_update_id", "prev_final_update_id")
    depth = (
        pl.read_csv(
            data / "book" / "hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz",
            schema_overrides={"price": pl.String, "qty": pl.String},
        )
        .filter(pl.col("session") == SESSION)
        .with_columns(_units("price", 10).alias("px"), _units("qty", 1000).alias("q"))
        .with_columns(*(pl.col(c).cast(pl.Int64).fill_null(0) for c in ids))
        .with_columns((pl.col("txn_ts_ms") * 1_000_000).alias("exch"))
    )
    trades = (
        pl.read_csv(
            data / "trades" / "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz",
            schema_overrides={"price": pl.String, "qty": pl.String},
        )
        .filter(pl.col("session") == SESSION)
        .with_columns(_units("price", 10).alias("px"), _units("qty", 1000).alias("q"))
        .with_columns((pl.col("trade_ts_ms") * 1_000_000).alias("exch"))
    )
    lag = min(
        int((depth["local_ts_ns"] - depth["exch"]).min()),  # type: ignore[arg-type]
        int((trades["local_ts_ns"] - trades["exch"]).min()),  # type: ignore[arg-type]
    )
    shift = -lag if lag < 0 else 0
    # Snapshot rows best first, as the event loader builds them.
    depth = depth.with_row_index("row").sort(
        "row", pl.when(pl.col("side") == "bid").then(-pl.col("px")).otherwise(pl.col("px"))
    )
    depth = depth.with_columns(
        pl.when(pl.col("is_snapshot") == 1).then(pl.col("row").min().over("is_snapshot", "side"))
        .otherwise(pl.col("row")).alias("grp")
    ).sort("grp", pl.col("side") != "bid", "row")  # fmt: skip
    plan = sync_plan(depth["is_snapshot"].to_numpy() == 1, *(depth[c].to_numpy() for c in ids))
    d = depth[plan.order]
    d_recv = np.maximum.accumulate(d["local_ts_ns"].to_numpy()) + shift
    n_d, n_t = d.height, trades.height
    recv = np.concatenate((d_recv, trades["local_ts_ns"].to_numpy() + shift))
    kind = np.concatenate((np.zeros(n_d, np.int8), np.ones(n_t, np.int8)))
    order = np.lexsort((np.arange(n_d + n_t), kind, recv))
    side = np.concatenate(
        (
            np.where(d["side"].to_numpy() == "bid", 1, -1).astype(np.int8),
            np.where(trades["taker_side"].to_numpy() == "buy", 1, -1).astype(np.int8),
        )
    )
    cat = np.concatenate
    first_local = min(int(depth["local_ts_ns"].min()), int(trades["local_ts_ns"].min()))  # type: ignore[arg-type]
    feed = ColumnarFeed(
        SYMBOL,
        kind[order],
        side[order],
        cat((d["px"].to_numpy(), trades["px"].to_numpy()))[order],
        cat((d["q"].to_numpy(), trades["q"].to_numpy()))[order],
        cat((d["exch"].to_numpy(), trades["exch"].to_numpy()))[order],
        recv[order],
        cat((plan.reset, np.zeros(n_t, np.bool_)))[order],
    )
    return feed, first_local + shift


def run_sapphire(
    events: list[AnyMarketEvent] | ColumnarFeed, start_ns: int, first_ns: int, queue: str
) -> dict[str, object]:
    """The market maker on Sapphire; the 100 ms grid starts at ``first_ns`` (as hftbacktest's
    clock starts at its first row)."""
    inst = known_instrument("binance-usdm", SYMBOL)
    assert inst is not None
    builder = (
        PaperExchangeBuilder()
        .instrument(inst)
        .balance("USDT", "100000")
        .leverage(10)
        .constant_latency(entry_ns=ENTRY_NS, response_ns=RESPONSE_NS)
    )
    if queue == "prob_power":
        builder.power_prob_queue(2.0)
    columnar = isinstance(events, ColumnarFeed)
    if columnar:
        # Levels beyond +-3,276 USD of the mid are not kept: matching never reaches them.
        view = FastBookView(FastBook(capacity=1 << 16, max_capacity=1 << 16))
        ex = PaperExchange(builder.config(), books={SYMBOL: view})
    else:
        ex = PaperExchange(builder.config())
    book = ex.book(SYMBOL)
    live: dict[str, int] = {}  # our working orders (cid -> price) as the strategy knows them
    buy: str | None = None
    sell: str | None = None
    position = 0
    seq = 0
    n = len(events)
    i = 0
    t = first_ns
    t0 = time.perf_counter()
    while i < n:
        t += STEP_NS
        if isinstance(events, ColumnarFeed):
            i = replay_until(ex, events, i, t)
        else:
            while i < n and events[i].ts_recv_ns <= t:
                ex.on_market_event(events[i])
                i += 1
        for report in ex.poll(t):
            if type(report) is OrderFilled:
                position += int(report.side) * report.qty_lots
            elif type(report) is OrderUpdate and report.status.is_final:
                live.pop(report.client_order_id, None)
        if t < start_ns:
            continue
        best_bid, best_ask = book.best_bid(), book.best_ask()
        if best_bid is None or best_ask is None:
            continue
        two_mid = best_bid[0] + best_ask[0]
        bid_px = (two_mid - 2 * HALF_TICKS) // 2
        ask_px = -((-(two_mid + 2 * HALF_TICKS)) // 2)
        if buy is not None and buy not in live:
            buy = None
        if sell is not None and sell not in live:
            sell = None
        want_buy, want_sell = position < MAX_POS, position > -MAX_POS
        for cid, want, px in ((buy, want_buy, bid_px), (sell, want_sell, ask_px)):
            if cid is not None and (not want or live[cid] != px):
                ex.cancel(CancelOrder(ts_event_ns=t, client_order_id=cid, symbol=SYMBOL), t)
                if cid == buy:
                    buy = None
                else:
                    sell = None
        for side, want, px in ((Side.BUY, want_buy, bid_px), (Side.SELL, want_sell, ask_px)):
            if not want or (buy if side is Side.BUY else sell) is not None:
                continue
            seq += 1
            cid = f"mm-{seq}"
            ex.submit(
                SubmitOrder(
                    ts_event_ns=t,
                    client_order_id=cid,
                    agent_id="mm",
                    symbol=SYMBOL,
                    side=side,
                    qty_lots=QTY_LOTS,
                    limit_ticks=px,
                    tif=TimeInForce.POST_ONLY,
                ),
                t,
            )
            live[cid] = px
            if side is Side.BUY:
                buy = cid
            else:
                sell = cid
    wall = time.perf_counter() - t0
    mid = book.mid_ticks()
    assert mid is not None
    pos = ex.account.position_state(SYMBOL)
    mark = Decimal(str(mid))
    unrealized = (mark - pos.avg_entry_ticks) * pos.qty_lots * inst.tick * inst.lot
    pnl = pos.realized_quote - pos.fees_quote + unrealized
    return {
        "wall_s": wall,
        "fills": len(ex.fills),
        "position_lots": pos.qty_lots,
        "pnl": float(pnl),
        "fee": float(pos.fees_quote),
        "submits": seq,
        "events": n,
        "mid": float(mark) / 10,
    }


def run_peer(python: str, queue: str) -> dict[str, object]:
    raw = shared_data() / "book" / "raw_hftbacktest" / "usdm_btcusdt_20240808.gz"
    cmd = [
        python,
        str(REPO / "benchmarks" / "_hftbacktest_mm.py"),
        str(raw),
        "auto",
        str(HALF_TICKS),
        str(QTY_LOTS),
        str(MAX_POS),
        str(STEP_NS),
        str(ENTRY_NS),
        str(RESPONSE_NS),
        queue,
        "0.0002",
        "0.0005",
    ]
    # cwd outside the package: hftbacktest ships a module named ``types``.
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd="/tmp")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue", choices=["conservative", "prob_power"], default="conservative")
    parser.add_argument("--peer-python", default="/tmp/peer-venv/bin/python")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = shared_data()
    t0 = time.perf_counter()
    events, start_ns = load(data)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    feed, first_ns = load_columnar(data)
    load_columnar_s = time.perf_counter() - t0
    per_event = run_sapphire(events, start_ns, first_ns, args.queue)
    run_sapphire(feed, start_ns, first_ns, args.queue)  # warm-up: numba cache load
    runs = sorted(
        (run_sapphire(feed, start_ns, first_ns, args.queue) for _ in range(args.repeats)),
        key=lambda r: float(r["wall_s"]),  # type: ignore[arg-type]
    )
    columnar = runs[len(runs) // 2]
    peer = run_peer(args.peer_python, args.queue)
    print(
        f"queue model: {args.queue}; constant latency entry {ENTRY_NS // 1_000_000} ms, "
        f"response {RESPONSE_NS // 1_000_000} ms; median of {args.repeats} timed runs"
    )
    print(
        f"loads: events {load_s:.2f}s, columns {load_columnar_s:.2f}s, hftbacktest convert "
        f"{float(peer['convert_s']):.2f}s; quoting from {start_ns} (peer {peer['start_ns']})"  # type: ignore[arg-type]
    )
    head = ("fills", "position", "pnl USDT", "fees", "submits", "events", "wall s", "events/s")
    print(f"{'':22}" + "".join(f"{h:>11}" for h in head))
    rates = {}
    for name, r in (
        ("sapphire per-event", per_event),
        ("sapphire columnar", columnar),
        ("hftbacktest 2.4.4", peer),
    ):
        eps = float(r["events"]) / float(r["wall_s"])  # type: ignore[arg-type]
        rates[name] = eps
        print(
            f"{name:22}{r['fills']:>11}{r['position_lots']:>11}{float(r['pnl']):>11.2f}"  # type: ignore[arg-type]
            f"{float(r['fee']):>11.2f}{r['submits']:>11}{r['events']:>11}"  # type: ignore[arg-type]
            f"{float(r['wall_s']):>11.3f}{eps:>11,.0f}"  # type: ignore[arg-type]
        )
    peer_eps = rates["hftbacktest 2.4.4"]
    print(
        f"throughput ratio vs hftbacktest: columnar {rates['sapphire columnar'] / peer_eps:.2f}x, "
        f"per-event {rates['sapphire per-event'] / peer_eps:.3f}x (goal >= 0.5x)"
    )
    print(
        f"sapphire columnar walls: {[round(float(r['wall_s']), 3) for r in runs]}; "  # type: ignore[arg-type]
        f"hftbacktest walls: {[round(w, 3) for w in peer['walls_s']]} "  # type: ignore[attr-defined]
        f"(+ {float(peer['first_run_s']):.2f}s numba-compiling first run)"  # type: ignore[arg-type]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
