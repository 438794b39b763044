"""Cross-venue replay (issue 16, item 5): several venues' recordings merged on one explicit
clock, streamed, with venue-qualified symbols and deterministic ties.

The real Bybit inverse and linear logs of the same 30 s are the sources; the inverse log is
also replayed as two "venues" at once, which makes every event a tie (same clock, same
symbol) and shows that venue qualification keeps the two BTCUSD books apart.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.config.system import ConfigError, DataConfig, parse_config
from sapphire.data import replay
from sapphire.data.instruments import load_instrument_file
from sapphire.data.registry import stream_events
from sapphire.kernel import assembly, builders
from sapphire.model.events import AnyMarketEvent, Trade, as_levels

ROOT = Path(__file__).resolve().parents[2]
INVERSE = "shared:book/cryptofeed_bybit_inverse_ws_2021-04-17.log.gz"
LINEAR = "shared:book/cryptofeed_bybit_linear_ws_2021-04-17.log.gz"
BTCUSD = str(ROOT / "configs/instruments/bybit-inverse-BTCUSD.json")
ETHUSDT = str(ROOT / "configs/instruments/bybit-linear-ETHUSDT.json")

pytestmark = pytest.mark.skipif(
    not assembly.data_path(INVERSE).exists(), reason="shared recorded data not present"
)


def venues(*sources: tuple[str, str, str], clock: str = "exchange") -> DataConfig:
    raw: dict[str, Any] = {
        "data": {
            "source": "venues",
            "clock": clock,
            # the recorded events themselves are the subject (no quotes derived from depth)
            "derived_quotes": "off",
            "venues": [
                {"venue": v, "files": [f], "instrument_files": [i], "format": "cryptofeed_bybit"}
                for v, f, i in sources
            ],
        }
    }
    return parse_config(raw).data


def replayed(data: DataConfig) -> tuple[list[AnyMarketEvent], assembly.ReplayFeed]:
    instruments = assembly.load_instruments(data)
    feed = assembly.replay_opener(data, instruments)()
    # a replay gives each depth message as one event: compared here level by level
    return list(as_levels(list(feed))), feed


def own_counts(path: str, instrument_file: str) -> Counter[str]:
    """One file read alone, on its venue's own symbols: what the merge must deliver."""
    inst = load_instrument_file(assembly.data_path(instrument_file))
    return Counter(
        type(e).__name__ for e in stream_events(assembly.data_path(path), {inst.symbol: inst})
    )


@pytest.fixture(scope="module")
def sources() -> dict[str, Counter[str]]:
    return {"inv": own_counts(INVERSE, BTCUSD), "lin": own_counts(LINEAR, ETHUSDT)}


@pytest.fixture(scope="module")
def merged() -> dict[str, tuple[list[AnyMarketEvent], dict[str, int]]]:
    """The two venues replayed on each clock (read once for the module's tests)."""
    out = {}
    for clock in ("exchange", "receive"):
        data = venues(("BYBIT-INV", INVERSE, BTCUSD), ("BYBIT-USDT", LINEAR, ETHUSDT), clock=clock)
        events, feed = replayed(data)
        out[clock] = (events, feed.report(None)[0])  # all of it was consumed
    return out


@pytest.mark.parametrize("clock", ["exchange", "receive"])
def test_two_venues_merge_with_every_event_of_each(
    clock: str,
    merged: dict[str, tuple[list[AnyMarketEvent], dict[str, int]]],
    sources: dict[str, Counter[str]],
) -> None:
    events, rejected = merged[clock]
    # both venues interleave (not one file after the other) and the symbols are qualified
    symbols = [e.symbol for e in events]
    assert set(symbols) == {"BYBIT-INV:BTCUSD", "BYBIT-USDT:ETHUSDT"}
    first_linear = symbols.index("BYBIT-USDT:ETHUSDT")
    assert "BYBIT-INV:BTCUSD" in symbols[first_linear:]
    assert "BYBIT-USDT:ETHUSDT" in symbols[symbols.index("BYBIT-INV:BTCUSD") :]
    # counts: the sum of the sources, kind by kind
    inv, lin = sources["inv"], sources["lin"]
    assert Counter(type(e).__name__ for e in events) == inv + lin
    assert Counter(symbols) == {
        "BYBIT-INV:BTCUSD": sum(inv.values()),
        "BYBIT-USDT:ETHUSDT": sum(lin.values()),
    }
    # rejections of both files are reported (EOSUSD and the other USDT perps: no instrument)
    assert rejected["unknown_symbol"] > 0


@pytest.mark.parametrize("clock", ["exchange", "receive"])
def test_merged_clock_is_monotone(
    clock: str, merged: dict[str, tuple[list[AnyMarketEvent], dict[str, int]]]
) -> None:
    events = merged[clock][0]
    key = "ts_event_ns" if clock == "exchange" else "ts_recv_ns"
    # the key is each stream's running max of the clock (a late REST snapshot replays where
    # it was received): merged, it never goes back
    running: dict[str, int] = {}
    keys = []
    for e in events:
        running[e.symbol] = max(running.get(e.symbol, 0), getattr(e, key))
        keys.append(running[e.symbol])
    assert len(keys) > 2000
    assert all(a <= b for a, b in itertools.pairwise(keys))
    # the two clocks order the venues differently: the choice is real
    other = merged["receive" if clock == "exchange" else "exchange"][0]
    assert [e.symbol for e in other] != [e.symbol for e in events]


def test_same_symbol_on_two_venues_never_collides_and_ties_go_by_receipt_then_source() -> None:
    data = venues(("A", INVERSE, BTCUSD), ("B", INVERSE, BTCUSD))
    instruments = assembly.load_instruments(data)
    assert sorted(instruments) == ["A:BTCUSD", "B:BTCUSD"]
    assert instruments["A:BTCUSD"].settle_asset == "BTC"
    events, _ = replayed(data)
    n = sum(own_counts(INVERSE, BTCUSD).values())
    assert len(events) == 2 * n
    # every event is tied with its copy: received at the same time, source order (A, then
    # B) decides, and within a source its own order is kept; A's and B's streams are the
    # same events
    a = [e for e in events if e.symbol == "A:BTCUSD"]
    b = [e for e in events if e.symbol == "B:BTCUSD"]
    assert [(e.ts_event_ns, type(e)) for e in a] == [(e.ts_event_ns, type(e)) for e in b]
    at = {id(e): i for i, e in enumerate(events)}
    assert all(at[id(x)] < at[id(y)] for x, y in zip(a, b, strict=True))
    # where the replay passes from one venue to the other at equal clock, the event received
    # first comes first, then venue A's (never the order of the config's entries alone)
    running: dict[str, int] = {}
    order = []
    for e in events:
        running[e.symbol] = max(running.get(e.symbol, 0), e.ts_event_ns)
        order.append((running[e.symbol], e.ts_recv_ns, e.symbol))
    switches = [(x, y) for x, y in itertools.pairwise(order) if x[2] != y[2]]
    assert all(x <= y for x, y in switches)
    ties = sum(1 for x, y in switches if x[0] == y[0])
    assert ties > 100
    trades_a = [e.trade_id for e in a if isinstance(e, Trade)]
    assert trades_a == [e.trade_id for e in b if isinstance(e, Trade)] and trades_a
    # and the whole replay is the same twice (no dict or set order leaks into it)
    again, _ = replayed(data)
    assert again == events


def test_hand_built_ties_order_by_clock_then_source_then_sequence() -> None:
    def t(ts: int, tid: int, sym: str = "X") -> tuple[str, Trade]:
        return "s", Trade(
            ts_event_ns=ts, symbol=sym, price_ticks=1, qty_lots=1, taker_side=1, trade_id=tid
        )  # type: ignore[arg-type]

    first = [t(10, 1), t(20, 2), t(20, 3), t(30, 4)]
    second = [t(5, 11), t(20, 12), t(20, 13), t(25, 14)]
    merged = replay.merge(
        [
            replay.qualified(iter(first), {"X": "V1:X"}),
            replay.qualified(iter(second), {"X": "V2:X"}),
        ]
    )
    got = [(i.key_ns, i.source, i.event.symbol, getattr(i.event, "trade_id", 0)) for i in merged]
    assert got == [
        (5, 1, "V2:X", 11),
        (10, 0, "V1:X", 1),
        (20, 0, "V1:X", 2),
        (20, 0, "V1:X", 3),
        (20, 1, "V2:X", 12),
        (20, 1, "V2:X", 13),
        (25, 1, "V2:X", 14),
        (30, 0, "V1:X", 4),
    ]


def test_venues_interleave_on_the_clock_whatever_their_session_labels() -> None:
    """A venue's session labels (days, from its file names) order that venue's files; two
    venues recorded at the same moment under different labels (one file named by the day it
    started, 23:58, the other by the next) still interleave on the clock. Within one venue
    sessions stay one after another: a day's tail never mixes with the next day's book."""

    def t(ts: int, tid: int, session: str) -> tuple[str, Trade]:
        return session, Trade(
            ts_event_ns=ts, symbol="X", price_ticks=1, qty_lots=1, taker_side=1, trade_id=tid
        )  # type: ignore[arg-type]

    usdm = [t(10, 1, "04-04"), t(30, 2, "04-04"), t(50, 3, "04-04")]
    spot = [t(20, 11, "04-05"), t(40, 12, "04-05")]
    next_day = [t(45, 21, "04-05"), t(60, 22, "04-05")]  # usdm's next file: starts before 50

    def merged(groups: list[int] | None) -> list[int]:
        streams = [
            replay.qualified(iter(usdm), {"X": "A:X"}),
            replay.qualified(iter(spot), {"X": "B:X"}),
            replay.qualified(iter(next_day), {"X": "A:X"}),
        ]
        return [i.event.trade_id for i in replay.merge(streams, groups=groups)]  # type: ignore[union-attr]

    assert merged([1, 2, 1]) == [1, 11, 2, 12, 3, 21, 22]
    # one group (data.files): sessions one after another, as before
    assert merged(None) == [1, 2, 3, 11, 12, 21, 22]
    with pytest.raises(ValueError, match="group ids"):
        merged([1, 2])


def test_sessions_further_apart_than_allowed_are_refused_where_the_run_trades_both() -> None:
    """A day of 2023 and one of 2024 back to back: a run over both carried its positions,
    marks and agents' state across 15 months (the hftbacktest maker's +1,413 USDT of gap
    as PnL). Consecutive days (a file running past midnight into the next) are fine; so is
    a gap before the run's start (those sessions only build the venue's book), and one
    allowed by ``data.max_session_gap_s: 0``."""
    hour = 3_600 * 10**9

    def t(ts: int, session: str) -> tuple[str, Trade]:
        return session, Trade(
            ts_event_ns=ts, symbol="X", price_ticks=1, qty_lots=1, taker_side=1, trade_id=ts
        )  # type: ignore[arg-type]

    day1 = [t(0, "d1"), t(10 * hour, "d1")]
    day2 = [t(10 * hour + 5, "d2"), t(20 * hour, "d2")]  # a recorder's next file
    later = [t(500 * hour, "d3"), t(501 * hour, "d3")]

    def run(gaps: replay.SessionGaps) -> list[int]:
        streams = [iter(day1), iter(day2), iter(later)]
        return [i.key_ns for i in replay.merge(streams, gaps=gaps)]

    with pytest.raises(replay.SessionGapError) as gap:
        run(replay.SessionGaps(hour))
    assert (gap.value.before, gap.value.after, gap.value.gap_ns) == ("d2", "d3", 480 * hour)
    assert str(gap.value).startswith("data: session 'd3' starts 20.0 days after session 'd2'")
    assert len(str(gap.value).splitlines()) == 1
    everything = sorted(ts for _, e in (*day1, *day2, *later) for ts in [e.ts_event_ns])
    assert run(replay.SessionGaps(0)) == everything  # allowed
    assert run(replay.SessionGaps(hour, start_ns=499 * hour)) == everything  # warm-up only
    assert run(replay.SessionGaps(hour, end_ns=400 * hour)) == everything  # never traded
    assert run(replay.SessionGaps(480 * hour)) == everything  # within the limit


def test_a_file_listing_an_earlier_session_after_a_later_one_is_refused() -> None:
    """One file: day 2 then day 1 (its rows after day 2's). The merge replays a stream in
    its order, so day 1 would come after day 2, every event clamped to day 2's last time and
    day 1's book laid over day 2's: refused, as a gap of the same size forward is. A few
    minutes of overlap (a day's file running past midnight into the next) stay allowed."""
    hour = 3_600 * 10**9

    def t(ts: int, session: str) -> tuple[str, Trade]:
        return session, Trade(
            ts_event_ns=ts, symbol="X", price_ticks=1, qty_lots=1, taker_side=1, trade_id=ts
        )  # type: ignore[arg-type]

    one_file = [t(24 * hour, "d2"), t(30 * hour, "d2"), t(0, "d1"), t(6 * hour, "d1")]
    with pytest.raises(replay.SessionGapError) as gap:
        list(replay.merge([iter(one_file)], gaps=replay.SessionGaps(hour)))
    assert (gap.value.before, gap.value.after, gap.value.gap_ns) == ("d2", "d1", -30 * hour)
    assert str(gap.value).startswith("data: session 'd1' starts 1.2 days before session 'd2'")
    assert len(str(gap.value).splitlines()) == 1
    overlap = [t(0, "d1"), t(24 * hour + 300 * 10**9, "d1"), t(24 * hour, "d2")]
    keys = [i.key_ns for i in replay.merge([iter(overlap)], gaps=replay.SessionGaps(hour))]
    assert len(keys) == 3


def test_two_venues_recorded_months_apart_are_refused_at_the_gap() -> None:
    """Each venue's files are checked among themselves; venue A's 2023 day and venue B's
    2024 one merged back to back passed unchecked."""
    hour = 3_600 * 10**9

    def t(ts: int, session: str) -> tuple[str, Trade]:
        return session, Trade(
            ts_event_ns=ts, symbol="X", price_ticks=1, qty_lots=1, taker_side=1, trade_id=ts
        )  # type: ignore[arg-type]

    a = [t(0, "2023-04-05"), t(hour, "2023-04-05")]
    b = [t(471 * 24 * hour, "2024-07-18"), t(471 * 24 * hour + 5, "2024-07-18")]
    streams = [replay.qualified(iter(a), {"X": "A:X"}), replay.qualified(iter(b), {"X": "B:X"})]
    with pytest.raises(replay.SessionGapError, match=r"'2024-07-18' starts 471\.0 days after"):
        list(replay.merge(streams, groups=[1, 2], gaps=replay.SessionGaps(hour)))
    # side by side in time, two venues' own labels interleave as before
    c = [t(hour // 2, "2023-04-06")]
    streams = [replay.qualified(iter(a), {"X": "A:X"}), replay.qualified(iter(c), {"X": "C:X"})]
    merged = replay.merge(streams, groups=[1, 2], gaps=replay.SessionGaps(hour))
    assert [i.key_ns for i in merged] == [0, hour // 2, hour]


def test_the_run_config_sets_the_gap_over_its_trading_window() -> None:
    data = parse_config(
        {"data": {"source": "sample", "start_ns": 5, "end_ns": 9, "max_session_gap_s": 2}}
    ).data
    assert assembly.session_gaps(data) == replay.SessionGaps(2 * 10**9, 5, 9)
    default = parse_config({"data": {"source": "sample"}}).data
    assert assembly.session_gaps(default).max_ns == 3_600 * 10**9


def one_venue(**fields: Any) -> DataConfig:
    source = {"venue": "A", "files": [INVERSE], "instrument_files": [BTCUSD], **fields}
    return parse_config({"data": {"source": "venues", "venues": [source]}}).data


def raw(data: DataConfig) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(data)
    return out


def test_bad_venue_configs_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="each venue once"):
        venues(("A", INVERSE, BTCUSD), ("A", LINEAR, ETHUSDT))
    with pytest.raises(ConfigError, match=r"data\.venues is empty"):
        parse_config({"data": {"source": "venues"}})
    with pytest.raises(ConfigError, match="unused with source 'venues'"):
        parse_config({"data": {**raw(one_venue()), "files": [INVERSE]}})
    with pytest.raises(ConfigError, match=r"needs data\.source: venues"):
        parse_config({"data": {**raw(one_venue()), "source": "files", "files": [INVERSE]}})
    with pytest.raises(ConfigError, match=r"\$\.data\.venues\[0\]\.venue"):
        one_venue(venue="a:b")  # the separator of qualified symbols
    wrong = one_venue(format="tardis_trades")
    with pytest.raises(builders.WiringError, match="is cryptofeed_bybit, not 'tardis_trades'"):
        assembly.replay_opener(wrong, assembly.load_instruments(wrong))
    missing = one_venue(files=["/nonexistent.log.gz"])
    with pytest.raises(builders.WiringError, match=r"data\.venues\[0\]\.files: .*no such file"):
        assembly.replay_opener(missing, assembly.load_instruments(missing))
