"""The window cutter's fast loop (exchange clock, no event cap) cuts exactly as its general
loop: same windows, same events (clamped the same way), same state, on random streams."""

from __future__ import annotations

import itertools

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sapphire.kernel.windows import WindowCutter
from sapphire.model.events import Side, Trade


def _events(steps: list[int]) -> list[Trade]:
    out, ts = [], 1_000
    for i, step in enumerate(steps):
        ts += step  # negative steps: a recorder's clock running backwards (clamped)
        out.append(
            Trade(
                ts_event_ns=ts,
                symbol="X",
                price_ticks=1,
                qty_lots=1,
                taker_side=Side.BUY,
                trade_id=i + 1,
            )
        )
    return out


class _General(WindowCutter):
    def _plain(self) -> bool:
        return False


def _run(
    cutter: WindowCutter, pendings: list[int | None], step: int = 0, stop: int | None = None
) -> tuple[list[object], int]:
    """Windows (and their events' ids and times) from ``step``, up to ``stop``."""
    out: list[object] = []
    while (stop is None or step < stop) and (
        got := cutter.next_window(step, pendings[step % len(pendings)])
    ) is not None:
        events, window = got
        out.append((window, [(e.trade_id, e.ts_event_ns) for e in events]))
        step += 1
    return out, step


def _cut(cutter: WindowCutter, pendings: list[int | None]) -> list[object]:
    return [*_run(cutter, pendings)[0], cutter.state]


# random streams and cutters: times that run backwards, windows, caps, starts and ends
STREAMS = {
    "steps": st.lists(st.integers(-30, 60), max_size=60),
    "window_ns": st.integers(1, 80),
    "cap": st.integers(1, 8) | st.just(1 << 62),
    "start_ns": st.none() | st.integers(900, 1_600),
    "end_ns": st.none() | st.integers(1_000, 2_500),
    "tail_ns": st.integers(0, 200) | st.just(0),
}


@settings(max_examples=300, deadline=None)
@given(**STREAMS, pendings=st.lists(st.none() | st.integers(0, 2_500), min_size=1, max_size=5))
def test_fast_cut_equals_general_cut(
    steps: list[int],
    window_ns: int,
    cap: int,
    start_ns: int | None,
    end_ns: int | None,
    tail_ns: int,
    pendings: list[int | None],
) -> None:
    events = _events(steps)
    kwargs = dict(
        window_ns=window_ns,
        max_window_events=cap,
        start_ns=start_ns,
        end_ns=end_ns,
        tail_ns=tail_ns,
    )
    fast = WindowCutter(iter(events), **kwargs)  # type: ignore[arg-type]
    general = _General(iter(events), **kwargs)  # type: ignore[arg-type]
    assert fast._plain() and not general._plain()
    assert _cut(fast, pendings) == _cut(general, pendings)


@settings(max_examples=300, deadline=None)
@given(
    **STREAMS,
    restart_at=st.integers(0, 30),
    general=st.booleans(),
    pendings=st.lists(st.none() | st.integers(0, 2_700), min_size=1, max_size=5),
)
# a warm-up window cut by its cap, the next event clamped and looked at (counted twice before)
@example([0, 0, -5, 10], 50, 2, 2_000, None, 0, 1, False, [None])
@example([0, 0, -5, 10], 50, 2, 2_000, None, 0, 1, True, [None])
def test_a_cutter_rebuilt_from_its_state_cuts_and_counts_as_one_that_never_stopped(
    steps: list[int],
    window_ns: int,
    cap: int,
    start_ns: int | None,
    end_ns: int | None,
    tail_ns: int,
    restart_at: int,
    general: bool,
    pendings: list[int | None],
) -> None:
    """What a rewind to a barrier or a restart does: a new cutter over the stream from the
    state's ``consumed``, with a copy of the state. The windows and the final state (the
    clamped count too: the event looked at past a window is counted when it is taken, not
    twice: a warm-up window cut by its cap can leave a clamped event looked at) equal those
    of one cutter."""
    events = _events(steps)
    kind = _General if general else WindowCutter
    kwargs = dict(
        window_ns=window_ns,
        max_window_events=cap,
        start_ns=start_ns,
        end_ns=end_ns,
        tail_ns=tail_ns,
    )
    whole = _cut(kind(iter(events), **kwargs), pendings)  # type: ignore[arg-type]
    first = kind(iter(events), **kwargs)  # type: ignore[arg-type]
    out, step = _run(first, pendings, stop=restart_at)
    state = msgspec.structs.replace(first.state)  # the checkpoint's copy
    again = kind(iter(events[state.consumed :]), state=state, **kwargs)  # type: ignore[arg-type]
    assert [*out, *_run(again, pendings, step)[0], again.state] == whole


@settings(max_examples=300, deadline=None)
@given(**STREAMS, pendings=st.lists(st.none() | st.integers(0, 2_700), min_size=1, max_size=5))
def test_windows_go_on_until_the_last_event_is_visible(
    steps: list[int],
    window_ns: int,
    cap: int,
    start_ns: int | None,
    end_ns: int | None,
    tail_ns: int,
    pendings: list[int | None],
) -> None:
    """The run ends when its last event becomes visible (its time plus the feed latency,
    within ``end_ns``): before, it ended one ns after the last event, so agents and marks
    never saw the last ``feed_ns`` of the data (a bar system: its whole last bar). Windows
    never overlap and are no longer than ``window_ns``; only the last one reaches the end,
    and a quiet tail costs at most one window past what is due."""
    events = _events(steps)
    cutter = WindowCutter(
        iter(events),
        window_ns=window_ns,
        max_window_events=cap,
        start_ns=start_ns,
        end_ns=end_ns,
        tail_ns=tail_ns,
    )
    windows = [w for w, _ in _run(cutter, pendings)[0]]  # type: ignore[misc]
    if not windows or windows[-1].warmup:
        return  # no data, or all of it before the trading period
    assert [w.last for w in windows] == [False] * (len(windows) - 1) + [True]
    last_t = cutter.state.last_t_ns
    horizon = last_t + 1 + tail_ns if end_ns is None else min(last_t + 1 + tail_ns, end_ns)
    assert windows[-1].end_ns == horizon
    trading = [w for w in windows if not w.warmup]
    for before, after in itertools.pairwise(trading):
        assert before.end_ns <= after.start_ns
    assert all(w.end_ns - w.start_ns <= window_ns for w in trading)
    after = [w for w in trading if w.start_ns > last_t]
    if all(p is None for p in pendings):
        assert len(after) <= 1  # nothing due in the tail: one window reaches the horizon
