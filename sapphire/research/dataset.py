"""Market data for a tuning run, loaded once and sliced into walk-forward windows.

Tick data (hftbacktest depth + BBO + trades) becomes one merged event list, carried as one
msgpack blob (so a Ray object-store copy is a single zero-copy buffer and decodes in a
fraction of the time pickling the structs would take). Each window replays the events inside
it after a synthetic :class:`BookSnapshot` of the depth book at the window start, built by
replaying the depth diffs before it, so the paper exchange starts every window with the full
book. OHLCV data is the integer-tick bar frame; a window keeps its strategy's startup bars in
front so indicators are settled when the window opens.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import polars as pl

from sapphire.agents.indicator import load_strategy
from sapphire.backtest import _loaders
from sapphire.backtest.config import BacktestConfig
from sapphire.backtest.runner import _instrument
from sapphire.model.events import AnyMarketEvent, BookDelta, BookSnapshot, Side
from sapphire.model.instrument import Instrument
from sapphire.research.walkforward import Fold, Window, distinct_windows, walk_forward_splits

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[AnyMarketEvent])


@dataclass
class TickDataset:
    instrument: Instrument
    blob: bytes  # msgpack of the merged events
    ts: list[int]  # ts_event_ns of every event, for bisecting windows
    snapshots: dict[int, BookSnapshot]  # window start -> book at that instant
    _events: list[AnyMarketEvent] | None = field(default=None, repr=False)

    @property
    def span(self) -> Window:
        return Window(self.ts[0], self.ts[-1] + 1)

    def events(self) -> list[AnyMarketEvent]:
        if self._events is None:
            self._events = _DECODER.decode(self.blob)
        return self._events

    def window_events(self, window: Window) -> list[AnyMarketEvent]:
        lo, hi = bisect_left(self.ts, window.start), bisect_left(self.ts, window.end)
        snap = self.snapshots.get(window.start)
        body = self.events()[lo:hi]
        return [snap, *body] if snap is not None else body

    def __getstate__(self) -> dict[str, object]:
        # Ship the blob, never the decoded list.
        return {**self.__dict__, "_events": None}


@dataclass
class BarDataset:
    instrument: Instrument
    frame: pl.DataFrame  # tick frame (see backtest._loaders.tick_frame)
    warmup: int  # bars kept before each window for the indicators

    @property
    def span(self) -> Window:
        return Window(self.warmup, self.frame.height)

    def window_frame(self, window: Window) -> tuple[pl.DataFrame, int]:
        """The bars of ``window`` preceded by up to ``warmup`` bars; and how many precede."""
        lead = min(self.warmup, window.start)
        return self.frame.slice(window.start - lead, window.length + lead), lead


Dataset = TickDataset | BarDataset


def load_ticks(bt: BacktestConfig, resolve: Callable[[str], Path]) -> TickDataset:
    assert bt.ticks is not None
    ticks = bt.ticks
    inst = _instrument(bt, None)
    depth = _loaders.hftbacktest_depth_events(resolve(ticks.depth), inst, ticks.session)
    if not depth:
        raise _loaders.DataError(f"no depth rows for session {ticks.session!r}")
    start = depth[0].ts_event_ns
    end = start + int(ticks.seconds * 1e9)
    depth = [e for e in depth if e.ts_event_ns <= end]
    quotes = [
        e
        for e in _loaders.hftbacktest_events(
            resolve(ticks.bbo), resolve(ticks.trades), inst, ticks.session
        )
        if start <= e.ts_event_ns <= end
    ]
    events = _loaders.merge_events(depth, quotes)
    return TickDataset(inst, _ENCODER.encode(events), [e.ts_event_ns for e in events], {})


def load_bars(bt: BacktestConfig, resolve: Callable[[str], Path]) -> BarDataset:
    raw = _loaders.read_ohlcv(resolve(bt.ohlcv[0]))
    if bt.max_bars is not None:
        raw = raw.head(bt.max_bars)
    inst = _instrument(bt, raw)
    strategy = load_strategy(
        bt.agent.kind.split(":", 1)[1], dict(bt.agent.params.get("strategy_params", {}))
    )
    return BarDataset(inst, _loaders.tick_frame(raw, inst), strategy.startup_candle_count)


def make_folds(
    dataset: Dataset,
    train: float,
    test: float,
    step: float | None,
    *,
    anchored: bool,
    max_folds: int | None = None,
) -> list[Fold]:
    """Walk-forward folds in the dataset's unit: seconds -> ns for ticks, bars for OHLCV."""
    scale = 1e9 if isinstance(dataset, TickDataset) else 1.0
    span = dataset.span
    return walk_forward_splits(
        span.start,
        span.end,
        int(train * scale),
        int(test * scale),
        None if step is None else int(step * scale),
        anchored=anchored,
        max_folds=max_folds,
    )


def attach_snapshots(dataset: TickDataset, folds: list[Fold]) -> None:
    """Build the book snapshot at each window start (one pass over the events)."""
    starts = sorted({w.start for w in distinct_windows(folds)} - {dataset.ts[0]})
    snaps = book_snapshots(dataset.events(), starts)
    # A window starting before the recording's own snapshot replays that one instead.
    dataset.snapshots = {s.ts_event_ns: s for s in snaps if s.bids and s.asks}


def book_snapshots(events: Iterable[AnyMarketEvent], at: list[int]) -> list[BookSnapshot]:
    """The depth book just before each time of ``at`` (ascending), from snapshots and diffs."""
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    last_id = 0
    symbol = ""
    out: list[BookSnapshot] = []
    pending = list(at)
    for event in events:
        while pending and event.ts_event_ns >= pending[0]:
            out.append(_snapshot(symbol, pending.pop(0), bids, asks, last_id))
        kind = type(event)
        if kind is BookSnapshot:
            assert isinstance(event, BookSnapshot)
            bids, asks = dict(event.bids), dict(event.asks)
            last_id, symbol = event.update_id, event.symbol
        elif kind is BookDelta:
            assert isinstance(event, BookDelta)
            side = bids if event.side is Side.BUY else asks
            if event.qty_lots > 0:
                side[event.price_ticks] = event.qty_lots
            else:
                side.pop(event.price_ticks, None)
            last_id = max(last_id, event.final_update_id)
    while pending:
        out.append(_snapshot(symbol, pending.pop(0), bids, asks, last_id))
    return out


def _snapshot(
    symbol: str, ts: int, bids: dict[int, int], asks: dict[int, int], update_id: int
) -> BookSnapshot:
    bid_levels = sorted(bids.items(), reverse=True)
    ask_levels = sorted(asks.items())
    if bid_levels and ask_levels and bid_levels[0][0] >= ask_levels[0][0]:
        # A diff can leave a stale crossing level behind; the later side wins, as on the venue.
        best_ask = ask_levels[0][0]
        bid_levels = [lv for lv in bid_levels if lv[0] < best_ask]
    return BookSnapshot(
        ts_event_ns=ts,
        ts_recv_ns=ts,
        symbol=symbol,
        bids=tuple(bid_levels),
        asks=tuple(ask_levels),
        update_id=update_id,
    )
