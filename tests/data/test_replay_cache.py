"""The converted-replay cache: a stream read back from it gives the file's own pairs, with its
rejection counts and sessions changing at the same points, whether the entry is whole, a
prefix a stopped run left, damaged, or could not be written at all."""

from __future__ import annotations

import gzip
import itertools
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.config.system import parse_config
from sapphire.data import replay_cache
from sapphire.data.registry import stream_events
from sapphire.data.replay_cache import CachedStream, ReplayCache
from sapphire.data.sample import sample_instrument, sample_paths
from sapphire.data.stream import EventStream
from sapphire.kernel.runner import InProcessKernel


def corrupted_trades(tmp_path: Path) -> Path:
    """The sample's trades with bad rows spread through: every kind of change of the
    stream's counts lands between pairs, in several frames."""
    lines = gzip.decompress(sample_paths().trades.read_bytes()).decode().splitlines()
    out = [lines[0]]
    for i, line in enumerate(lines[1:], start=1):
        if i % 97 == 0:
            cells = line.split(",")
            cells[5] = "nan"  # price
            out.append(",".join(cells))
        if i % 301 == 0:
            out.append("garbage,row")
        out.append(line)
    path = tmp_path / sample_paths().trades.name
    path.write_bytes(gzip.compress(("\n".join(out) + "\n").encode()))
    return path


def opener(path: Path, sessions: list[str] | None = None) -> Any:
    def source() -> EventStream:
        stream = stream_events(path, sample_instrument())
        if sessions:
            stream.select_sessions(sessions)
        return stream

    return source


def cached(cache: ReplayCache, path: Path, sessions: list[str] | None = None) -> CachedStream:
    key = cache.key(path, sample_instrument(), sessions)
    assert key is not None
    return cache.stream(key, path, opener(path, sessions))


def state(stream: Any) -> tuple[dict[str, int], list[str]]:
    return {str(k): v for k, v in stream.stats.counts.items()}, sorted(stream.sessions_seen)


def walk(stream: Any, stop: int | None = None) -> list[tuple[Any, Any]]:
    """Each pair with the stream's reported state right after it was given, then the state
    after the end (``stop``: the consumer gives up after that many pairs)."""
    out = []
    pairs = stream.tagged()
    for pair in itertools.islice(pairs, stop):
        out.append((pair, state(stream)))
    if stop is None:
        out.append((None, state(stream)))
    pairs.close()
    return out


@pytest.fixture
def small_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_cache, "FRAME_EVENTS", 256)


def test_a_cached_stream_is_the_file_pair_by_pair(tmp_path: Path, small_frames: None) -> None:
    path = corrupted_trades(tmp_path)
    plain = walk(opener(path)())
    counts = plain[-1][1][0]
    assert counts["malformed"] > 10 and counts["non_finite"] > 10  # it counts
    cache = ReplayCache(tmp_path / "cache")
    assert walk(cached(cache, path)) == plain  # the first run: read from the file, recorded
    assert cache.stats.misses == 1 and cache.stats.written == 1
    assert walk(cached(cache, path)) == plain  # the next: from the entry alone
    assert cache.stats.hits == 1


def test_a_stopped_run_leaves_a_prefix_the_next_run_continues(
    tmp_path: Path, small_frames: None
) -> None:
    path = corrupted_trades(tmp_path)
    plain = walk(opener(path)())
    cache = ReplayCache(tmp_path / "cache")
    assert walk(cached(cache, path), stop=1000) == plain[:1000]
    assert cache.stats.written == 1  # the prefix, committed when the consumer let go
    assert walk(cached(cache, path), stop=1500) == plain[:1500]  # a longer prefix
    assert walk(cached(cache, path)) == plain  # prefix, then the file, counted as before
    assert cache.stats.prefixes == 2 and cache.stats.written == 3
    assert walk(cached(cache, path)) == plain
    assert cache.stats.hits == 1


def test_a_damaged_entry_is_read_up_to_its_last_good_frame(
    tmp_path: Path, small_frames: None
) -> None:
    path = corrupted_trades(tmp_path)
    plain = walk(opener(path)())
    cache = ReplayCache(tmp_path / "cache")
    walk(cached(cache, path))
    (entry,) = (tmp_path / "cache").glob("*.replay")
    blob = bytearray(entry.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    entry.write_bytes(bytes(blob))
    assert walk(cached(cache, path)) == plain
    assert cache.stats.damaged == 1 and cache.stats.prefixes == 1
    assert walk(cached(cache, path)) == plain  # rewritten whole by the run before
    assert cache.stats.hits == 1


def test_a_cache_that_cannot_be_written_costs_only_speed(tmp_path: Path) -> None:
    path = corrupted_trades(tmp_path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    cache = ReplayCache(blocker / "cache")
    assert walk(cached(cache, path)) == walk(opener(path)())
    assert cache.stats.write_errors == 1 and cache.stats.written == 0


def test_the_key_changes_with_the_file_the_instrument_and_the_sessions(tmp_path: Path) -> None:
    path = corrupted_trades(tmp_path)
    cache = ReplayCache(tmp_path / "cache")
    inst = sample_instrument()
    key = cache.key(path, inst, None)
    assert key is not None and key == cache.key(path, inst, None)
    assert cache.key(path, inst, ["2024-08-08"]) != key
    assert cache.key(path, msgspec.structs.replace(inst, taker_fee_bps="4"), None) != key
    path.write_bytes(path.read_bytes() + gzip.compress(b""))  # same rows, another file
    assert cache.key(path, inst, None) != key
    assert cache.key(tmp_path / "missing.csv.gz", inst, None) is None
    # a link under another name (a loader reads the session label from the name): its own
    # entry, never the target's events under the target's labels
    alias = tmp_path / "alias_2024-08-09.csv.gz"
    alias.symlink_to(path)
    assert cache.key(alias, inst, None) not in (None, cache.key(path, inst, None))


def test_eviction_keeps_the_directory_under_its_cap(tmp_path: Path, small_frames: None) -> None:
    cache = ReplayCache(tmp_path / "cache", max_bytes=1)
    path = corrupted_trades(tmp_path)
    walk(cached(cache, path))
    assert list((tmp_path / "cache").glob("*.replay")) == []  # over the cap: evicted at once
    assert cache.stats.written == 1


def test_a_backtest_from_the_cache_trades_and_reports_as_from_the_files(tmp_path: Path) -> None:
    """The kernel on the sample with a corrupted trades file, cold then warm: the same
    trading, rejection counts and stored rows."""
    paths = sample_paths()
    raw: dict[str, Any] = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "configs" / "demo.yaml").read_text()
    )
    raw["data"] = {
        "source": "files",
        "files": [str(paths.depth), str(corrupted_trades(tmp_path)), str(paths.bbo)],
        "instrument_files": [str(sample_paths().depth.parent / "instrument.json")],
        "cache_dir": str(tmp_path / "cache"),
    }
    raw["storage"]["root"] = str(tmp_path / "store")

    def run(name: str) -> tuple[Any, ...]:
        kernel = InProcessKernel(parse_config(raw), name)
        kernel.run()
        summary = kernel.summary()
        rows = {t: f.drop("run_id") for t, f in kernel.coordinator.rows.take_new().items()}
        assert kernel.feed.cache is not None
        return (
            summary["fills"],
            summary["agents"],
            summary["input_rejected"],
            summary["risk_rejections"],
            rows,
        ), msgspec.structs.asdict(kernel.feed.cache.stats)

    cold, cold_stats = run("cold")
    warm, warm_stats = run("warm")
    assert cold_stats["misses"] == 3 and warm_stats["hits"] == 3
    assert cold[0] > 0 and cold[2]["malformed"] > 0
    assert cold[:4] == warm[:4]
    assert cold[4].keys() == warm[4].keys()
    for table in cold[4]:
        assert cold[4][table].equals(warm[4][table]), table


def test_the_data_cache_command_lists_and_clears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sapphire.cli import main

    monkeypatch.setenv("SAPPHIRE_CACHE_DIR", str(tmp_path / "cache"))
    path = corrupted_trades(tmp_path)
    cache = ReplayCache(replay_cache.default_dir())
    walk(cached(cache, path), stop=10)  # a prefix
    walk(cached(cache, sample_paths().bbo))  # a whole file
    assert main(["data", "cache"]) == 0
    out = capsys.readouterr().out
    assert "entries: 2" in out
    assert "10 events" in out and "prefix" in out and str(path) in out
    assert "complete" in out and str(sample_paths().bbo) in out
    assert main(["data", "cache", "--clear"]) == 0
    assert "2 files removed" in capsys.readouterr().out
    assert list((tmp_path / "cache").iterdir()) == []
    # a cache dir that is a file is no empty cache: runs count their writes there as errors
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("SAPPHIRE_CACHE_DIR", str(tmp_path / "afile"))
    assert main(["data", "cache"]) == 2
    err = capsys.readouterr().err
    assert "afile" in err and "not a folder" in err


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    frame=st.integers(min_value=1, max_value=400),
    stops=st.lists(st.integers(min_value=0, max_value=3600), max_size=3),
)
def test_any_frame_size_and_any_stops_give_the_files_pairs_and_counts(
    tmp_path_factory: pytest.TempPathFactory, frame: int, stops: list[int]
) -> None:
    """Runs that stop anywhere, one after another on one cache, then a whole run and a run
    from the finished entry: each sees exactly what the file gives, state after every pair."""
    tmp_path = tmp_path_factory.mktemp("prop")
    path = corrupted_trades(tmp_path)
    plain = walk(opener(path)())
    original = replay_cache.FRAME_EVENTS
    replay_cache.FRAME_EVENTS = frame
    try:
        cache = ReplayCache(tmp_path / "cache")
        for stop in stops:
            given_pairs = min(stop, len(plain) - 1)  # plain ends with the after-the-end state
            assert walk(cached(cache, path), stop=stop) == plain[:given_pairs]
        assert walk(cached(cache, path)) == plain
        assert walk(cached(cache, path)) == plain
        assert cache.stats.hits >= 1
    finally:
        replay_cache.FRAME_EVENTS = original


def test_a_full_disk_mid_recording_ends_the_recording_not_the_run(
    tmp_path: Path, small_frames: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = corrupted_trades(tmp_path)
    plain = walk(opener(path)())
    calls = {"n": 0}
    flush = replay_cache._Recorder._flush

    def full_disk(self: Any, *, last: bool) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # a few frames in
            raise OSError(28, "No space left on device")
        flush(self, last=last)

    monkeypatch.setattr(replay_cache._Recorder, "_flush", full_disk)
    cache = ReplayCache(tmp_path / "cache")
    assert walk(cached(cache, path)) == plain
    assert cache.stats.write_errors == 1 and cache.stats.written == 0
    assert list((tmp_path / "cache").iterdir()) == []  # no entry, no temporary file left


@pytest.mark.parametrize("field", ["last", "size"])
def test_a_damaged_frame_prefix_is_caught_too(
    tmp_path: Path, small_frames: None, field: str
) -> None:
    """The CRC covers each frame's count, size and last flag: a first frame flagged last
    must not pass for a whole entry, nor a size past the file's end be read."""
    path = corrupted_trades(tmp_path)
    plain = walk(opener(path)())
    cache = ReplayCache(tmp_path / "cache")
    walk(cached(cache, path))
    (entry,) = (tmp_path / "cache").glob("*.replay")
    blob = bytearray(entry.read_bytes())
    (header_len,) = replay_cache._HEADER.unpack_from(blob, len(replay_cache.MAGIC))
    first = len(replay_cache.MAGIC) + replay_cache._HEADER.size + header_len
    if field == "last":
        blob[first + 12] = 1
    else:
        blob[first + 4 : first + 8] = (0xFFFFFFF0).to_bytes(4, "little")
    entry.write_bytes(bytes(blob))
    assert walk(cached(cache, path)) == plain
    assert cache.stats.damaged == 1 and cache.stats.hits == 0
    assert walk(cached(cache, path)) == plain  # the damaged entry was replaced
    assert cache.stats.hits == 1


def test_the_same_size_and_time_with_other_rows_is_another_key(tmp_path: Path) -> None:
    """A file rewritten with rows of the same length and its old modification time put
    back (``cp -p``, ``rsync -a``): its change time differs, so the old entry is not used."""
    path = corrupted_trades(tmp_path)
    cache = ReplayCache(tmp_path / "cache")
    inst = sample_instrument()
    key = cache.key(path, inst, None)
    before = path.stat()
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert cache.key(path, inst, None) != key


def test_a_stream_opened_after_the_cache_closed_reads_without_recording(
    tmp_path: Path, small_frames: None
) -> None:
    """A run's report may reopen a source after the run closed its cache (to read one event
    past what it consumed): that stream reads as usual but leaves no temporary file behind,
    since no later close would commit it."""
    path = corrupted_trades(tmp_path)
    plain = walk(opener(path)())
    cache = ReplayCache(tmp_path / "cache")
    cache.close()
    assert walk(cached(cache, path)) == plain
    assert cache.stats.misses == 1 and cache.stats.written == 0
    assert list((tmp_path / "cache").glob("*")) == []
