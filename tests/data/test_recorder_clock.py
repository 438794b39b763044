"""Receive-stamped events on the exchange's clock (``sapphire.data.replay.RecorderClock``).

A Binance spot bookTicker row has no exchange time: its loader stamps it with the recorder's
receive time. On the 2024-08-08 spot recording that clock ran 1.27 s behind Binance's, so a
merge on the exchange's clock replayed every quote 1.27 s before the trades and diffs that
were received with it: an agent reading quotes saw the market's future.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire.config.system import parse_config
from sapphire.data import replay
from sapphire.data.hftbacktest import stream_hftbacktest
from sapphire.data.instruments import load_instrument_file
from sapphire.kernel import assembly
from sapphire.model.events import AnyMarketEvent, Quote, Side, Trade

MS = 1_000_000
RECV_NS = 123  # a recorder stamps in ns, the exchange in ms: its times never coincide


def _trade(event_ms: int, recv_ms: int) -> Trade:
    return Trade(
        ts_event_ns=event_ms * MS,
        ts_recv_ns=recv_ms * MS + RECV_NS,
        symbol="X",
        price_ticks=100,
        qty_lots=1,
        taker_side=Side.BUY,
    )


def _quote(recv_ms: int, update_id: int = 0) -> Quote:
    t = recv_ms * MS + RECV_NS  # no exchange time: the loader's fallback, the receive time
    return Quote(
        ts_event_ns=t,
        ts_recv_ns=t,
        symbol="X",
        bid_ticks=99,
        bid_lots=1,
        ask_ticks=101,
        ask_lots=1,
        update_id=update_id,
    )


def _merged(
    streams: list[list[tuple[str, AnyMarketEvent]]], key: replay.OrderKey = "ts_event_ns"
) -> tuple[list[replay.Replayed], dict[str, int]]:
    lags: dict[str, int] = {}
    return list(replay.merge([iter(s) for s in streams], key=key, lags=lags)), lags


def test_a_lagging_recorder_puts_receive_stamped_quotes_after_what_it_received_before_them() -> (
    None
):
    # the recorder's clock 1,270 ms behind the exchange's: a trade stamped 10,000 by the
    # exchange arrives at 8,731 (1 ms of network), the quote sent with it at 8,731 too
    trades = [("s", _trade(10_000 + i, 8_731 + i)) for i in range(0, 50, 10)]
    quotes = [("s", _quote(8_731 + i, update_id=i)) for i in range(0, 50, 10)]
    items, lags = _merged([trades, quotes])
    assert lags == {"s": 1_269 * MS - RECV_NS}  # the fastest message: event - recv
    by_id = {it.event.update_id: it for it in items if isinstance(it.event, Quote)}
    assert by_id[0].event.ts_event_ns == 10_000 * MS  # recv + lag: never before the trade
    assert by_id[0].key_ns == by_id[0].event.ts_event_ns
    order = [type(it.event).__name__ for it in items]
    # each quote right after the trade received with it (ties: the earlier stream first)
    assert order == ["Trade", "Quote"] * 5
    assert [it.key_ns for it in items] == sorted(it.key_ns for it in items)


def test_a_recorder_ahead_of_the_exchange_leaves_quotes_where_they_were_received() -> None:
    trades = [("s", _trade(10_000 + i, 10_003 + i)) for i in range(0, 50, 10)]
    quotes = [("s", _quote(10_003 + i)) for i in range(0, 50, 10)]
    items, lags = _merged([trades, quotes])
    assert lags == {}
    got = sorted(it.event.ts_event_ns for it in items if isinstance(it.event, Quote))
    assert got == [(10_003 + i) * MS + RECV_NS for i in range(0, 50, 10)]  # late, never early


def test_each_session_has_its_own_lag_even_when_its_first_quote_is_read_early() -> None:
    # the quote stream reaches session "b" while the trades are still in "a": its first "b"
    # quote is keyed before "b" opens, and restamped when it does
    trades = [("a", _trade(1_000, 1_001)), ("a", _trade(5_000, 5_001))]
    trades += [("b", _trade(100_000, 99_000)), ("b", _trade(100_010, 99_011))]
    quotes = [("a", _quote(1_002)), ("b", _quote(99_001)), ("b", _quote(99_020))]
    items, lags = _merged([trades, quotes])
    assert lags == {"b": 1_000 * MS - RECV_NS}
    quotes_out = [(it.session, it.event.ts_event_ns) for it in items if type(it.event) is Quote]
    assert quotes_out == [("a", 1_002 * MS + RECV_NS), ("b", 100_001 * MS), ("b", 100_020 * MS)]
    assert [it.session for it in items] == ["a"] * 3 + ["b"] * 4
    # within a session, every key is where its event now is, in order
    for it in items:
        assert it.key_ns == it.event.ts_event_ns


def test_the_receive_clock_and_a_lone_stream_are_left_as_recorded() -> None:
    trades = [("s", _trade(10_000, 8_731))]
    quotes = [("s", _quote(8_731))]
    items, lags = _merged([trades, quotes], key="ts_recv_ns")
    assert lags == {} and [it.event for it in items] == [trades[0][1], quotes[0][1]]
    alone, lags = _merged([quotes])  # one clock only: nothing to measure it against
    assert lags == {} and alone[0].event == quotes[0][1]


@settings(max_examples=60, deadline=None)
@given(
    lag_ms=st.integers(-50, 2_000),
    latencies=st.lists(st.integers(0, 30), min_size=1, max_size=30),
    quote_latencies=st.lists(st.integers(0, 30), min_size=1, max_size=30),
)
def test_a_quote_never_replays_before_the_exchange_could_have_sent_it(
    lag_ms: int, latencies: list[int], quote_latencies: list[int]
) -> None:
    """Whatever the recorder's offset and the network's latencies: a receive-stamped event
    replays at or after its true exchange time, as long as some sampled message was at
    least as fast as it (the fastest one sets the lag)."""
    fastest = min(latencies)
    quote_latencies = [max(q, fastest) for q in quote_latencies]
    trades = [
        ("s", _trade(1_000 + 7 * i, 1_000 + 7 * i + lat - lag_ms))
        for i, lat in enumerate(latencies)
    ]
    quotes = [
        ("s", _quote(1_000 + 5 * i + lat - lag_ms, update_id=i))
        for i, lat in enumerate(quote_latencies)
    ]
    items, _ = _merged([trades, quotes])
    for it in items:
        if isinstance(it.event, Quote):
            true_ns = (1_000 + 5 * it.event.update_id) * MS
            assert it.event.ts_event_ns >= true_ns
    assert [it.key_ns for it in items] == sorted(it.key_ns for it in items)


SPOT = Path("book/hftbacktest_binance-spot_BTCUSDT_bbo.csv.gz")
REPO = Path(__file__).resolve().parents[2]


def test_the_spot_recording_of_2024_08_08_lagged_binance_by_1_27_s(shared_data: Path) -> None:
    """The real recording: its trades (exchange-stamped) say the recorder ran 1.27 s behind
    in the 2024 session and not behind in the 2023 one; its 81,189 bookTicker rows (no
    exchange time) replay that much later in 2024."""
    inst = load_instrument_file(REPO / "configs/instruments/binance-spot-BTCUSDT.json")
    trades = shared_data / "trades/hftbacktest_binance-spot_BTCUSDT_trades.csv.gz"
    streams = [stream_hftbacktest(f, inst) for f in (trades, shared_data / SPOT)]
    lags: dict[str, int] = {}
    items = list(replay.merge(streams, key="ts_event_ns", lags=lags))
    assert set(lags) == {"2024-08-08"}
    assert 1_270 * MS < lags["2024-08-08"] < 1_280 * MS
    quotes = [it for it in items if type(it.event) is Quote]
    assert len(quotes) == 81_189
    late = [it for it in quotes if it.session == "2024-08-08"]
    assert all(it.event.ts_event_ns == it.event.ts_recv_ns + lags["2024-08-08"] for it in late)
    early = [it for it in quotes if it.session == "2023-04-05"]
    assert early and all(it.event.ts_event_ns == it.event.ts_recv_ns for it in early)


def test_a_quote_read_ahead_for_a_later_session_is_restamped_when_that_session_opens() -> None:
    """Session "b" opens and its first 1,000 events are read ahead: one stream's read stops
    at a receive-stamped quote of session "c". Restamped, b's quote sorts after c's start,
    so "c" opens first: the quote read ahead, in no head then, is restamped when it is
    read (it replayed one lag early before)."""
    s0 = [("b", _trade(2_000, 1_000)), ("c", _quote(3_000, update_id=7))]
    s1 = [("b", _quote(500, update_id=1))]
    s2 = [("c", _trade(1_200, 200))]
    items, lags = _merged([s0, s1, s2])
    assert lags == {"b": 1_000 * MS - RECV_NS, "c": 1_000 * MS - RECV_NS}
    quotes = {it.event.update_id: it.event for it in items if isinstance(it.event, Quote)}
    assert quotes[1].ts_event_ns == 1_500 * MS
    assert quotes[7].ts_event_ns == 4_000 * MS


def test_a_venue_s_own_receive_time_is_never_moved_by_another_recorder_s_lag(
    tmp_path: Path, shared_data: Path
) -> None:
    """A Bybit archive has no receive time: its trades carry the trade time in both fields.
    Merged in one run with the lagging spot recording (the same session label), they keep
    their time; they replayed 1.27 s late before."""
    t0 = 1_723_161_600 - 240  # 2024-08-08 23:56:00, inside the spot session
    header = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,"
    header += "homeNotional,foreignNotional"
    rows = [
        header,
        f"{t0}.25,BTCUSD,Buy,100,61000.5,PlusTick,8a1f4f7e-7b8c-5d3e-9f0a-1b2c3d4e5f60,1,1,1",
        f"{t0 + 1}.5,BTCUSD,Sell,100,61000.0,MinusTick,0b2c3d4e-5f60-5a1f-8e7b-6c5d4e3f2a10,1,1,1",
    ]
    bybit = tmp_path / "BTCUSD2024-08-08.csv.gz"
    bybit.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    data = parse_config(
        {
            "data": {
                "source": "files",
                "files": [
                    str(shared_data / "trades/hftbacktest_binance-spot_BTCUSDT_trades.csv.gz"),
                    str(shared_data / SPOT),
                    str(bybit),
                ],
                "instrument_files": [
                    str(REPO / "configs/instruments/binance-spot-BTCUSDT.json"),
                    str(REPO / "configs/instruments/bybit-inverse-BTCUSD.json"),
                ],
                "sessions": ["2024-08-08"],
                "cache": False,
            }
        }
    ).data
    feed = assembly.replay_opener(data, assembly.load_instruments(data))()
    got = [e.ts_event_ns for e in feed if isinstance(e, Trade) and e.symbol == "BTCUSD"]
    assert feed.lags["2024-08-08"] > 1_270 * MS  # the spot recorder's lag was learnt
    assert got == [t0 * 10**9 + 250_000_000, (t0 + 1) * 10**9 + 500_000_000]


def test_one_damaged_exchange_time_does_not_move_every_quote() -> None:
    day_ms = 86_400_000
    trades = [("s", _trade(10_000 + i, 8_731 + i)) for i in range(0, 50, 10)]
    trades.append(("s", _trade(10_060 + day_ms, 8_791)))  # a time a day off: damaged
    quotes = [("s", _quote(8_731 + i)) for i in range(0, 50, 10)]
    _, lags = _merged([trades, quotes])
    assert lags == {"s": 1_269 * MS - RECV_NS}
