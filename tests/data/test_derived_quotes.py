"""A top of book derived from depth (``data.derived_quotes``): a quote right after each
complete depth message that moved a derived symbol's best bid or ask, read off the venue's
own book and sync rule, never while that book is out of sync; and which symbols of a run get
them (those no file quotes). On the real Bybit and Kraken recordings (depth, no book ticker)
the bundled agents never traded: they read quotes."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from sapphire.book.l2 import BookError, L2Book
from sapphire.cli.summary import print_summary
from sapphire.config.system import SystemConfig, parse_config
from sapphire.data.convert import Tagged
from sapphire.data.derived_quotes import DERIVED, DerivedQuotes, derived_counts
from sapphire.kernel import assembly
from sapphire.kernel.runner import InProcessKernel
from sapphire.model.events import (
    BREAK_PREV,
    AnyMarketEvent,
    BookDelta,
    BookDeltas,
    BookSnapshot,
    Quote,
    Side,
    Trade,
)
from tests.kernel.conftest import LATENCY

ROOT = Path(__file__).resolve().parents[2]
LINEAR = "shared:book/cryptofeed_bybit_linear_ws_2021-04-17.log.gz"
KRAKEN_BOOK = "shared:book/cryptofeed_kraken_spot_ws_book1000_2021-04-17.log.gz"
KRAKEN_TICKER = "shared:book/cryptofeed_kraken_spot_ws_ticker_2021-04-17.log.gz"
KRAKEN_TRADES = "shared:trades/cryptofeed_kraken_spot_ws_trade_2021-04-17.log.gz"
ETHUSDT = str(ROOT / "configs/instruments/bybit-linear-ETHUSDT.json")
LINKUSDT = {
    "symbol": "LINKUSDT",
    "venue": "BYBIT",
    "kind": "perpetual",
    "base": "LINK",
    "quote": "USDT",
    "tick_size": "0.001",
    "lot_size": "0.1",
    "min_qty": "0.1",
    "maker_fee_bps": "-2.5",
    "taker_fee_bps": "7.5",
    "settle": "USDT",
}
XMRUSD = {
    "symbol": "XMR/USD",
    "venue": "KRAKEN",
    "kind": "spot",
    "base": "XMR",
    "quote": "USD",
    "tick_size": "0.01",
    "lot_size": "0.00000001",
    "min_qty": "0.1",
    "maker_fee_bps": "16",
    "taker_fee_bps": "26",
}
AGENTS: list[dict[str, Any]] = [
    {
        "id": "g1",
        "kind": "grid_maker",
        "symbol": "ETHUSDT",
        "params": {"half_spread_ticks": 2, "order_lots": 1, "max_position_lots": 5},
    },
    {
        "id": "m1",
        "kind": "mean_reversion",
        "symbol": "LINKUSDT",
        "params": {"order_lots": 1, "allow_short": True, "window": 8, "entry_z": 1.0},
    },
]

T0 = 1_700_000_000_000_000_000


# -- the derivation, event by event ---------------------------------------------------------
def snap(ts: int, bids: Any, asks: Any, uid: int = 10, symbol: str = "X") -> BookSnapshot:
    return BookSnapshot(
        ts_event_ns=ts,
        ts_recv_ns=ts + 7,
        symbol=symbol,
        bids=tuple(bids),
        asks=tuple(asks),
        update_id=uid,
    )


def msg(ts: int, levels: Any, uid: int, *, complete: bool = True, symbol: str = "X") -> BookDeltas:
    """One futures-style message continuing ``uid - 1`` (``pu``), ids ``uid``."""
    return BookDeltas(
        ts_event_ns=ts,
        ts_recv_ns=ts + 7,
        symbol=symbol,
        levels=tuple(levels),
        first_update_id=uid,
        final_update_id=uid,
        prev_final_update_id=uid - 1,
        complete=complete,
    )


def level(ts: int, side: int, price: int, qty: int, uid: int, last: bool = True) -> BookDelta:
    return BookDelta(
        ts_event_ns=ts,
        ts_recv_ns=ts + 7,
        symbol="X",
        side=Side(side),
        price_ticks=price,
        qty_lots=qty,
        first_update_id=uid,
        final_update_id=uid,
        prev_final_update_id=uid - 1,
        last_in_batch=last,
    )


def derive(events: list[AnyMarketEvent], symbols: tuple[str, ...] = ("X",)) -> list[Any]:
    return [e for _, e in DerivedQuotes(symbols).tagged(("s", e) for e in events)]


def tops(out: list[Any]) -> list[tuple[int, int, int, int]]:
    return [(q.bid_ticks, q.bid_lots, q.ask_ticks, q.ask_lots) for q in out if type(q) is Quote]


def test_a_quote_follows_each_complete_message_that_moves_the_top_at_its_times() -> None:
    s = snap(T0, [(100, 5), (99, 3)], [(101, 4)], uid=10)
    m1 = msg(T0 + 1, [(1, 100, 6), (-1, 102, 9)], 11)  # size at the best bid, a deeper ask
    m2 = msg(T0 + 2, [(-1, 102, 1), (1, 98, 2)], 12)  # deeper levels only: no quote
    m3 = msg(T0 + 3, [(-1, 101, 0)], 13)  # the best ask goes: the next one is the touch
    out = derive([s, m1, m2, m3])
    assert [type(e).__name__ for e in out] == [
        "BookSnapshot",
        "Quote",
        "BookDeltas",
        "Quote",
        "BookDeltas",
        "BookDeltas",
        "Quote",
    ]
    assert tops(out) == [(100, 5, 101, 4), (100, 6, 101, 4), (100, 6, 102, 1)]
    # each at its depth event's times, with the message's update id (as bookTicker's u)
    for depth, quote in ((out[0], out[1]), (out[2], out[3]), (out[5], out[6])):
        assert (quote.ts_event_ns, quote.ts_recv_ns) == (depth.ts_event_ns, depth.ts_recv_ns)
        assert quote.symbol == "X"
    assert [q.update_id for q in out if type(q) is Quote] == [10, 11, 13]
    # the recorded events pass unchanged and in order
    assert [e for e in out if type(e) is not Quote] == [s, m1, m2, m3]


def test_never_mid_message() -> None:
    s = snap(T0, [(100, 5)], [(101, 4)], uid=10)
    # a message whose last level never came (a recorder cut): its levels are in the book,
    # but the book is read only once a message ends, here with the next one
    head = msg(T0 + 1, [(1, 100, 1)], 11, complete=False)
    nxt = msg(T0 + 2, [(-1, 101, 2)], 12)
    assert tops(derive([s, head])) == [(100, 5, 101, 4)]
    out = derive([s, head, nxt])
    assert tops(out) == [(100, 5, 101, 4), (100, 1, 101, 2)]
    assert type(out[-1]) is Quote and out[-2] is nxt
    # levels given one by one (``BookDelta``): the quote waits for ``last_in_batch``
    a, b = level(T0 + 3, 1, 100, 7, 11, last=False), level(T0 + 3, -1, 101, 8, 11, last=True)
    out = derive([s, a, b])
    assert [type(e).__name__ for e in out] == [
        "BookSnapshot",
        "Quote",
        "BookDelta",
        "BookDelta",
        "Quote",
    ]
    assert tops(out)[-1] == (100, 7, 101, 8)


def test_a_size_change_at_the_same_price_is_a_new_quote() -> None:
    s = snap(T0, [(100, 5)], [(101, 4)], uid=10)
    out = derive(
        [
            s,
            msg(T0 + 1, [(-1, 101, 3)], 11),  # the best ask's size
            msg(T0 + 2, [(1, 100, 5)], 12),  # the same size again: nothing moved
            msg(T0 + 3, [(1, 100, 9)], 13),  # the best bid's size
        ]
    )
    assert tops(out) == [(100, 5, 101, 4), (100, 5, 101, 3), (100, 9, 101, 3)]


def test_books_out_of_sync_or_never_synced_are_silent() -> None:
    # diffs and no snapshot yet: the book is unknown, whatever its levels say
    assert tops(derive([msg(T0, [(1, 100, 1), (-1, 101, 1)], 11)])) == []
    s = snap(T0, [(100, 5)], [(101, 4)], uid=10)
    gap = msg(T0 + 2, [(1, 100, 1)], 15)  # 11..14 were lost: out of sync
    after = msg(T0 + 3, [(1, 100, 2)], 16)
    resync = snap(T0 + 4, [(100, 8)], [(101, 4)], uid=20)
    out = derive([s, gap, after, resync])
    assert tops(out) == [(100, 5, 101, 4), (100, 8, 101, 4)]
    assert out[-1].ts_event_ns == resync.ts_event_ns
    # a loader's break marker puts the book out of sync until the next snapshot
    marker = BookDelta(
        ts_event_ns=T0 + 1,
        symbol="X",
        side=Side.BUY,
        price_ticks=100,
        qty_lots=0,
        first_update_id=12,
        final_update_id=11,
        prev_final_update_id=BREAK_PREV,
    )
    assert tops(derive([s, marker, msg(T0 + 2, [(1, 100, 3)], 12)])) == [(100, 5, 101, 4)]
    # a resync to the top last quoted says nothing new
    same = snap(T0 + 4, [(100, 5)], [(101, 4)], uid=20)
    assert tops(derive([s, gap, same])) == [(100, 5, 101, 4)]


def test_a_one_sided_or_crossed_input_gives_no_quote() -> None:
    one_sided = snap(T0, [(100, 5)], [], uid=10)
    assert tops(derive([one_sided])) == []
    crossed = snap(T0, [(101, 5)], [(100, 4)], uid=10)  # refused by the book, as the venue's
    assert tops(derive([crossed])) == []
    ok = snap(T0, [(100, 5)], [(101, 4)], uid=10)
    assert tops(derive([ok, crossed])) == [(100, 5, 101, 4)]


def test_feeds_without_update_ids_are_applied_as_they_come() -> None:
    # Tardis incremental_book_L2: no ids, every level absolute (the book counts as synced)
    plain = BookDeltas(
        ts_event_ns=T0, symbol="X", levels=((1, 100, 5), (-1, 101, 4)), complete=True
    )
    assert tops(derive([plain])) == [(100, 5, 101, 4)]


def test_only_the_derived_symbols_and_a_recorded_quote_ends_the_derivation() -> None:
    x = snap(T0, [(100, 5)], [(101, 4)], uid=10)
    y = snap(T0, [(200, 5)], [(201, 4)], uid=10, symbol="Y")
    trade = Trade(ts_event_ns=T0, symbol="X", price_ticks=100, qty_lots=1, taker_side=Side.BUY)
    assert [e.symbol for e in derive([trade, x, y]) if type(e) is Quote] == ["X"]
    # a ticker channel that starts late: from there the recorded quotes are the top
    recorded = Quote(
        ts_event_ns=T0 + 1, symbol="X", bid_ticks=100, bid_lots=1, ask_ticks=101, ask_lots=1
    )
    out = derive([x, recorded, msg(T0 + 2, [(1, 100, 9)], 11)])
    assert [type(e).__name__ for e in out] == ["BookSnapshot", "Quote", "Quote", "BookDeltas"]
    assert out[2] is recorded


def test_counts_are_those_of_the_pairs_taken() -> None:
    quotes = DerivedQuotes(("X", "Y"))
    events: list[AnyMarketEvent] = [
        snap(T0, [(100, 5)], [(101, 4)], uid=10),  # 0, its quote 1
        msg(T0 + 1, [(1, 100, 6)], 11),  # 2, quote 3
        snap(T0 + 2, [(100, 5)], [], uid=10, symbol="Y"),  # 4: Y listed, no quote
        msg(T0 + 3, [(1, 99, 6)], 12),  # 5: deeper, no quote
        msg(T0 + 4, [(1, 100, 1)], 13),  # 6, quote 7
    ]
    out = list(quotes.tagged(("s", e) for e in events))
    assert [type(e).__name__ for _, e in out].count("Quote") == 3
    x, y = f"{DERIVED}X", f"{DERIVED}Y"
    assert quotes.counts(0) == {}
    assert quotes.counts(1) == {x: 0}
    assert quotes.counts(2) == {x: 1}
    assert quotes.counts(5) == {x: 2, y: 0}
    assert quotes.counts(None) == quotes.counts(8) == {x: 3, y: 0}
    quotes.forget_before(4)
    assert quotes.counts(5) == {x: 2, y: 0} and quotes.counts(None) == {x: 3, y: 0}
    with pytest.raises(LookupError):
        quotes.counts(3)
    assert derived_counts({x: 3, y: 0, "malformed": 2}) == {"X": 3, "Y": 0}


@st.composite
def depth_streams(draw: st.DrawFn) -> list[AnyMarketEvent]:
    """Snapshots and messages of one symbol, some lost (gaps), some cut short."""
    out: list[AnyMarketEvent] = []
    uid = 10
    for k in range(draw(st.integers(1, 30))):
        ts = T0 + k
        if draw(st.integers(0, 5)) == 0:
            uid += 10
            bids = draw(st.lists(st.tuples(st.integers(90, 99), st.integers(1, 9)), max_size=4))
            asks = draw(st.lists(st.tuples(st.integers(101, 110), st.integers(1, 9)), max_size=4))
            out.append(
                snap(
                    ts,
                    sorted(set(dict(bids).items()), reverse=True),
                    sorted(set(dict(asks).items())),
                    uid,
                )
            )
            continue
        uid += draw(st.sampled_from([1, 1, 1, 2]))  # 2: a message was lost
        levels = draw(
            st.lists(
                st.tuples(st.sampled_from([1, -1]), st.integers(95, 106), st.integers(0, 9)),
                min_size=1,
                max_size=4,
            )
        )
        out.append(msg(ts, levels, uid, complete=draw(st.integers(0, 7)) > 0))
    return out


@settings(max_examples=100, deadline=None)
@given(depth_streams())
def test_every_quote_is_the_synced_books_new_top_after_its_message(
    events: list[AnyMarketEvent],
) -> None:
    quotes = DerivedQuotes(("X",))
    out = list(quotes.tagged(("s", e) for e in events))
    assert [e for _, e in out if type(e) is not Quote] == events
    book = L2Book("X")  # the venue's book, fed the recording alone
    last = None
    for i, (_, e) in enumerate(out):
        if type(e) is BookSnapshot:
            with contextlib.suppress(BookError):  # refused whole, as the derivation's
                book.apply_snapshot(e)
        elif type(e) is BookDeltas:
            book.apply_deltas(e)
        if type(e) is not Quote:
            continue
        depth = out[i - 1][1]
        assert type(depth) is not Quote  # right after its depth event, at its times
        assert (e.ts_event_ns, e.ts_recv_ns) == (depth.ts_event_ns, depth.ts_recv_ns)
        assert not (type(depth) is BookDeltas and not depth.complete)  # never mid-message
        assert book.is_synced
        top = (*book.best_bid(), *book.best_ask())  # type: ignore[misc]
        assert (e.bid_ticks, e.bid_lots, e.ask_ticks, e.ask_lots) == top
        assert top != last  # a quote says something moved
        last = top
        assert quotes.counts(i + 1)[f"{DERIVED}X"] == sum(type(q) is Quote for _, q in out[: i + 1])


# -- which symbols, and a run ---------------------------------------------------------------
def instrument_file(tmp_path: Path, spec: dict[str, Any]) -> str:
    path = tmp_path / f"{spec['symbol'].replace('/', '-')}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def linear_config(tmp_path: Path, **data: Any) -> SystemConfig:
    """The tester's depth-only Bybit linear run (/tmp/qa/bybitlin.yaml), under ``tmp_path``."""
    raw: dict[str, Any] = {
        "data": {
            "source": "files",
            "files": [LINEAR],
            "instrument_files": [ETHUSDT, instrument_file(tmp_path, LINKUSDT)],
            **data,
        },
        "agents": AGENTS,
        "exchange": {
            "kind": "paper",
            "params": {"balances": {"USDT": "100000"}, "latency": LATENCY},
        },
        "storage": {"backend": "parquet", "root": str(tmp_path / "runs")},
    }
    return parse_config(raw)


def venues_config(tmp_path: Path, kraken: list[str], **extra: Any) -> SystemConfig:
    """Bybit linear and Kraken spot books, each a venue (/tmp/qa/venues.yaml)."""
    raw: dict[str, Any] = {
        "data": {
            "source": "venues",
            "venues": [
                {"venue": "BYBIT", "files": [LINEAR], "instrument_files": [ETHUSDT]},
                {
                    "venue": "KRAKEN",
                    "files": kraken,
                    "instrument_files": [instrument_file(tmp_path, XMRUSD)],
                },
            ],
        },
        "agents": [
            {**AGENTS[0], "symbol": "BYBIT:ETHUSDT"},
            {
                "id": "g2",
                "kind": "grid_maker",
                "symbol": "KRAKEN:XMR/USD",
                # XMR/USD's lot is 1e-8 XMR and its minimum 0.1: orders of 0.1
                "params": {
                    "half_spread_ticks": 2,
                    "order_lots": 10_000_000,
                    "max_position_lots": 50_000_000,
                },
            },
        ],
        "exchange": {
            "kind": "paper",
            "params": {
                "balances": {"USDT": "100000", "USD": "100000", "XMR": "10"},
                "latency": LATENCY,
            },
        },
        "risk": {"agents": {"g2": {"max_order_lots": 10**8, "max_position_lots": 10**8}}},
        "storage": {"backend": "parquet", "root": str(tmp_path / "runs")},
        **extra,
    }
    return parse_config(raw)


def derived_of(config: SystemConfig) -> frozenset[str]:
    return assembly.derived_symbols(config.data, assembly.load_instruments(config.data))


def test_the_symbols_no_file_quotes_are_derived(tmp_path: Path, shared_data: Path) -> None:
    assert derived_of(linear_config(tmp_path)) == {"ETHUSDT", "LINKUSDT"}
    assert derived_of(linear_config(tmp_path, derived_quotes="off")) == frozenset()
    book_only = venues_config(tmp_path, [KRAKEN_BOOK, KRAKEN_TRADES])
    assert derived_of(book_only) == {"BYBIT:ETHUSDT", "KRAKEN:XMR/USD"}
    # Kraken's ticker channel recorded beside its book: that venue's XMR/USD is quoted
    with_ticker = venues_config(tmp_path, [KRAKEN_BOOK, KRAKEN_TICKER])
    assert derived_of(with_ticker) == {"BYBIT:ETHUSDT"}
    # the bundled sample carries Binance's bookTicker: nothing derived, nothing changed
    assert derived_of(parse_config({"data": {"source": "sample"}})) == frozenset()


def first(feed: Any, n: int) -> list[AnyMarketEvent]:
    return list(itertools.islice(feed, n))


def test_a_replay_reports_the_derived_quotes_of_what_was_consumed(
    tmp_path: Path, shared_data: Path
) -> None:
    config = venues_config(tmp_path, [KRAKEN_BOOK, KRAKEN_TRADES])
    instruments = assembly.load_instruments(config.data)
    opener = assembly.replay_opener(config.data, instruments)
    events = list(opener())
    quotes = [e for e in events if type(e) is Quote]
    assert {q.symbol for q in quotes} == {"BYBIT:ETHUSDT", "KRAKEN:XMR/USD"}
    for consumed in (0, 1, len(events) // 3, 2 * len(events) // 3, len(events)):
        feed = opener()
        assert first(feed, consumed) == events[:consumed]
        counts = derived_counts(feed.report(consumed)[0])
        want: dict[str, int] = {}
        for e in events[:consumed]:
            if type(e) is Quote:
                want[e.symbol] = want.get(e.symbol, 0) + 1
        assert {s: n for s, n in counts.items() if n} == want
    # a report from further back than the merge log keeps: merged again, the same counts
    kept = assembly.ReplayFeed(
        [],
        instruments,
        config.data.clock,
        venues=tuple(assembly.venue_feeds(config.data)),
        merge_log_keep=100,
        derive=assembly.derived_symbols(config.data, instruments),
    )
    assert first(kept, len(events)) == events
    half = len(events) // 2
    assert kept.log.floor > half
    assert kept.report(half) == opener().report(half)


def test_a_depth_only_run_trades_and_says_how_many_quotes_it_derived(
    tmp_path: Path, shared_data: Path
) -> None:
    kernel = InProcessKernel(linear_config(tmp_path), "derived")
    kernel.run()
    summary = kernel.summary()
    assert summary["counters"]["orders"] > 0 and summary["fills"] > 0
    derived = derived_counts(summary["input_rejected"])
    assert set(derived) == {"ETHUSDT", "LINKUSDT"} and min(derived.values()) > 0
    console = Console(record=True, width=200)
    print_summary("derived", summary, 1, 1.0, "store", console)
    screen = console.export_text()
    row = next(line for line in screen.splitlines() if "quotes derived from depth" in line)
    assert f"ETHUSDT {derived['ETHUSDT']:,}" in row and f"LINKUSDT {derived['LINKUSDT']:,}" in row
    assert "input rejected: quotes" not in screen
    # off: the recorded events only, and nothing to trade on (as before)
    off = InProcessKernel(linear_config(tmp_path, derived_quotes="off"), "recorded")
    off.run()
    assert off.summary()["counters"]["orders"] == 0
    assert not derived_counts(off.summary()["input_rejected"])
    assert off.summary()["counters"]["events"] == summary["counters"]["events"] - sum(
        derived.values()
    )


def recorded_only(events: Iterator[Tagged]) -> list[Tagged]:
    return [p for p in events if type(p[1]) is not Quote]


def test_the_cache_keeps_the_files_own_events(tmp_path: Path, shared_data: Path) -> None:
    """A converted file (``data.cache``) holds the recording, not the quotes of one run's
    choice: a run with ``off`` reads the entry a derived run wrote, and each gets its own."""
    cache = str(tmp_path / "cache")
    derived = linear_config(tmp_path, cache_dir=cache)
    off = msgspec.structs.replace(
        derived, data=msgspec.structs.replace(derived.data, derived_quotes="off")
    )
    instruments = assembly.load_instruments(derived.data)
    first_run = list(assembly.replay_opener(derived.data, instruments)())
    cached_off = assembly.replay_opener(off.data, instruments)()
    assert list(cached_off) == [e for e in first_run if type(e) is not Quote]
    assert cached_off.cache_stats()["hits"] == 1
    again = assembly.replay_opener(derived.data, instruments)()
    assert list(again) == first_run
