"""Property tests: replay ordering, row accounting, and fuzzed input never raising."""

from __future__ import annotations

import gzip
import itertools
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.data.registry import stream_events
from sapphire.data.replay import Replayed, by_session, merge, pace
from sapphire.data.sample import sample_instrument, sample_paths
from sapphire.data.validation import DataFileError
from sapphire.model.events import Side, Trade
from tests.data import venue_checks as vc

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- replay -------------------------------------------------------------------------------
session_blocks = st.lists(
    st.lists(st.integers(0, 50), min_size=0, max_size=15), min_size=1, max_size=3
)


def _stream(blocks: list[list[int]], source: int) -> list[tuple[str, Trade]]:
    out = []
    for s, gaps in enumerate(blocks):
        ts = 1_000_000 * (s + 1)  # sessions are far apart in time
        for i, gap in enumerate(gaps):
            ts += gap
            out.append(
                (
                    f"s{s}",
                    Trade(
                        ts_event_ns=ts,
                        symbol="X",
                        price_ticks=1,
                        qty_lots=1,
                        taker_side=Side.BUY,
                        trade_id=source * 1000 + i,
                    ),
                )
            )
    return out


@FAST
@given(st.lists(session_blocks, min_size=1, max_size=4))
def test_replay_is_ordered_and_complete(streams: list[list[list[int]]]) -> None:
    inputs = [_stream(blocks, i) for i, blocks in enumerate(streams)]
    out = list(merge(inputs, key="ts_event_ns"))
    assert sorted(e.event.trade_id for e in out) == sorted(  # type: ignore[union-attr]
        ev.trade_id for s in inputs for _, ev in s
    )
    assert [o.key_ns for o in out] == sorted(o.key_ns for o in out)
    seen: list[str] = []
    for item in out:  # one session at a time, never interleaved
        if not seen or seen[-1] != item.session:
            assert item.session not in seen
            seen.append(item.session)
    assert [s for s, _ in by_session(iter(out))] == seen
    for a, b in itertools.pairwise(out):  # stable: source index breaks ties
        if a.key_ns == b.key_ns:
            assert a.source <= b.source
    for source in range(len(inputs)):  # each stream keeps its own order
        ids = [o.event.trade_id for o in out if o.source == source]  # type: ignore[union-attr]
        assert ids == [ev.trade_id for _, ev in inputs[source]]


def test_replay_real_streams_by_recv_time() -> None:
    paths, inst = sample_paths(), sample_instrument()
    streams = [stream_events(p, inst) for p in (paths.depth, paths.trades, paths.bbo)]
    out = list(merge([s.tagged() for s in streams], key="ts_recv_ns"))
    assert len(out) == sum(s.stats.events_out for s in streams)
    assert all(a.key_ns <= b.key_ns for a, b in itertools.pairwise(out))
    assert {o.source for o in out} == {0, 1, 2}


def test_pace_uses_injected_clock() -> None:
    now = [0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += int(seconds * 1e9)

    trade = Trade(ts_event_ns=0, symbol="X", price_ticks=1, qty_lots=1, taker_side=Side.BUY)
    items = [Replayed(t, s, 0, trade) for t, s in [(0, "a"), (2_000_000_000, "a"), (9**18, "b")]]
    assert list(pace(items, 2.0, sleep, lambda: now[0])) == items
    assert slept == [1.0]  # 2 s of recording at 2x; the session gap is not slept
    slept.clear()
    assert len(list(pace(items, 0, sleep, lambda: now[0]))) == 3 and not slept


# -- row accounting on generated CSV rows ------------------------------------------------
field = st.one_of(
    st.sampled_from(["", "nan", "inf", "-1", "0", "abc", "1e400", "buy", "sell", "bid"]),
    st.integers(-5, 10**19).map(str),
    st.decimals(-10, 100_000, places=3, allow_nan=False).map(str),
)
HEADER = "session,local_ts_ns,event_ts_ms,trade_ts_ms,trade_id,price,qty,is_buyer_maker,taker_side"


# a valid first row dated 2024-08-08: the generated rows after it are read, not the file
# refused for a first time before any crypto market
DATED = "s,1723075200000000000,1723075200000,1723075200000,1,61602.1,0.001,0,buy"


@FAST
@given(st.lists(st.lists(field, min_size=7, max_size=11), min_size=1, max_size=30), st.booleans())
def test_rows_in_equals_events_out_plus_rejected(rows: list[list[str]], dated: bool) -> None:
    body = "\n".join([*([DATED] if dated else []), *(",".join(["s", *r]) for r in rows)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz"
        path.write_bytes(gzip.compress(f"{HEADER}\n{body}\n".encode()))
        stream = stream_events(path, sample_instrument())
        try:
            events = list(stream)
        except DataFileError as exc:
            # only a file whose first time is before 2009 is refused, naming the file
            assert not dated and str(path) in str(exc) and "before any crypto market" in str(exc)
            return
    stats = stream.stats
    assert stats.rows_in == len(rows) + dated
    assert stats.rows_in == len(events) + stats.rejected
    assert stats.balanced()


# -- fuzzing: bytes into every parser -----------------------------------------------------
NAMES = [
    "hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz",
    "hftbacktest_binance-spot_BTCUSDT_bbo.csv.gz",
    "usdm_btcusdt_20240808.gz",
    "cryptofeed_binance_usdm_ws_2021-07-22.log.gz",
    "nautilus_binance-futures_BTCUSDT_depth-snap_2022-11-01.csv",
    "nautilus_tardis_binance-futures_book_snapshot_25_BTCUSDT_2020-09-01.csv",
    "freqtrade_binance_XRP-ETH_1m_2019-10.csv.gz",
    "freqtrade_binance_XRP-ETH_trades_2019-10.csv.gz",
    "basana_binance_BTC-USDT_1d_2020.csv",
    "basana_binance_depth_update.json",
    "nautilus_binance_BTCUSDT_trades_2021-01-08.parquet",
]
_SAMPLE = gzip.decompress(sample_paths().depth.read_bytes())[:3000]
RAW_LINE = (
    b'1723161255088169167 {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,'
    b'"T":1723161256322,"s":"BTCUSDT","t":5266583935,"p":"61800.30","q":"0.006","m":false}}\n'
)


def _consume(name: str, payload: bytes, infer: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(gzip.compress(payload) if name.endswith(".gz") else payload)
        try:
            stream = stream_events(path, None if infer else sample_instrument())
        except DataFileError:
            return
        list(stream)
        assert stream.stats.balanced()


@FAST
@given(
    st.sampled_from(NAMES),
    st.sampled_from([_SAMPLE, RAW_LINE * 3, b""]),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12),
    st.booleans(),
)
def test_mutated_bytes_never_raise(
    name: str, seed: bytes, flips: list[tuple[int, int]], infer: bool
) -> None:
    _consume(name, vc.flip_bytes(seed, flips), infer)


@FAST
@given(st.sampled_from(NAMES), st.binary(max_size=400), st.booleans())
def test_random_bytes_never_raise(name: str, payload: bytes, raw_gzip: bool) -> None:
    if raw_gzip:
        _consume(name, payload)
    else:  # bytes that are not even valid gzip
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(payload)
            try:
                stream = stream_events(path, sample_instrument())
            except DataFileError:
                return
            list(stream)
            assert stream.stats.balanced()
