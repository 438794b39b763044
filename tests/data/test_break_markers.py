"""A break a loader finds in its own book reaches the venue's book as one marker row.

Every venue loader that drops its book of a symbol on an integrity break (an unknown level
id, a checksum mismatch, a missing sequence number, a lost message) and rejects the symbol's
rows until the next snapshot emits one break marker there (``schemas.BREAK_PREV``). Here each
one reads the same story, written by hand in its venue's documented shapes: a snapshot, two
good deltas, the breaking message, a delta the loader rejects, a new snapshot (the same
prices, new sizes) and a delta after it. Fed to :class:`L2Book` (the venue's book) and to
:func:`sync_plan` (the columnar replay), the book goes out of sync at the break (it offered
the stale levels before), syncs again on the new snapshot, and never applies the marker: it
deletes a level the new snapshot holds, which is still there at the end.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from sapphire.book.l2 import DeltaResult, L2Book
from sapphire.book.sync import sync_plan
from sapphire.data.cryptofeed_rows import Chain
from sapphire.data.registry import detect, load_frames, stream_events
from sapphire.data.schemas import BREAK_PREV, FrameKind
from sapphire.data.validation import RowReject
from sapphire.exchange.matching import MatchingEngine
from sapphire.exchange.queue import ConservativeQueue
from sapphire.exchange.state import SimOrder
from sapphire.model.events import BookDelta, BookSnapshot, Side
from sapphire.model.orders import OrderType, TimeInForce
from tests.data import venue_checks as vc

Book = dict[float, float]

# The story in prices and sizes, the same for every venue.
FIRST = ({100.0: 1.0, 99.5: 2.0, 99.0: 3.0}, {100.5: 1.0, 101.0: 2.0, 101.5: 3.0})
GOOD = [(1, 100.0, 5.0), (-1, 100.5, 6.0)]  # two deltas before the break, one level each
STALE = {100.0: 5.0, 99.5: 2.0, 99.0: 3.0}, {100.5: 6.0, 101.0: 2.0, 101.5: 3.0}
REJECTED = (-1, 101.0, 9.0)  # after the break: a gap for the loader
SECOND = ({100.0: 4.0, 99.5: 5.0, 99.0: 6.0}, {100.5: 4.0, 101.0: 5.0, 101.5: 6.0})
AFTER = (1, 99.5, 7.0)  # the delta after the new snapshot
FINAL = {100.0: 4.0, 99.5: 7.0, 99.0: 6.0}, {100.5: 4.0, 101.0: 5.0, 101.5: 6.0}

T0 = 1_626_994_927  # 2021-07-22 23:02:07 UTC, seconds


@dataclasses.dataclass(frozen=True)
class Venue:
    """A venue's log of the story: its name (``stream.format``), symbol, lines and the
    number of source rows the breaking message has and how the loader rejects them."""

    fmt: str
    symbol: str
    name: str
    lines: list[str]
    bad_rows: int
    bad_reason: RowReject


def _log(url: str, messages: list[Any]) -> list[str]:
    """A cryptofeed log: the URL line, then ``<recv s>: <json>`` 0.1 s apart."""
    out = [f"{url} <-> {T0}.000000"]
    for i, msg in enumerate(messages):
        out.append(f"{T0 + i // 10}.{(i % 10) * 100_000 + 100_000:06d}: {json.dumps(msg)}")
    return out


def _ms(i: int) -> int:
    return T0 * 1000 + 100 * i


def _bybit() -> Venue:
    ids = {(1, 100.0): 1, (1, 99.5): 2, (1, 99.0): 3, (-1, 100.5): 4, (-1, 101.0): 5}
    ids[(-1, 101.5)] = 6
    name = {1: "Buy", -1: "Sell"}

    def level(side: int, px: float, size: float, lid: int | None = None) -> dict[str, Any]:
        lid = ids[(side, px)] if lid is None else lid
        return {"price": f"{px:.2f}", "symbol": "BTCUSD", "id": lid, "side": name[side]} | {
            "size": int(size)
        }

    def snap(book: tuple[Book, Book], seq: int, i: int) -> dict[str, Any]:
        sides = ((1, book[0]), (-1, book[1]))
        data = [level(s, p, q) for s, side in sides for p, q in side.items()]
        return {
            "topic": "orderBookL2_25.BTCUSD",
            "type": "snapshot",
            "data": data,
            "cross_seq": seq,
            "timestamp_e6": _ms(i) * 1000,
        }

    def delta(update: dict[str, Any], seq: int, i: int) -> dict[str, Any]:
        data = {"delete": [], "update": [update], "insert": [], "transactTimeE6": 0}
        return {
            "topic": "orderBookL2_25.BTCUSD",
            "type": "delta",
            "data": data,
            "cross_seq": seq,
            "timestamp_e6": _ms(i) * 1000,
        }

    msgs = [
        snap(FIRST, 1000, 0),
        delta(level(*GOOD[0]), 1003, 1),
        delta(level(*GOOD[1]), 1007, 2),
        delta(level(1, 99.5, 8.0, lid=999), 1010, 3),  # an id the book never had
        delta(level(*REJECTED), 1012, 4),
        snap(SECOND, 1020, 5),
        delta(level(*AFTER), 1025, 6),
    ]
    lines = _log("wss://stream.bybit.com/realtime", msgs)
    return Venue("cryptofeed_bybit", "BTCUSD", "b.log.gz", lines, 1, RowReject.SEQUENCE_GAP)


def _bybit_archive() -> Venue:
    def msg(kind: str, u: int, b: list[list[str]], a: list[list[str]], i: int) -> str:
        data = {"s": "BTCUSDT", "b": b, "a": a, "u": u, "seq": 7 * u}
        line = {"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": _ms(i), "data": data}
        return json.dumps(line | {"cts": _ms(i) - 2})

    def side(book: Book) -> list[list[str]]:
        return [[f"{p:.1f}", f"{q:.1f}"] for p, q in book.items()]

    def one(lv: tuple[int, float, float]) -> tuple[list[list[str]], list[list[str]]]:
        pair = [[f"{lv[1]:.1f}", f"{lv[2]:.1f}"]]
        return (pair, []) if lv[0] == 1 else ([], pair)

    lines = [
        msg("snapshot", 100, side(FIRST[0]), side(FIRST[1]), 0),
        msg("delta", 101, *one(GOOD[0]), 1),
        msg("delta", 102, *one(GOOD[1]), 2),
        msg("delta", 103, [["99.5", "many"]], [], 3),  # a size that is no number: lost
        msg("delta", 104, *one(REJECTED), 4),
        msg("snapshot", 110, side(SECOND[0]), side(SECOND[1]), 5),
        msg("delta", 111, *one(AFTER), 6),
    ]
    return Venue(
        "bybit_orderbook", "BTCUSDT", "2021-07-22_BTCUSDT_ob50.data", lines, 1, RowReject.MALFORMED
    )


def _okx() -> Venue:
    def book(action: str, bids: Book, asks: Book, i: int, **extra: Any) -> dict[str, Any]:
        def levels(side: Book) -> list[list[str]]:
            return [[f"{p:.1f}", f"{q:.1f}", "0", "1"] for p, q in side.items()]

        data = {"asks": levels(asks), "bids": levels(bids), "ts": str(_ms(i))} | extra
        return {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": action, "data": [data]}

    def one(lv: tuple[int, float, float], i: int, **extra: Any) -> dict[str, Any]:
        level = {lv[1]: lv[2]}
        return book("update", level if lv[0] == 1 else {}, {} if lv[0] == 1 else level, i, **extra)

    msgs = [
        book("snapshot", *FIRST, 0),
        one(GOOD[0], 1),
        one(GOOD[1], 2),
        one((1, 99.5, 8.0), 3, checksum=12345),  # the rebuilt book does not match
        one(REJECTED, 4),
        book("snapshot", *SECOND, 5),
        one(AFTER, 6),
    ]
    lines = _log("wss://ws.okx.com:8443/ws/v5/public", msgs)
    return Venue("cryptofeed_okx", "BTC-USDT", "o.log.gz", lines, 1, RowReject.CHECKSUM_MISMATCH)


def _bitmex() -> Venue:
    ids = {(1, 100.0): 11, (1, 99.5): 12, (1, 99.0): 13, (-1, 100.5): 14, (-1, 101.0): 15}
    ids[(-1, 101.5)] = 16
    name = {1: "Buy", -1: "Sell"}

    def partial(book: tuple[Book, Book]) -> dict[str, Any]:
        data = [
            {"symbol": "XBTUSD", "id": ids[(s, p)], "side": name[s], "size": int(q), "price": p}
            for s, side in ((1, book[0]), (-1, book[1]))
            for p, q in side.items()
        ]
        return {"table": "orderBookL2", "action": "partial", "data": data} | {
            "filter": {"symbol": "XBTUSD"}
        }

    def update(side: int, px: float, size: float, lid: int | None = None) -> dict[str, Any]:
        lid = ids[(side, px)] if lid is None else lid
        row = {"symbol": "XBTUSD", "id": lid, "side": name[side], "size": int(size)}
        return {"table": "orderBookL2", "action": "update", "data": [row]}

    msgs = [
        partial(FIRST),
        update(*GOOD[0]),
        update(*GOOD[1]),
        update(1, 99.5, 8.0, lid=99),  # an update of a key the book does not hold
        update(*REJECTED),
        partial(SECOND),
        update(*AFTER),
    ]
    lines = _log("wss://www.bitmex.com/realtime", msgs)
    return Venue("cryptofeed_bitmex", "XBTUSD", "x.log.gz", lines, 1, RowReject.SEQUENCE_GAP)


def _coinbase() -> Venue:
    side_name = {1: "buy", -1: "sell"}

    def snap(book: tuple[Book, Book]) -> dict[str, Any]:
        def levels(side: Book) -> list[list[str]]:
            return [[f"{p:.2f}", f"{q:.1f}"] for p, q in side.items()]

        return {"type": "snapshot", "product_id": "BTC-USD"} | {
            "bids": levels(book[0]),
            "asks": levels(book[1]),
        }

    def update(side: str, px: float, size: float, i: int) -> dict[str, Any]:
        time = f"2021-07-22T23:02:{7 + i // 10:02d}.{(i % 10) * 100 + 100:03d}Z"
        changes = [[side, f"{px:.2f}", f"{size:.1f}"]]
        return {"type": "l2update", "product_id": "BTC-USD", "time": time, "changes": changes}

    def good(lv: tuple[int, float, float], i: int) -> dict[str, Any]:
        return update(side_name[lv[0]], lv[1], lv[2], i)

    msgs = [
        snap(FIRST),
        good(GOOD[0], 1),
        good(GOOD[1], 2),
        update("up", 99.5, 8.0, 3),  # no such side: the update is lost
        good(REJECTED, 4),
        snap(SECOND),
        good(AFTER, 6),
    ]
    lines = _log("wss://ws-feed.exchange.coinbase.com", msgs)
    return Venue("cryptofeed_coinbase", "BTC-USD", "c.log.gz", lines, 1, RowReject.MALFORMED)


def _deribit() -> Venue:
    def book(kind: str, change: int, bids: list[Any], asks: list[Any], i: int) -> dict[str, Any]:
        data: dict[str, Any] = {"type": kind, "timestamp": _ms(i)}
        data |= {"instrument_name": "BTC-PERPETUAL", "change_id": change}
        data |= {"bids": bids, "asks": asks}
        if kind == "change":
            data["prev_change_id"] = change - 1 if change != 104 else 90  # 104: the break
        params = {"channel": "book.BTC-PERPETUAL.raw", "data": data}
        return {"jsonrpc": "2.0", "method": "subscription", "params": params}

    def levels(side: Book) -> list[Any]:
        return [["new", p, q * 10] for p, q in side.items()]

    def one(lv: tuple[int, float, float], change: int, i: int) -> dict[str, Any]:
        level = [["change", lv[1], lv[2] * 10]]
        return book("change", change, level if lv[0] == 1 else [], [] if lv[0] == 1 else level, i)

    msgs = [
        book("snapshot", 100, levels(FIRST[0]), levels(FIRST[1]), 0),
        one(GOOD[0], 101, 1),
        one(GOOD[1], 102, 2),
        one((1, 99.5, 8.0), 104, 3),  # prev_change_id 90, not 102
        one(REJECTED, 105, 4),
        book("snapshot", 110, levels(SECOND[0]), levels(SECOND[1]), 5),
        one(AFTER, 111, 6),
    ]
    lines = _log("wss://www.deribit.com/ws/api/v2", msgs)
    gap = RowReject.SEQUENCE_GAP
    return Venue("cryptofeed_deribit", "BTC-PERPETUAL", "d.log.gz", lines, 1, gap)


def _kraken() -> Venue:
    def levels(side: Book, i: int) -> list[list[str]]:
        return [[f"{p:.5f}", f"{q:.8f}", f"{T0}.{i:06d}"] for p, q in side.items()]

    def snap(book: tuple[Book, Book], i: int) -> list[Any]:
        return [320, {"as": levels(book[1], i), "bs": levels(book[0], i)}, "book-10", "XBT/USD"]

    def one(lv: tuple[int, float, float], i: int, **extra: str) -> list[Any]:
        payload: dict[str, Any] = {"b" if lv[0] == 1 else "a": levels({lv[1]: lv[2]}, i)}
        return [320, payload | extra, "book-10", "XBT/USD"]

    msgs = [
        snap(FIRST, 0),
        one(GOOD[0], 1),
        one(GOOD[1], 2),
        one((1, 99.5, 8.0), 3, c="12345"),  # the rebuilt book does not match
        one(REJECTED, 4),
        snap(SECOND, 5),
        one(AFTER, 6),
    ]
    lines = _log("wss://ws.kraken.com", msgs)
    return Venue("cryptofeed_kraken", "XBT/USD", "k.log.gz", lines, 1, RowReject.CHECKSUM_MISMATCH)


def _kraken_futures() -> Venue:
    side_name = {1: "buy", -1: "sell"}

    def snap(book: tuple[Book, Book], seq: int, i: int) -> dict[str, Any]:
        def levels(side: Book) -> list[dict[str, float]]:
            return [{"price": p, "qty": q * 10} for p, q in side.items()]

        msg = {"feed": "book_snapshot", "product_id": "PI_XBTUSD", "timestamp": _ms(i)}
        return (
            msg
            | {"seq": seq, "tickSize": None, "bids": levels(book[0])}
            | {"asks": levels(book[1])}
        )

    def one(lv: tuple[int, float, float], seq: int, i: int) -> dict[str, Any]:
        msg = {"feed": "book", "product_id": "PI_XBTUSD", "side": side_name[lv[0]], "seq": seq}
        return msg | {"price": lv[1], "qty": lv[2] * 10, "timestamp": _ms(i)}

    msgs = [
        snap(FIRST, 500, 0),
        one(GOOD[0], 501, 1),
        one(GOOD[1], 502, 2),
        one((1, 99.5, 8.0), 505, 3),  # seq 503 and 504 are missing
        one(REJECTED, 506, 4),
        snap(SECOND, 520, 5),
        one(AFTER, 521, 6),
    ]
    lines = _log("wss://futures.kraken.com/ws/v1", msgs)
    return Venue(
        "cryptofeed_kraken_futures", "PI_XBTUSD", "kf.log.gz", lines, 1, RowReject.SEQUENCE_GAP
    )


VENUES: dict[str, Callable[[], Venue]] = {
    "bybit": _bybit,
    "bybit_archive": _bybit_archive,
    "okx": _okx,
    "bitmex": _bitmex,
    "coinbase": _coinbase,
    "deribit": _deribit,
    "kraken": _kraken,
    "kraken_futures": _kraken_futures,
}
# sizes in the venue's unit: contracts x 10 where the story's sizes are scaled
SCALE = {"deribit": 10.0, "kraken_futures": 10.0}


def _write(tmp: Path, venue: Venue) -> Path:
    if venue.name.endswith(".gz"):
        return vc.write_log(tmp, venue.name, venue.lines)
    path = tmp / venue.name
    path.write_text("\n".join(venue.lines) + "\n")
    return path


def _levels(book: L2Book, side: Side, tick: float, lot: float, scale: float) -> Book:
    return {round(p * tick, 8): round(q * lot / scale, 8) for p, q in book.levels(side)}


def _without_good(venue: Venue) -> Venue:
    """The story with the break right after the first snapshot (no good delta before it)."""
    start = 2 if venue.lines[0].startswith("wss://") else 1
    lines = [*venue.lines[:start], *venue.lines[start + len(GOOD) :]]
    return dataclasses.replace(venue, lines=lines)


@pytest.mark.parametrize("good", [True, False], ids=["deltas-before", "right-after-snapshot"])
@pytest.mark.parametrize("key", sorted(VENUES))
def test_venue_book_sees_the_break_and_resyncs(tmp_path: Path, key: str, good: bool) -> None:
    venue = VENUES[key]() if good else _without_good(VENUES[key]())
    path = _write(tmp_path, venue)
    assert detect(path).name == venue.fmt
    stream = stream_events(path)
    events = [e for e in stream if isinstance(e, (BookSnapshot, BookDelta))]
    stats = stream.stats
    # the source rows, each delivered or rejected once; the marker is in no row count
    levels = 2 * 6 + 2 + (len(GOOD) if good else 0) + venue.bad_rows
    assert stats.balanced() and stats.rows_in == levels and stats.breaks == 1
    counts = {RowReject.SEQUENCE_GAP: 1}  # the delta after the break
    counts[venue.bad_reason] = counts.get(venue.bad_reason, 0) + venue.bad_rows
    assert stats.counts == counts
    markers = [e for e in events if isinstance(e, BookDelta) and e.prev_final_update_id < 0]
    assert len(markers) == 1 and markers[0].prev_final_update_id == BREAK_PREV
    marker = markers[0]
    assert marker.qty_lots == 0 and marker.price_ticks > 0

    inst = stream.instrument[venue.symbol] if isinstance(stream.instrument, dict) else None
    assert inst is not None
    tick, lot, scale = inst.tick_float, inst.lot_float, SCALE.get(key, 1.0)

    def book_of(b: L2Book) -> tuple[Book, Book]:
        return (_levels(b, Side.BUY, tick, lot, scale), _levels(b, Side.SELL, tick, lot, scale))

    book = L2Book(venue.symbol)
    snapshots = 0
    for event in events:
        assert event.symbol == venue.symbol
        if isinstance(event, BookSnapshot):
            snapshots += 1
            book.apply_snapshot(event)
            if snapshots == 2:  # the marker held since the break is dropped here as stale
                assert book.is_synced and book.stale == 1 and book_of(book) == SECOND
            continue
        result = book.apply_delta(event)
        if event is marker:
            # out of sync right at the break, on the levels it had before it (no liquidity)
            assert result is DeltaResult.GAP
            assert not book.is_synced and book.gaps == 1
            assert book_of(book) == (STALE if good else FIRST)
        else:
            assert result is DeltaResult.APPLIED
    assert snapshots == 2 and book.is_synced and book.gaps == 1 and book.stale == 1
    # the new snapshot's levels plus the delta after it; the marker deleted a level of the
    # old book, which the new snapshot holds again: it was never applied
    assert book_of(book) == FINAL
    assert round(marker.price_ticks * tick, 8) in {**FINAL[0], **FINAL[1]}


@pytest.mark.parametrize("key", sorted(VENUES))
def test_columnar_plan_sees_the_break(tmp_path: Path, key: str) -> None:
    """The loader's depth frame through sync_plan: the same gap, the marker never planned."""
    venue = VENUES[key]()
    depth = load_frames(_write(tmp_path, venue))[FrameKind.DEPTH]
    assert depth["symbol"].unique().to_list() == [venue.symbol]
    is_marker = (depth["prev_final_update_id"] == BREAK_PREV).to_numpy()
    assert is_marker.sum() == 1
    plan = sync_plan(
        depth["is_snapshot"].to_numpy(),
        depth["first_update_id"].to_numpy(),
        depth["final_update_id"].to_numpy(),
        depth["prev_final_update_id"].to_numpy(),
    )
    assert plan.gaps == 1 and plan.stale == 1
    assert not is_marker[plan.order].any()
    rows = depth.select("side", "price", "qty").rows()
    bids: Book = {}
    asks: Book = {}
    for i, reset in zip(plan.order.tolist(), plan.reset.tolist(), strict=True):
        if reset:
            bids, asks = {}, {}
        side, price, qty = rows[i]
        held = bids if side == 1 else asks
        if qty:
            held[price] = qty / SCALE.get(key, 1.0)
        else:
            held.pop(price, None)
    assert (bids, asks) == FINAL


def test_chain_marks_once_per_chain_and_never_continues() -> None:
    chain = Chain()
    assert chain.broken("X") is None  # never chained: nothing to tell
    chain.start("X", 100)
    assert chain.broken("X") == (102, 101, BREAK_PREV)  # right after the snapshot
    assert chain.broken("X") is None  # marked already: one marker per break
    chain.start("X", 200)
    assert chain.ids("X", 205) == (0, 205, 0)
    assert chain.ids("X", 209) == (209, 209, 205)
    first, final, prev = chain.broken("X") or (0, 0, 0)
    assert (first, final, prev) == (211, 210, BREAK_PREV)
    # never a continuation, whatever the book's last id: not stale while the book holds at
    # most 209, and never the first-after-snapshot straddle (first > final)
    for last in (0, 200, 205, 209):
        assert final > last and not first <= last + 1 <= final and prev != last


def test_marker_time_is_kept_in_order(tmp_path: Path) -> None:
    """The stream hands the marker on even where the breaking message's time is behind the
    last row (a clock step back): its time is kept in order, and nothing is counted."""
    venue = _kraken_futures()
    lines = list(venue.lines)
    body = lines[4].partition(": ")[2]
    lines[4] = f"{T0 - 5}.000000: {body}"  # the breaking message, received 5 s "earlier"
    stream = stream_events(vc.write_log(tmp_path, "kf.log.gz", lines))
    events = list(stream)
    marker = next(e for e in events if isinstance(e, BookDelta) and e.prev_final_update_id < 0)
    before = [e.ts_recv_ns for e in events[: events.index(marker)]]
    assert marker.ts_recv_ns == max(before) and stream.stats.breaks == 1
    assert stream.stats.balanced()
    frame = load_frames(vc.write_log(tmp_path, "kf2.log.gz", lines))[FrameKind.DEPTH]
    assert frame.filter(pl.col("prev_final_update_id") == BREAK_PREV).height == 1


@pytest.mark.parametrize("last", [100, 105])
def test_marker_is_never_applied_whatever_the_next_snapshot(last: int) -> None:
    """Whatever the next snapshot's id, the held marker is never applied: stale where that id
    is above the last one chained (the usual case), else a gap again (out of sync, safe)."""

    def snapshot(bid_qty: int, update_id: int) -> BookSnapshot:
        bids, asks = ((10, bid_qty),), ((20, 1),)
        return BookSnapshot(ts_event_ns=1, symbol="X", bids=bids, asks=asks, update_id=update_id)

    for next_id in range(last - 2, last + 4):
        book, chain = L2Book("X"), Chain()
        book.apply_snapshot(snapshot(1, 100))
        chain.start("X", 100)
        if last > 100:
            first, final, prev = chain.ids("X", last)
            delta = BookDelta(ts_event_ns=2, symbol="X", side=Side.BUY, price_ticks=10, qty_lots=2)
            delta = msgspec.structs.replace(
                delta, first_update_id=first, final_update_id=final, prev_final_update_id=prev
            )
            assert book.apply_delta(delta) is DeltaResult.APPLIED
        first, final, prev = chain.broken("X") or (0, 0, 0)
        marker = BookDelta(
            ts_event_ns=3,
            symbol="X",
            side=Side.BUY,
            price_ticks=10,
            qty_lots=0,
            first_update_id=first,
            final_update_id=final,
            prev_final_update_id=prev,
        )
        assert book.apply_delta(marker) is DeltaResult.GAP and not book.is_synced
        book.apply_snapshot(snapshot(5, next_id))
        assert book.qty_at(Side.BUY, 10) == 5 and book.gaps == (1 if next_id > last else 2)
        assert book.is_synced == (next_id > last)


@pytest.mark.parametrize("key", ["bybit", "okx"])
def test_no_fill_against_the_levels_of_before_the_break(tmp_path: Path, key: str) -> None:
    """The defect itself, at the matching engine: a taker buying at the best ask filled
    against the book of before the break for as long as the gap lasted (here until the new
    snapshot; in a websocket log often the next reconnect)."""
    stream = stream_events(_write(tmp_path, VENUES[key]()))
    events = [e for e in stream if isinstance(e, (BookSnapshot, BookDelta))]
    fills: list[int] = []

    def sink(order: SimOrder, price: int, lots: int, maker: bool, ts: int) -> None:
        fills.append(lots)
        order.filled_lots += lots

    engine = MatchingEngine(events[0].symbol, L2Book(events[0].symbol), ConservativeQueue(), sink)
    taken = []
    for i, event in enumerate(events):
        if isinstance(event, BookSnapshot):
            engine.on_snapshot(event)
        else:
            engine.on_delta(event)
        best = engine.book.best_ask()
        assert best is not None
        order = SimOrder(
            client_order_id=f"t{i}",
            agent_id="t",
            symbol=event.symbol,
            side=Side.BUY,
            order_type=OrderType.LIMIT,
            tif=TimeInForce.IOC,
            limit_ticks=best[0],
            qty_lots=1,
            ts_ns=event.ts_event_ns,
        )
        taken.append(engine.take(order, 1, event.ts_event_ns))
    marker = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, BookDelta) and e.prev_final_update_id == BREAK_PREV
    )
    # it takes while synced, takes nothing from the break to the new snapshot, then again
    assert taken == [1] * marker + [0] + [1] * (len(events) - marker - 1)
    assert sum(fills) == len(events) - 1
