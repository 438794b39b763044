"""From a system config to the kernel's parts: instruments, the replay, agents, the venue and
the run's timing. Every runner (in process, Ray, tune) builds its parts here, so they cannot
drift apart. Builders are small picklable callables, so Ray can re-run them on a restart.
"""

from __future__ import annotations

import array
import bisect
import collections
import fcntl
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np

from sapphire.config.system import DataConfig, ExchangeConfig, SystemConfig
from sapphire.coordination.core import CoordinatorCore
from sapphire.data import replay, sample
from sapphire.data.convert import Tagged
from sapphire.data.derived_quotes import DerivedQuotes, quoted_symbols
from sapphire.data.instruments import load_instrument_file
from sapphire.data.registry import detect, has_recorder_clock, open_stream
from sapphire.data.replay_cache import ReplayCache, Source, default_dir
from sapphire.data.validation import STATE_CHANGES, DataFileError, damage_key
from sapphire.exchange.config import LatencyConfig, PaperExchangeConfig
from sapphire.exchange.gateway import ExecutionGateway
from sapphire.kernel.builders import (
    WiringError,
    asks_model,
    build_factory,
    build_paper,
    checked_build,
    import_object,
)
from sapphire.kernel.shards import ShardError, Shards, shards_of
from sapphire.kernel.timing import Clock, Timing
from sapphire.model.events import AnyMarketEvent
from sapphire.model.instrument import Instrument
from sapphire.risk.portfolio import currency_choices, reporting_asset, unvalued
from sapphire.storage.files import atomic_write_bytes

# What a paper venue assumes when the config names no latency: 1 ms to the matching engine
# and 1 ms back (a co-located client), so the lookahead is 1 ms. Printed with every summary.
DEFAULT_LATENCY: dict[str, Any] = {
    "kind": "constant",
    "entry_ns": 1_000_000,
    "response_ns": 1_000_000,
}


def replay_changed(consumed: int, held: int | None = None) -> WiringError:
    """A run's checkpoint consumed more events than its replay now holds (``held``, where
    known): a --resume after the data changed, one clear error (never a short "done")."""
    short = (
        f"fewer events than the checkpoint consumed ({consumed:,})"
        if held is None
        else f"{held:,} events, fewer than the run consumed ({consumed:,})"
    )
    return WiringError(
        f"the replay holds {short}: were data.files or data.sessions changed since the run started?"
    )


def data_path(text: str) -> Path:
    """A data or instrument path of a config: ``shared:REL`` is the shared recorded data
    (``$SAPPHIRE_SHARED_DATA``, else ``../shared/data`` beside the repository), ``sample:REL``
    the bundled sample; anything else is a path as given."""
    if text.startswith("shared:"):
        env = os.environ.get("SAPPHIRE_SHARED_DATA")
        root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
        return root / text.removeprefix("shared:").lstrip("/")
    if text.startswith("sample:"):
        return sample.SAMPLE_DIR / text.removeprefix("sample:").lstrip("/")
    return Path(text)


def storage_root(config: SystemConfig) -> Path:
    """``storage.root``, resolved; a path that exists and is not a folder is a config error
    (the store, checkpoints and the firm kill switch all live under it)."""
    root = Path(config.storage.root).resolve()
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                raise WiringError(f"storage.root {config.storage.root!r}: {path} is not a folder")
            break
    return root


def run_folder(config: SystemConfig, run_id: str) -> Path:
    """``<storage.root>/<run_id>``, made when a run starts: the run's own stop request
    (``sapphire stop RUN_ID``), its checkpoints and the instruments ``sapphire query`` reads.
    ``sapphire stop`` knows a run by this folder, so a mistyped id is refused instead of
    answered "STOPPED" while the run it meant goes on trading."""
    folder = storage_root(config) / run_id
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WiringError(
            f"storage.root {config.storage.root!r}: cannot make {folder}: {exc}"
        ) from None
    return folder


CLAIM_FILE = "claimed"
CLAIM_LOCK = ".claim.lock"  # held while a starter reads and writes the claim


def claim_run(config: SystemConfig, run_id: str) -> Path:
    """Claim run id ``run_id`` for this process before its store is opened: a marker in the
    run's folder naming the host and process. Two runs started under one id (two backtests
    in one second took the same default id) wrote the same store files, the second's
    replacing the first's rows, and the second's store recovery deleted the first's staged
    files. A claim whose process is gone (a crash) is taken over: whether that run left rows
    or checkpoints is the store's and the checkpoints' check.

    Starters of one id take turns under a lock on the run folder (``flock``): the marker is
    read, judged and written by one of them at a time. Without it, one read a marker still
    empty and took it for a crashed run's, and two taking a dead claim over at once both
    ran. A marker that cannot be read (another user's) is taken for a live run's."""
    folder = run_folder(config, run_id)
    marker = folder / CLAIM_FILE
    me = f"{os.uname().nodename} {os.getpid()}"
    try:
        with open(folder / CLAIM_LOCK, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                owner = marker.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                owner = ""
            except OSError as exc:
                owner = f"an owner this process cannot read ({exc.strerror})"
            if owner and owner != me and claim_alive(owner):
                raise WiringError(
                    f"run {run_id!r} is running now (started by {owner}, {marker}): choose "
                    "another run id (if that process is gone, on another host, remove the "
                    "file)"
                )
            atomic_write_bytes(marker, me.encode())  # free, this process's, or a dead run's
            return marker
    except OSError as exc:
        raise WiringError(f"run {run_id!r}: cannot claim {marker}: {exc}") from None


def run_is_live(folder: Path) -> bool:
    """Whether the run of ``folder`` (``run_folder``) holds its claim now: started and not
    ended (one claimed on another host: assumed so)."""
    try:
        owner = (folder / CLAIM_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return claim_alive(owner)


def claim_alive(owner: str) -> bool:
    """Whether the process a claim names still runs (one on another host: assumed so)."""
    host, _, pid = owner.rpartition(" ")
    if host != os.uname().nodename or not pid.isdigit():
        return bool(owner)
    try:
        os.kill(int(pid), 0)  # signal 0: a check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def data_files(data: DataConfig) -> list[Path]:
    if data.source == "sample":
        return sample.event_files()
    if data.source == "ccxt":
        return []
    if data.source == "venues":
        return [data_path(f) for v in data.venues for f in v.files]
    return [data_path(f) for f in data.files]


class VenueFeed(NamedTuple):
    """One venue's files of a cross-venue replay and its instruments by the venue's own
    symbol; each instrument's ``symbol`` is already the run's (``VENUE:SYMBOL``)."""

    venue: str
    files: tuple[Path, ...]
    instruments: dict[str, Instrument]


def venue_feeds(data: DataConfig) -> list[VenueFeed]:
    feeds = []
    for i, source in enumerate(data.venues):
        by_venue_symbol: dict[str, Instrument] = {}
        for path in source.instrument_files:
            try:
                inst = load_instrument_file(data_path(path))
            except DataFileError as exc:
                raise WiringError(f"data.venues[{i}].instrument_files: {exc}") from None
            run_symbol = f"{source.venue}:{inst.symbol}"
            by_venue_symbol[inst.symbol] = msgspec.structs.replace(inst, symbol=run_symbol)
        files = tuple(data_path(f) for f in source.files)
        feeds.append(VenueFeed(source.venue, files, by_venue_symbol))
    return feeds


def load_instruments(data: DataConfig) -> dict[str, Instrument]:
    if data.source == "venues":
        return {i.symbol: i for feed in venue_feeds(data) for i in feed.instruments.values()}
    files = list(data.instrument_files)
    if data.source == "sample" and not files:
        files = [str(sample.instrument_file())]
    if not files:
        raise WiringError("data.instrument_files must name the instruments of data.files")
    instruments = {}
    for path in files:
        try:
            inst = load_instrument_file(data_path(str(path)))
        except DataFileError as exc:
            raise WiringError(f"data.instrument_files: {exc}") from None
        instruments[inst.symbol] = inst
    return instruments


def replay_key(clock: str) -> str:
    return "ts_event_ns" if clock == Clock.EXCHANGE else "ts_recv_ns"


replay_event = itemgetter(3)  # the event of a replay.Replayed


class ReplaySource(NamedTuple):
    """One recorded input of a replay: a file, read with these instruments (by the file's own
    symbols) and renamed to the run's symbols where ``renames`` says (a venue's files). The
    merge orders sources by their index in :func:`replay_sources`; a shard's market data
    reads only its own sources."""

    path: Path
    instruments: dict[str, Instrument]
    renames: dict[str, str] | None  # venue symbol -> run symbol; None: data.files
    # the merge's group (``sapphire.data.replay.merge``): 0 for data.files, then one per
    # venue; sessions are sequential within a group, groups interleave on the clock
    group: int = 0

    def run_symbols(self) -> frozenset[str] | None:
        """The run symbols this source can hold; None when only reading it tells (a file of
        ``data.files`` may hold any of the run's instruments)."""
        return None if self.renames is None else frozenset(self.renames.values())


def replay_sources(
    files: list[Path], instruments: dict[str, Instrument], venues: tuple[VenueFeed, ...] = ()
) -> list[ReplaySource]:
    """A replay's sources in merge order: ``data.files``, then each venue's files."""
    out = [ReplaySource(path, instruments, None) for path in files]
    for group, feed in enumerate(venues, start=1):
        renames = {sym: inst.symbol for sym, inst in feed.instruments.items()}
        out.extend(ReplaySource(path, feed.instruments, renames, group) for path in feed.files)
    return out


def venue_receive_times(sources: list[ReplaySource]) -> list[int]:
    """The sources (indexes) whose receive times are the venue's own, no recorder's: their
    events keep their times on the exchange's clock (``replay.merge``'s ``fixed``)."""
    return [i for i, s in enumerate(sources) if not has_recorder_clock(s.path)]


def merge_groups(data: DataConfig) -> list[int]:
    """Each replay source's merge group (:attr:`ReplaySource.group`), in merge order."""
    files = data_files(data) if data.source != "venues" else []
    return [s.group for s in replay_sources(files, {}, tuple(venue_feeds(data)))]


def merge_fixed(data: DataConfig) -> list[int]:
    """The replay sources whose receive times are the venue's own (:func:`venue_receive_
    times`), for a merge of the sources read apart (the shards' coordinator)."""
    files = data_files(data) if data.source != "venues" else []
    return venue_receive_times(replay_sources(files, {}, tuple(venue_feeds(data))))


def open_source(
    source: ReplaySource,
    sessions: tuple[str, ...],
    cache: ReplayCache | None,
    derive: frozenset[str] = frozenset(),
) -> tuple[Source, Iterator[Tagged], DerivedQuotes | None]:
    """A source's stream and its ``(session, event)`` pairs on the run's symbols: read from
    ``cache`` where it has the file converted, written there where not. ``derive``: the run
    symbols whose quotes are derived from their depth (:func:`derived_symbols`), right after
    each depth event here, whoever reads this source (and the :class:`DerivedQuotes` that
    counts them; None where this source can hold none of them)."""

    def read() -> Source:
        stream = open_stream(source.path, source.instruments)
        if sessions:
            stream.select_sessions(sessions)
        # each depth message's levels as one event, before the cache: a replay reads,
        # merges and steps messages, not levels (``BookDeltas``)
        return replay.GroupedStream(stream)

    key = None if cache is None else cache.key(source.path, source.instruments, sessions or None)
    stream = read() if cache is None or key is None else cache.stream(key, source.path, read)
    tagged = stream.tagged()
    if source.renames is not None:
        tagged = replay.qualified(tagged, source.renames)
    symbols = source.run_symbols()
    derived = None
    if derive and (symbols is None or derive & symbols):
        # after the cache (its entries are the file's own events, whatever the run derives)
        # and on the run's symbols
        derived = DerivedQuotes(derive if symbols is None else derive & symbols)
        tagged = derived.tagged(tagged)
    return stream, tagged, derived


class SourceReport:
    """Where a source's reported state (rejected rows by reason, selected sessions met)
    changed, by pair. A replay reads ahead of what a run consumes (a loader checks a frame
    of rows at once, a Ray reader serves chunks), so the state a run reports is the one as
    of the last pair it consumed from each source: the same in every runner, whatever each
    read ahead. The states before a floor no run can ask about any more are dropped
    (:meth:`forget_before`), so a long replay keeps only the recent ones."""

    def __init__(self, stream: Source, derived: DerivedQuotes | None = None) -> None:
        self.stream = stream
        # the source's derived quotes, reported beside its rejections but counted apart:
        # a quote comes every few pairs, and a state below is kept per change
        self.derived = derived
        # (pair index, counts, sessions met): the state as the pair at that index was given
        self._at: list[int] = [-1]
        self._states: list[tuple[dict[str, int], frozenset[str]]] = [({}, frozenset())]
        self._total: int | None = None  # the pairs the source had, once it ended
        self._floor = 0  # no ``taken`` below this is asked any more

    def track(self, pairs: Iterator[Tagged]) -> Iterator[Tagged]:
        changes = STATE_CHANGES
        seen = -1
        i = 0
        for pair in pairs:
            if changes[0] != seen:  # some stream's state moved: this one's, perhaps
                seen = changes[0]
                self._note(i)
            i += 1
            yield pair
        self._note(i)  # rows rejected after the last pair count once the source is over
        self._total = i

    def _note(self, i: int) -> None:
        state = (
            {damage_key(r, self.stream.path): n for r, n in self.stream.stats.counts.items()},
            frozenset(self.stream.sessions_seen),
        )
        if state != self._states[-1]:
            self._at.append(i)
            self._states.append(state)

    def forget_before(self, taken: int) -> None:
        """No run asks about fewer than ``taken`` pairs any more: keep the state as of
        there and those after it."""
        if taken <= self._floor:
            return
        self._floor = taken
        k = bisect.bisect_right(self._at, taken - 1) - 1
        if k > 0:
            del self._at[:k]
            del self._states[:k]
        if self.derived is not None:
            self.derived.forget_before(taken)

    def state(self, taken: int | None) -> tuple[dict[str, int], frozenset[str]]:
        """The state once ``taken`` pairs were consumed (None: everything read so far)."""
        if taken is None or (self._total is not None and taken >= self._total):
            state = self._states[-1]
        elif taken < self._floor:
            raise LookupError(f"state after {taken} pairs: forgotten (kept from {self._floor})")
        else:
            state = self._states[bisect.bisect_right(self._at, taken - 1) - 1]
        if self.derived is None:
            return state
        return state[0] | self.derived.counts(taken), state[1]


def merged_report(
    states: Iterable[tuple[dict[str, int], frozenset[str]]], selected: Iterable[str]
) -> tuple[dict[str, int], list[str]]:
    """Rejected rows by reason over several sources' states, and the selected sessions none
    of them met."""
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for state, met in states:
        for reason, n in state.items():
            counts[reason] = counts.get(reason, 0) + n
        seen |= met
    return counts, sorted(set(selected) - seen)


class MergeLog:
    """The source of each merged event, in order: how many events of each source the first
    ``n`` merged ones hold, whatever was read ahead of them.

    Bounded, whatever the replay's length: the sources of the last ``keep`` to 2 x ``keep``
    merged events are kept (2 bytes each), those before them only as counts (``floor``). A
    run asks about what it consumed, which trails what was merged by its read-ahead only;
    below the floor :meth:`taken` raises ``LookupError`` (the caller merges again).
    ``on_floor`` hears each source's count below the new floor when it moves."""

    KEEP = 1 << 21  # events: ids of 2-4 Mi events, 4-8 MiB

    def __init__(
        self,
        sources: int,
        keep: int = KEEP,
        on_floor: Callable[[list[int]], None] | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"MergeLog keep must be >= 1, got {keep}")
        self.sources = sources
        self.keep = keep
        self.floor = 0
        self._below = [0] * sources  # events of each source before the floor
        self._ids = array.array("H")
        self._on_floor = on_floor

    def track(self, merged: Iterator[replay.Replayed]) -> Iterator[replay.Replayed]:
        ids = self._ids
        append = ids.append  # the array stays the same object when trimmed
        while True:
            start = len(ids)
            room = 2 * self.keep - start
            for item in itertools.islice(merged, room):
                append(item[2])  # Replayed.source
                yield item
            if len(ids) - start < room:
                return
            self._trim()

    def _trim(self) -> None:
        drop = len(self._ids) - self.keep
        if drop <= 0:
            return
        head = np.frombuffer(self._ids, dtype=np.uint16, count=drop)
        counts = np.bincount(head, minlength=self.sources).tolist()
        del head  # the array cannot shrink while a view of it exists
        del self._ids[:drop]
        self._below = [a + b for a, b in zip(self._below, counts, strict=True)]
        self.floor += drop
        if self._on_floor is not None:
            self._on_floor(list(self._below))

    def __len__(self) -> int:
        return self.floor + len(self._ids)

    def taken(self, n: int) -> list[int]:
        """Events of each source among the first ``n`` merged."""
        if n < self.floor:
            raise LookupError(f"sources of the first {n:,} merged events: kept from {self.floor:,}")
        n = min(n, len(self)) - self.floor
        if n <= 0:
            return list(self._below)
        ids = np.frombuffer(self._ids, dtype=np.uint16, count=n)
        counts = np.bincount(ids, minlength=self.sources).tolist()
        del ids
        return [a + b for a, b in zip(self._below, counts, strict=True)]


class ReplayReader:
    """What every replay reader does with its converted-replay cache (``cache``, or None)."""

    cache: ReplayCache | None

    def cache_stats(self) -> dict[str, int]:
        """What the replay cache did for this reader's files (empty without a cache)."""
        return {} if self.cache is None else msgspec.structs.asdict(self.cache.stats)

    def close(self) -> None:
        """The run is over: a cache keeps what the unfinished streams gave (a prefix the
        next run reads before it opens the file)."""
        if self.cache is not None:
            self.cache.close()


def open_cache(spec: tuple[str, int] | None) -> ReplayCache | None:
    """The cache of ``replay_cache_spec`` (``(directory, max bytes)``), or None."""
    return None if spec is None else ReplayCache(Path(spec[0]), max_bytes=spec[1])


class ReplayFeed(ReplayReader):
    """The merged replay of several recorded files, ordered on the run's clock, with their
    rejection counts.

    ``speed`` > 0 releases events at that multiple of recorded time (1.0 = as recorded, for
    demos); 0 is as fast as possible. Events skipped on a restart are not paced.
    """

    def __init__(
        self,
        files: list[Path],
        instruments: dict[str, Instrument],
        clock: str = Clock.EXCHANGE,
        speed: float = 0.0,
        venues: tuple[VenueFeed, ...] = (),
        sessions: tuple[str, ...] = (),
        cache: ReplayCache | None = None,
        merge_log_keep: int = MergeLog.KEEP,
        gaps: replay.SessionGaps = replay.ANY_GAP,
        derive: frozenset[str] = frozenset(),
    ) -> None:
        """``derive``: the symbols whose quotes are derived from depth (``open_source``).
        ``gaps``: the longest gap allowed between sessions replayed back to back
        (``data.max_session_gap_s``, :func:`session_gaps`). ``cache``: read each file's
        converted stream from there where it has one, and write it there where not
        (``sapphire.data.replay_cache``); None reads the files.
        ``merge_log_keep``: how far (events) a run's consumption may trail the merge and
        still be reported from memory (:class:`MergeLog`; further back, merged again)."""
        self.cache = cache
        sources = replay_sources(files, instruments, venues)
        opened = [open_source(s, sessions, cache, derive) for s in sources]
        self._reports = [SourceReport(stream, derived) for stream, _, derived in opened]
        tagged = [r.track(o[1]) for r, o in zip(self._reports, opened, strict=True)]
        self.log = MergeLog(len(sources), merge_log_keep, self._forget_before)
        # the same replay, merged again from its start (files read, no cache: a second
        # writer of an entry this one may still be writing), for a report further back
        self._again = partial(
            ReplayFeed,
            files,
            instruments,
            clock,
            0.0,
            venues,
            sessions,
            None,
            merge_log_keep,
            gaps,
            derive,
        )
        groups = [s.group for s in sources]
        # the sessions whose receive-stamped events were put on the exchange's clock, with
        # the recorder's lag: what the run's summary says of them
        self.lags: dict[str, int] = {}
        merged = replay.merge(
            tagged,
            replay_key(clock),  # type: ignore[arg-type]
            groups,
            gaps,
            self.lags,
            venue_receive_times(sources),
        )
        self._merged = self.log.track(merged)
        self._sessions = sessions
        self._speed = speed
        self._events: Iterator[AnyMarketEvent] | None = None

    def skip(self, n: int) -> None:
        """Fast-forward ``n`` events (a restarted replay), before any pacing starts."""
        for _ in itertools.islice(self._merged, n):
            pass

    def __iter__(self) -> Iterator[AnyMarketEvent]:
        if self._events is None:
            items = self._merged
            if self._speed > 0:
                items = replay.pace(items, self._speed, time.sleep, time.monotonic_ns)
            self._events = map(replay_event, items)  # Replayed.event, without a Python frame
        return self._events

    def __next__(self) -> AnyMarketEvent:
        return next(iter(self))

    def report(self, consumed: int | None) -> tuple[dict[str, int], list[str]]:
        """Rejected rows by reason in what the run consumed (its first ``consumed`` events;
        None: everything read so far), and the selected sessions (``data.sessions``) none of
        it held: once the replay is over, a label that matched nothing."""
        if consumed is not None and len(self.log) <= consumed:
            # one event past what was consumed: the merge then went on from each source that
            # gave its last pair, so the sources the run took whole are known to be over
            # (their rows rejected after the last pair count), as for a reader that read ahead
            self.skip(consumed + 1 - len(self.log))
        if consumed is not None and consumed < self.log.floor:
            # trailing the merge by more than the log keeps (a reader far ahead of a
            # restored run): the same replay merged again up to there answers exactly
            again = self._again()
            try:
                return again.report(consumed)
            finally:
                again.close()
        taken = None if consumed is None else self.log.taken(consumed)
        states = (r.state(None if taken is None else taken[i]) for i, r in enumerate(self._reports))
        return merged_report(states, self._sessions)

    def _forget_before(self, taken: list[int]) -> None:
        """The log's floor moved: each source's states before its share of it go too."""
        for report, n in zip(self._reports, taken, strict=True):
            report.forget_before(n)


def open_replay(
    files: list[Path],
    instruments: dict[str, Instrument],
    clock: str,
    speed: float = 0.0,
    venues: tuple[VenueFeed, ...] = (),
    sessions: tuple[str, ...] = (),
    cache: tuple[str, int] | None = None,
    merge_log_keep: int = MergeLog.KEEP,
    gaps: replay.SessionGaps = replay.ANY_GAP,
    derive: frozenset[str] = frozenset(),
) -> ReplayFeed:
    """``cache``: ``(directory, max bytes)`` of the converted-replay cache, or None."""
    return ReplayFeed(
        files,
        instruments,
        clock,
        speed,
        venues,
        sessions,
        open_cache(cache),
        merge_log_keep,
        gaps,
        derive,
    )


def session_gaps(data: DataConfig) -> replay.SessionGaps:
    """``data.max_session_gap_s`` for the replay's merge, over the run's trading window."""
    return replay.SessionGaps(
        int(data.max_session_gap_s * 1e9),
        -(2**63) if data.start_ns is None else data.start_ns,
        2**63 if data.end_ns is None else data.end_ns,
    )


def merge_log_keep(data: DataConfig) -> int:
    """How many merged events' sources a replay keeps (:class:`MergeLog`): more than a Ray
    reader runs ahead of what the run consumed (a couple of chunks of ``batch_events``), so
    a run's report never has to merge the replay again."""
    return max(MergeLog.KEEP, 8 * data.batch_events)


class ReplaySources(ReplayReader):
    """Some of a replay's sources, each read on its own (not merged): what a shard's market
    data serves, by source and offset, to the coordinator, which merges every shard's sources
    with the replay's own merge (:func:`sapphire.data.replay.merge`), so the run sees the
    events in exactly the order of one :class:`ReplayFeed` over all of them."""

    def __init__(
        self,
        files: list[Path],
        instruments: dict[str, Instrument],
        venues: tuple[VenueFeed, ...],
        sessions: tuple[str, ...],
        cache: tuple[str, int] | None,
        wanted: tuple[int, ...],
        derive: frozenset[str] = frozenset(),
    ) -> None:
        self._all = replay_sources(files, instruments, venues)
        self._sessions = sessions
        self._derive = derive
        self.cache = open_cache(cache)
        self.wanted = wanted
        self._reports: dict[int, SourceReport] = {}
        # each source being read: its pairs and how many were given out so far
        self._reading: dict[int, tuple[Iterator[Tagged], int]] = {}

    def read(self, source: int, offset: int, count: int) -> list[Tagged]:
        """Source ``source``'s pairs ``offset`` .. ``offset + count - 1``. Any offset can be
        asked for again (a restored coordinator, a restarted reader): the source is reopened
        and fast-forwarded, deterministically."""
        pairs, at = self._reading.get(source, (None, -1))
        if pairs is None or at != offset:
            pairs = self._open(source)
            collections.deque(itertools.islice(pairs, offset), maxlen=0)
        got = list(itertools.islice(pairs, count))
        self._reading[source] = (pairs, offset + len(got))
        return got

    def _open(self, source: int) -> Iterator[Tagged]:
        if source not in self.wanted:
            raise ValueError(f"source {source} is not read here (this reader has {self.wanted})")
        stream, tagged, derived = open_source(
            self._all[source], self._sessions, self.cache, self._derive
        )
        report = self._reports[source] = SourceReport(stream, derived)
        return report.track(tagged)

    def report(self, taken: Mapping[int, int] | None) -> tuple[dict[str, int], list[str]]:
        """Rejected rows by reason in the pairs the run consumed of each of these sources
        (``taken``: per source; None: everything read so far), and the selected sessions
        none of it held (a run's missing ones are those every shard's reader names).

        Each source is read at least one pair past what was taken (reopened where this
        reader restarted and no longer holds it): a source whose every pair was taken is then
        known to be over, and the rows rejected after its last pair count, as they do where
        one reader merges it (``ReplayFeed.report``)."""
        if taken is None:
            states = [r.state(None) for r in self._reports.values()]
        else:
            states = []
            for source in self.wanted:
                n = taken.get(source, 0)
                at = self._reading.get(source, (None, -1))[1]
                if at <= n:  # never read here (-1), short of n, or exactly n
                    # one pair past what was taken (where this reader restarted, or gave
                    # out less, the source is reopened and fast-forwarded to it, unkept)
                    self.read(source, n, 1)
                states.append(self._reports[source].state(n))
        return merged_report(states, self._sessions)


def source_shards(config: SystemConfig, split: Shards) -> list[int] | None:
    """Each replay source's shard, where each shard's market data can read its own sources:
    a replay of several shards (not paced: one clock paces one reader) whose every source
    holds symbols of one shard only (a venue's files; a file of ``data.files`` may hold any
    symbol until read). None: one market data reads the merged replay."""
    data = config.data
    if split.count < 2 or data.source != "venues" or data.speed > 0:
        return None
    out: list[int] = []
    for source in replay_sources([], {}, tuple(venue_feeds(data))):
        symbols = source.run_symbols()
        owners = {split.shard_of.get(s) for s in symbols or ()}
        if len(owners) != 1 or None in owners:
            return None
        out.append(owners.pop())  # type: ignore[arg-type]
    return out


def sources_opener(
    data: DataConfig, instruments: dict[str, Instrument], wanted: tuple[int, ...]
) -> Callable[[], ReplaySources]:
    """Opens the sources ``wanted`` of a replay (a shard's market data), picklable."""
    return partial(
        ReplaySources,
        data_files(data) if data.source != "venues" else [],
        instruments,
        tuple(venue_feeds(data)) if data.source == "venues" else (),
        data.sessions,
        replay_cache_spec(data),
        wanted,
        derived_symbols(data, instruments),
    )


def derived_symbols(data: DataConfig, instruments: dict[str, Instrument]) -> frozenset[str]:
    """The run symbols whose quotes are derived from their depth (``data.derived_quotes``):
    under ``auto``, those no file of the run holds quotes of (each file that can hold them
    read from its start, ``quoted_symbols``). Decided here, once, by whoever wires the run:
    every reader of its sources (a Ray market data, a restored one) derives the same."""
    if data.derived_quotes == "off" or data.source == "ccxt":
        return frozenset()
    files = data_files(data) if data.source != "venues" else []
    venues = tuple(venue_feeds(data)) if data.source == "venues" else ()
    left = set(instruments)
    for source in replay_sources(files, instruments, venues):
        renames = source.renames or {s: s for s in source.instruments}
        wanted = [s for s, run in renames.items() if run in left]
        if not wanted:
            continue
        quoted = quoted_symbols(source.path, source.instruments, data.sessions, wanted)
        left -= {renames[s] for s in quoted}
        if not left:
            break
    return frozenset(left)


def replay_cache_spec(data: DataConfig) -> tuple[str, int] | None:
    """Where ``data.cache`` keeps converted replays (picklable: the Ray market-data actor
    opens its own cache on its node)."""
    if not data.cache:
        return None
    directory = data_path(data.cache_dir) if data.cache_dir else default_dir()
    return str(directory), data.cache_max_mb << 20


def replay_opener(data: DataConfig, instruments: dict[str, Instrument]) -> Callable[[], ReplayFeed]:
    """Checks every file here (it exists, its format is known) so that a bad path is one
    clear error before anything starts, not a failure inside an actor."""
    if data.source == "venues":
        feeds = tuple(venue_feeds(data))
        for i, (source, feed) in enumerate(zip(data.venues, feeds, strict=True)):
            for path in feed.files:
                try:
                    fmt = detect(path).name
                except DataFileError as exc:
                    raise WiringError(f"data.venues[{i}].files: {exc}") from None
                if source.format and fmt != source.format:
                    raise WiringError(
                        f"data.venues[{i}].files: {path} is {fmt}, not {source.format!r}"
                    )
        return partial(
            open_replay,
            [],
            instruments,
            data.clock,
            data.speed,
            feeds,
            data.sessions,
            replay_cache_spec(data),
            merge_log_keep(data),
            session_gaps(data),
            derived_symbols(data, instruments),
        )
    files = data_files(data)
    for path in files:
        try:
            detect(path)
        except DataFileError as exc:
            raise WiringError(f"data.files: {exc}") from None
    return partial(
        open_replay,
        files,
        instruments,
        data.clock,
        data.speed,
        (),
        data.sessions,
        replay_cache_spec(data),
        merge_log_keep(data),
        session_gaps(data),
        derived_symbols(data, instruments),
    )


def shards(config: SystemConfig, instruments: dict[str, Instrument]) -> Shards:
    """The run's shards (``SystemConfig.shards``), checked against the data and the agents."""
    try:
        return shards_of(config, list(instruments))
    except ShardError as exc:
        raise WiringError(str(exc)) from None


def market_data_kind(shard: int) -> str:
    """The Ray actor (name without the run id) of shard ``shard``'s market data (a replay
    read shard by shard, ``source_shards``; else the one ``market-data`` reads it all)."""
    return "market-data" if shard == 0 else f"market-data-{shard}"


def venue_kind(shard: int) -> str:
    """The Ray actor (name without the run id) of shard ``shard``'s venue."""
    return "execution" if shard == 0 else f"execution-{shard}"


def check_agents(config: SystemConfig, instruments: dict[str, Instrument]) -> frozenset[str]:
    """Checks the agents against the data (each built once on the legs of its shard, as
    its runner builds it, and dropped: the runner's ``agent_builder(..., checked=True)``
    does not build it again); returns the ids of those that ask a language model
    (:func:`asks_model`), whatever their kind is named. The firm's ``currency`` is checked
    against the data's instruments here too (:func:`firm_currency`): every runner checks
    its config here before anything runs."""
    firm_currency(config, instruments)
    asking: set[str] = set()
    for spec in config.agents:
        if spec.symbol not in instruments:
            raise WiringError(
                f"agent {spec.id}: symbol {spec.symbol!r} not in the data's instruments "
                f"{sorted(instruments)}"
            )
    run_shards = shards(config, instruments)
    for spec in config.agents:
        legs = run_shards.legs(spec.id, instruments)
        if not asks_model(checked_build(spec, instruments[spec.symbol], legs)):
            continue
        if spec.host:
            # its decisions arrive between steps through a bridge of its own actor
            raise WiringError(f"agent {spec.id}: an LLM agent cannot share a host")
        asking.add(spec.id)
    regime = config.risk.regime
    if regime.enabled and regime.classifier == "llm":
        from sapphire.agents.regime import regime_engine_config
        from sapphire.llm.engines import EngineError

        try:
            regime_engine_config(regime.llm)  # its model loads at the first evaluation
        except EngineError as exc:
            raise WiringError(str(exc)) from None
    return frozenset(asking)


def venue_params(exchange: ExchangeConfig) -> dict[str, Any]:
    """The paper venue's modelling assumptions, with the default latency where none is set:
    a latency block that leaves out ``entry_ns`` or ``response_ns`` gets the default's too
    (it got 0, which the kernel refuses: a block naming only ``feed_ns`` failed)."""
    params = dict(exchange.params)
    latency = params.get("latency")
    if latency is None:
        params["latency"] = dict(DEFAULT_LATENCY)
    elif isinstance(latency, dict):
        params["latency"] = {**DEFAULT_LATENCY, **latency}
    return params


def timing(config: SystemConfig) -> Timing:
    """The run's latencies, read from the venue model (``exchange.params.latency``)."""
    if config.exchange.kind == "ccxt" and not config.exchange.factory:
        # live: a window is what arrived; reports reach the system when they arrive
        return Timing(**{k: v for k, v in DEFAULT_LATENCY.items() if k != "kind"})
    raw = venue_params(config.exchange)["latency"]
    try:
        latency = msgspec.convert(raw, LatencyConfig)
    except msgspec.ValidationError as exc:
        raise WiringError(f"exchange.params.latency: {exc}") from None
    return Timing.from_latency(latency)


def window_ns(config: SystemConfig) -> int:
    """The run's window: ``data.window_ns`` (0 = the lookahead), checked against the timing."""
    return timing(config).window_ns(config.data.window_ns, approximate=config.data.approximate)


def paper_gateway_builder(
    exchange: ExchangeConfig,
    instruments: dict[str, Instrument],
    run_instruments: Mapping[str, Instrument] | None = None,
) -> Callable[[], ExecutionGateway]:
    """The paper venue of ``instruments`` (a shard's); ``run_instruments``: the whole run's,
    whose assets ``balances`` may name (one balances table serves every shard's venue)."""
    if exchange.factory:
        import_object(exchange.factory)  # a path that names nothing fails here, at wiring
        return partial(
            build_factory,
            exchange.factory,
            msgspec.structs.replace(exchange, params=venue_params(exchange)),
            instruments,
        )
    raw: dict[str, Any] = {"instruments": list(instruments.values()), **venue_params(exchange)}
    try:
        config = msgspec.convert(raw, PaperExchangeConfig, from_attributes=True)
    except (msgspec.ValidationError, ValueError) as exc:
        raise WiringError(f"exchange.params: {exc}") from None
    every = (run_instruments or instruments).values()
    assets = {a for i in every for a in (i.base, i.quote, i.settle_asset) if a}
    strays = sorted(set(config.balances) - assets)
    if strays and assets:  # a mistyped asset (USTD): every order then refused for balance
        raise WiringError(
            f"exchange.params.balances: {', '.join(strays)} is no asset of the run's "
            f"instruments ({', '.join(sorted(assets))})"
        )
    return partial(build_paper, config)


def firm_currency(config: SystemConfig, instruments: Mapping[str, Instrument]) -> str:
    """The firm's currency of a run of ``config`` on ``instruments``: the config's
    ``currency`` where set, else the rule's (``reporting_asset``). A ``currency`` that is
    no asset the instruments settle in or quote (a typo, BTX) is refused: no price of the
    run converts into it, so no capital share could be valued and every order would be
    refused at the first check, after the run had started. So is a currency (named or
    chosen) that some settlement asset has no price in (``unvalued``: the valuation's own
    rule): BTC- and ETH-settled options quoted in USD ran, and risk refused every order."""
    choices = currency_choices(instruments)
    if config.currency and config.currency not in choices:
        raise WiringError(
            f"currency: {config.currency!r} is no asset the instruments settle in or quote; "
            f'one of: {", ".join(choices) or "(no instruments)"}, or "" to choose by them'
        )
    currency = reporting_asset(instruments, config.currency)
    missing = unvalued(currency, instruments)
    if not missing:
        return currency
    names = ", ".join(missing)
    # an option's price is a premium, never a price of the asset it settles in
    why = f"no spot, perpetual or future of the run prices {names} in {currency}"
    valued = [c for c in choices if not unvalued(c, instruments)]
    fix = (
        f"one that values every settlement asset: {', '.join(valued)}"
        if valued
        else "no asset of the instruments values every settlement asset: run the instruments "
        f"of each settlement asset apart, or add one that prices {names} in {currency}"
    )
    if config.currency:
        chosen = reporting_asset(instruments)
        if chosen in valued:  # the rule finds one whenever one exists
            fix += f' ("" chooses {chosen})'
        raise WiringError(f"currency: {config.currency!r} cannot value {names}: {why}; {fix}")
    settles = ", ".join(sorted({i.settle_asset for i in instruments.values()}))
    raise WiringError(
        f"currency: not set; chosen from the instruments (settled in {settles}) it is "
        f"{currency}, which cannot value {names}: {why}; {fix}"
    )


def build_core(config: SystemConfig, instruments: dict[str, Instrument]) -> CoordinatorCore:
    core = CoordinatorCore(
        instruments,
        config.risk,
        Decimal(config.capital_quote),
        {a.id: a.weight for a in config.agents},
        config.aggregation,
        crossing=config.coordinator.crossing,
        # crosses are booked when the order would have reached the venue
        entry_ns=timing(config).entry_ns if config.coordinator.crossing == "internal" else 0,
        order_memory_ns=int(config.coordinator.finished_order_memory_s * 1e9),
        currency=firm_currency(config, instruments),
    )
    return core
