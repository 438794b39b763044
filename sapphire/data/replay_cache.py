"""Converted replays: each recorded file's checked event stream, kept once in a local cache and
read back at msgspec speed by the next run of the same data.

Why: a replay spends most of its loading time decoding CSV and building and checking one
Python event per row (3-4 us an event); reading the same events back from msgpack frames
takes 0.4-0.7 us with the lz4 block (RESULTS.md). A user runs the same files many times
(parameter sweeps, walk-forward windows, reruns after a change of agent), and hftbacktest
itself replays files converted in advance. Here the conversion is a side effect of the first
run, not a separate step.

What is cached is exactly what the replay read of the file (:meth:`EventStream.tagged`, each
depth message's levels as one ``BookDeltas``: ``sapphire.data.replay.GroupedStream``): the
``(session, event)`` pairs in order, plus where the stream's rejection counts and selected
sessions changed (``Mark``: "before pair k, the state was"). Read back, the stream gives
the same pairs and its ``stats.counts`` / ``sessions_seen`` change at the same points, so a
run stopped at any event reports the same rejections as the run that wrote the cache. (The
row tallies of ``sapphire data inspect`` are not carried: runs report the counts per reason.)

An entry's key is the file (resolved path, size, modification and change times, inode), the
instruments and sessions it was read with, a digest of the loaders' source code and the
parsing libraries' versions, so editing a file, its instrument or the loader code is never
answered from an old entry. A run that stops before a file's end leaves a prefix; the next
run reads the prefix, then opens the file itself, counts its way through the rows already
given (the rejection counts come out as before) and goes on, writing a longer entry. A
damaged entry (each frame carries a CRC of its count, size, last flag and bytes) is read up
to its last good frame, the same way, and replaced. Entries are written to a temporary file
and renamed: concurrent runs never see half an entry. A cache that cannot be written (full
disk, read-only) costs the run its speed-up, never its data.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import itertools
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

import lz4.block
import msgspec

from sapphire.data.convert import Tagged
from sapphire.data.validation import STATE_CHANGES, RejectStats, RowReject
from sapphire.model import Instrument
from sapphire.model.events import AnyMarketEvent, BookDeltas

CACHE_VERSION = 1
MAGIC = b"SAPPHIRE-REPLAY\x01"
SUFFIX = ".replay"
FRAME_EVENTS = 16_384  # rows per frame (a BookDeltas counts its levels): one decode, one lz4 block
# A frame's prefix: events, compressed bytes, CRC, last frame. The CRC covers the count, size
# and last flag as well as the bytes: a flipped flag must not pass for a complete entry.
_PREFIX = struct.Struct("<IIIB")
_HEADER = struct.Struct("<I")  # bytes of the msgpack header (``Header``) after MAGIC
# A temporary file untouched this long was left by a run that died (a live recording writes
# a frame every 16,384 events, so even a paced replay touches it far more often).
STALE_TMP_S = 86_400.0
ENV_DIR = "SAPPHIRE_CACHE_DIR"


class Mark(msgspec.Struct, array_like=True, frozen=True):
    """The stream's reported state as it was before pair ``at`` was given (``at`` = the
    stream's length: after its last pair, once it ended)."""

    at: int
    counts: dict[str, int]
    seen: list[str]


class Header(msgspec.Struct, frozen=True):
    """For people (``sapphire data cache``): the file an entry was converted from."""

    source: str


class Frame(msgspec.Struct, array_like=True):
    events: list[AnyMarketEvent]
    sessions: list[tuple[int, str]]  # run-length: (pairs, session label), in order
    marks: list[Mark]


_encode = msgspec.msgpack.Encoder().encode
_decode_frame = msgspec.msgpack.Decoder(Frame).decode


class Source(Protocol):
    """What the replay merge reads of a file's stream: :class:`EventStream`, or
    :class:`CachedStream` standing in for it."""

    @property
    def path(self) -> Path: ...

    @property
    def stats(self) -> RejectStats: ...

    @property
    def sessions_seen(self) -> set[str]: ...

    def tagged(self) -> Iterator[Tagged]: ...


_PARSERS = ("polars", "pyarrow", "msgspec", "numpy")


@functools.cache
def code_digest() -> str:
    """The loaders' and the event model's source, and the versions of the libraries that
    parse the files: a change to any is another key."""
    h = hashlib.sha256()
    for name in _PARSERS:
        h.update(f"{name}={importlib.metadata.version(name)}".encode())
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent / "model"):
        for path in sorted(folder.rglob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def default_dir() -> Path:
    """``$SAPPHIRE_CACHE_DIR``, else ``$XDG_CACHE_HOME/sapphire/replay`` (``~/.cache``)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sapphire" / "replay"


class CacheStats(msgspec.Struct, kw_only=True):
    """What a run's cache did, for its summary."""

    hits: int = 0  # streams read whole from an entry
    prefixes: int = 0  # streams read from an entry that ended early, then from the file
    misses: int = 0  # streams read from the file (and written)
    written: int = 0  # entries committed
    damaged: int = 0  # entries with a bad frame (read up to it)
    write_errors: int = 0  # entries that could not be written (the run went on without)


class ReplayCache:
    """A directory of converted streams, at most ``max_bytes`` (oldest used evicted)."""

    def __init__(self, directory: Path, *, max_bytes: int = 4 << 30) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._open: list[_Recorder] = []
        self._closed = False

    def key(
        self,
        path: Path,
        instruments: Instrument | Mapping[str, Instrument],
        sessions: Iterable[str] | None,
    ) -> str | None:
        """The entry's name for ``path`` read with ``instruments`` and ``sessions``; None when
        the file cannot be looked at (the stream itself will then say why)."""
        try:
            st = path.stat()
            resolved = str(path.resolve())
            # the path as given too: a loader reads the session label and the format from
            # the name (and a folder named ``liquidations``), which a symlink may change
            given = str(path.absolute())
        except OSError:
            return None
        insts = (
            instruments
            if isinstance(instruments, Instrument)
            else {k: instruments[k] for k in sorted(instruments)}
        )
        blob = _encode(
            [
                CACHE_VERSION,
                code_digest(),
                resolved,
                given,
                # size and times, and the inode: a file rewritten in place, or replaced by
                # one of the same size and modification time (``cp -p``, ``rsync -a``), has
                # another change time or inode
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
                st.st_dev,
                msgspec.to_builtins(insts),
                sorted(sessions) if sessions is not None else None,
            ]
        )
        return hashlib.sha256(blob).hexdigest()[:40]

    def stream(self, key: str, path: Path, open_source: Callable[[], Source]) -> CachedStream:
        return CachedStream(self, key, path, open_source)

    def entry(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def close(self) -> None:
        """Commit what unfinished streams gave so far (a run that stopped before the data's
        end): the next run starts from that prefix."""
        for recorder in list(self._open):
            recorder.commit(complete=False)
        self._open.clear()
        # what is read after this (a run's report, reading one event past what it consumed)
        # is not recorded: no later close would commit it, and its temporary file would stay
        self._closed = True

    # -- writing --------------------------------------------------------------------------
    def _recorder(self, key: str, source: Path) -> _Recorder | None:
        if self._closed:
            return None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            recorder = _Recorder(self, key, source)
        except OSError:
            self.stats.write_errors += 1
            return None
        self._open.append(recorder)
        return recorder

    def _committed(self, recorder: _Recorder) -> None:
        if recorder in self._open:
            self._open.remove(recorder)
        self.stats.written += 1
        self._evict()

    def _evict(self) -> None:
        """Oldest-used entries out until the directory fits ``max_bytes``; temporary files
        of runs that died long ago out too."""
        # another run may be evicting the same directory: a file gone meanwhile is skipped
        now = time.time()
        entries = []
        try:
            listing = list(self.directory.iterdir())
        except OSError:
            return
        for p in listing:
            try:
                st = p.stat()
                if p.suffix == SUFFIX:
                    entries.append((st.st_mtime, st.st_size, p))
                elif p.name.endswith(".tmp") and now - st.st_mtime > STALE_TMP_S:
                    p.unlink(missing_ok=True)
            except OSError:
                continue
        total = sum(size for _, size, _ in entries)
        for _, size, p in sorted(entries):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                p.unlink(missing_ok=True)
            total -= size


def _state(stats: RejectStats, seen: set[str], at: int) -> Mark:
    return Mark(at, {str(r): n for r, n in stats.counts.items()}, sorted(seen))


class _Recorder:
    """Writes one stream's pairs and marks, frame by frame, to a temporary file. A write that
    fails (a full disk) ends the recording, never the stream: the run goes on uncached."""

    def __init__(self, cache: ReplayCache, key: str, source: Path) -> None:
        self.cache = cache
        self.final = cache.entry(key)
        fd, name = tempfile.mkstemp(prefix=f"{key}.", suffix=".tmp", dir=cache.directory)
        self.tmp = Path(name)
        self._fh = os.fdopen(fd, "wb")
        try:
            header = _encode(Header(str(source)))
            self._fh.write(MAGIC + _HEADER.pack(len(header)) + header)
        except OSError:
            self._discard()
            raise
        self.count = 0  # pairs written (flushed or buffered)
        self._events: list[AnyMarketEvent] = []
        self._labels: list[str] = []
        self._rows = 0  # rows buffered (a frame holds about FRAME_EVENTS)
        self._marks: list[Mark] = []
        self.done = False

    def add(self, session: str, event: AnyMarketEvent) -> None:
        if self.done:
            return
        self._events.append(event)
        self._labels.append(session)
        self.count += 1
        self._rows += len(event.levels) if type(event) is BookDeltas else 1
        if self._rows >= FRAME_EVENTS:
            try:
                self._flush(last=False)
            except Exception:  # a full disk, or anything the encoders refuse: not the run's
                self.cache.stats.write_errors += 1
                self.abandon()

    def mark(self, mark: Mark) -> None:
        if not self.done:
            self._marks.append(mark)

    def _flush(self, *, last: bool) -> None:
        runs = [(len(list(g)), label) for label, g in itertools.groupby(self._labels)]
        body = bytes(
            lz4.block.compress(_encode(Frame(self._events, runs, self._marks)), store_size=True)
        )
        n = len(self._events)
        self._fh.write(_PREFIX.pack(n, len(body), _frame_crc(n, last, body), last))
        self._fh.write(body)
        self._events, self._labels, self._marks = [], [], []
        self._rows = 0

    def commit(self, *, complete: bool) -> None:
        """Publish the entry unless one at least as long is there already."""
        if self.done:
            return
        self.done = True
        try:
            self._flush(last=complete)
            self._fh.close()
            if complete or self.count > _entry_length(self.final):
                os.replace(self.tmp, self.final)
                self.cache._committed(self)
                return
        except Exception:  # as in ``add``: the entry is lost, never the run
            self.cache.stats.write_errors += 1
        self.abandon()

    def abandon(self) -> None:
        self.done = True
        self._events, self._labels, self._marks = [], [], []
        self._discard()
        if self in self.cache._open:
            self.cache._open.remove(self)

    def _discard(self) -> None:
        with contextlib.suppress(OSError):  # closing flushes: a full disk fails here too
            self._fh.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)


def _frame_crc(events: int, last: bool | int, body: bytes) -> int:
    """A frame's CRC: its prefix (count, size, last flag; the CRC field zero) and body."""
    return zlib.crc32(body, zlib.crc32(_PREFIX.pack(events, len(body), 0, last)))


def _scan(path: Path) -> tuple[Header | None, int, bool]:
    """An entry's header, pairs and whether it is complete, from its frames' prefixes
    alone (no frame is decoded); no header: not an entry."""
    try:
        with open(path, "rb") as fh:
            header = _read_header(fh, os.fstat(fh.fileno()).st_size)
            if header is None:
                return None, 0, False
            n = 0
            while len(head := fh.read(_PREFIX.size)) == _PREFIX.size:
                events, size, _, last = _PREFIX.unpack(head)
                n += events
                if last:
                    return header, n, True
                fh.seek(size, os.SEEK_CUR)
            return header, n, False
    except OSError:
        return None, 0, False


def _entry_length(path: Path) -> int:
    """Pairs in an entry (-1: none there; complete: longer than any prefix)."""
    header, n, complete = _scan(path)
    if header is None:
        return -1
    return 1 << 62 if complete else n


def _read_header(fh: BinaryIO, end: int) -> Header | None:
    """Past MAGIC and the header; None when the file is not an entry (``end``: its size)."""
    if fh.read(len(MAGIC)) != MAGIC:
        return None
    head = fh.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    if size > end - fh.tell():
        return None
    try:
        return msgspec.msgpack.decode(fh.read(size), type=Header)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class EntryInfo(msgspec.Struct, frozen=True):
    path: Path
    source: str
    bytes: int
    events: int
    complete: bool


def entries(directory: Path) -> list[EntryInfo]:
    """The entries in ``directory``, newest used first (``sapphire data cache``)."""
    found = []
    for path in directory.glob(f"*{SUFFIX}"):
        try:
            st = path.stat()
        except OSError:
            continue  # removed by another run meanwhile
        header, n, complete = _scan(path)
        source = header.source if header is not None else "(not an entry)"
        found.append((st.st_mtime, EntryInfo(path, source, st.st_size, n, complete)))
    return [info for _, info in sorted(found, key=lambda f: f[0], reverse=True)]


def clear(directory: Path) -> int:
    """Remove every entry and temporary file; returns how many files went."""
    gone = 0
    for path in [*directory.glob(f"*{SUFFIX}"), *directory.glob("*.tmp")]:
        path.unlink(missing_ok=True)
        gone += 1
    return gone


def _frames(path: Path, damaged: Callable[[], None]) -> Iterator[tuple[Frame, bool]]:
    """The entry's frames in order with their ``last`` flag; stops at the first bad one
    (calling ``damaged``): a short or oversized frame, a CRC that does not match, a body
    that does not decode. Nothing raised here reaches the run."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below; the generator may be dropped)
    except OSError:
        return
    try:
        end = os.fstat(fh.fileno()).st_size
        if _read_header(fh, end) is None:
            damaged()
            return
        while head := fh.read(_PREFIX.size):
            if len(head) < _PREFIX.size:
                damaged()
                return
            events, size, crc, last = _PREFIX.unpack(head)
            if size > end - fh.tell():
                damaged()  # a size no frame of this file can have: never read it
                return
            body = fh.read(size)
            if len(body) < size or _frame_crc(events, last, body) != crc:
                damaged()
                return
            try:
                frame = _decode_frame(lz4.block.decompress(body))
            except Exception:  # lz4, msgpack or validation errors: a bad frame
                damaged()
                return
            if len(frame.events) != events:
                damaged()
                return
            yield frame, bool(last)
            if last:
                return
    except OSError:
        damaged()
    finally:
        fh.close()


class CachedStream:
    """Stands in for a file's :class:`EventStream`: the same pairs and reported state, read
    from the cache where an entry has them, from the file (recorded) where not."""

    def __init__(
        self, cache: ReplayCache, key: str, path: Path, open_source: Callable[[], Source]
    ) -> None:
        self.cache = cache
        self.key = key
        self.path = path
        self._open_source = open_source
        self._live: Source | None = None
        self._stats = RejectStats(source=str(path))
        self._seen: set[str] = set()
        self._used = False

    @property
    def stats(self) -> RejectStats:
        return self._live.stats if self._live is not None else self._stats

    @property
    def sessions_seen(self) -> set[str]:
        return self._live.sessions_seen if self._live is not None else self._seen

    def tagged(self) -> Iterator[Tagged]:
        if self._used:
            raise RuntimeError(f"{self.path}: an EventStream can be consumed once")
        self._used = True
        entry = self.cache.entry(self.key)
        given = 0
        stats = self.cache.stats
        # never raises: an unreadable cache is a miss. Counted when the stream starts (a run
        # that stops early still says what it read from where).
        header, _, complete = _scan(entry) if os.path.isfile(entry) else (None, 0, False)
        if header is None:
            stats.misses += 1
        else:
            if complete:
                stats.hits += 1
            else:
                stats.prefixes += 1
            bad = False

            def damaged() -> None:
                nonlocal bad
                bad = True

            for frame, last in _frames(entry, damaged):
                given += len(frame.events)
                yield from self._replay(frame, given)
                if last:
                    _touch(entry)
                    return
            if bad:
                stats.damaged += 1
                if complete:  # it was read in part after all
                    stats.hits -= 1
                    stats.prefixes += 1
                # never read again: the recording below (from the file) replaces it
                with contextlib.suppress(OSError):
                    entry.unlink()
        yield from self._from_source(given)

    def _replay(self, frame: Frame, end: int) -> Iterator[Tagged]:
        events = frame.events
        start = end - len(events)
        labels = (
            itertools.repeat(frame.sessions[0][1], len(events))
            if len(frame.sessions) == 1
            else itertools.chain.from_iterable(
                itertools.repeat(label, n) for n, label in frame.sessions
            )
        )
        # the reported state changes before the pair a mark names
        cut = 0
        pairs = zip(labels, events, strict=True)
        for mark in frame.marks:
            upto = mark.at - start
            yield from itertools.islice(pairs, upto - cut)
            cut = upto
            self._apply(mark)
        yield from pairs

    def _apply(self, mark: Mark) -> None:
        self._stats.counts = {RowReject(r): n for r, n in mark.counts.items()}
        self._seen.clear()
        self._seen.update(mark.seen)
        STATE_CHANGES[0] += 1

    def _from_source(self, skip: int) -> Iterator[Tagged]:
        """The file itself from its start, recorded; its first ``skip`` pairs were given
        already (read again so that its counts are the file's own up to there)."""
        source = self._open_source()
        recorder = self.cache._recorder(self.key, self.path)
        pairs = source.tagged() if recorder is None else _recorded(source, recorder)
        if skip:
            for _ in itertools.islice(pairs, skip):
                pass
        self._live = source
        yield from pairs


def _recorded(source: Source, recorder: _Recorder) -> Iterator[Tagged]:
    stats, seen = source.stats, source.sessions_seen
    counts: dict[RowReject, int] = {}
    n_seen = 0
    add = recorder.add
    i = 0
    try:
        for session, event in source.tagged():
            if stats.counts != counts or len(seen) != n_seen:
                recorder.mark(_state(stats, seen, i))
                counts, n_seen = dict(stats.counts), len(seen)
            add(session, event)
            i += 1
            yield session, event
        if stats.counts != counts or len(seen) != n_seen:
            recorder.mark(_state(stats, seen, i))
    except GeneratorExit:
        # the run stopped before the file's end: what it was given is a prefix worth keeping
        recorder.commit(complete=False)
        raise
    except BaseException:
        # a failed read (a damaged file) is the run's error; a half entry is not kept
        recorder.abandon()
        raise
    recorder.commit(complete=True)


def _touch(path: Path) -> None:
    """Used now: eviction takes the oldest-used entries first."""
    with contextlib.suppress(OSError):
        os.utime(path)
