"""Checks every per-venue loader test makes, written once.

Each venue test keeps what is specific to its venue (README counts, checksums, sequence
rules); the checks here are the contract all loaders share: README time ranges, the rebuilt
book against a plain dict after every message, truncated and fuzzed bytes as counted rejects,
detection by content and ``sapphire data inspect``.
"""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sapphire.book.l2 import DeltaResult, L2Book
from sapphire.cli import main
from sapphire.data.cryptofeed import sniff_venue, venue_line_parser
from sapphire.data.hftbacktest_raw import chunked
from sapphire.data.registry import detect, stream_events
from sapphire.data.validation import DataFileError, RejectStats, RowReject
from sapphire.model.events import BookDelta, BookSnapshot, Side

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Plain = tuple[dict[int, int], dict[int, int]]  # bids, asks: price ticks -> qty lots


def utc(ns: int, fmt: str = "%H:%M:%S.%f") -> str:
    """A time as the README writes it (UTC)."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime(fmt)


def log_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def write_log(tmp: Path, name: str, lines: list[str]) -> Path:
    path = tmp / name
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def handler_pass(handler: Any, path: Path) -> RejectStats:
    """Run one venue handler over a cryptofeed log (for its own statistics)."""
    stats = RejectStats()
    for _ in chunked(path, stats, venue_line_parser(handler, "s")):
        pass
    return stats


def check_rebuilt_books(
    events: Iterable[object],
    *,
    two_sided: bool = False,
    absent_deletes: bool = False,
    after_message: Callable[[str, Plain, L2Book], None] | None = None,
) -> int:
    """Rebuild every book with L2Book and with a plain dict (no crossing rule) and return how
    many complete messages were checked.

    Every delta must apply and chain onto the previous message; after every complete message
    neither book is crossed and, with both sides present, the L2Book top of book equals the
    plain one. ``two_sided``: both sides must be present after every message.
    ``absent_deletes``: a delete may name a level the book does not hold.
    """
    books: dict[str, L2Book] = {}
    plain: dict[str, Plain] = {}
    checked = 0
    for event in events:
        if isinstance(event, BookSnapshot):
            books[event.symbol] = L2Book(event.symbol)
            books[event.symbol].apply_snapshot(event)
            plain[event.symbol] = (dict(event.bids), dict(event.asks))
        elif isinstance(event, BookDelta):
            assert books[event.symbol].apply_delta(event) is DeltaResult.APPLIED
            side = plain[event.symbol][0 if event.side is Side.BUY else 1]
            if event.qty_lots:
                side[event.price_ticks] = event.qty_lots
            else:
                assert side.pop(event.price_ticks, None) is not None or absent_deletes
            if event.last_in_batch:
                bids, asks = plain[event.symbol]
                book = books[event.symbol]
                assert not book.is_crossed()
                if two_sided:
                    assert bids and asks
                if bids and asks:
                    assert max(bids) < min(asks)
                    assert book.best_bid() == (max(bids), bids[max(bids)])
                    assert book.best_ask() == (min(asks), asks[min(asks)])
                if after_message is not None:
                    after_message(event.symbol, (bids, asks), book)
                checked += 1
    assert all(b.gaps == b.stale == b.rejected == 0 for b in books.values())
    return checked


def check_truncations(src: Path, tmp: Path, fraction: float, last_line_cut: int | None) -> None:
    """A gzip stream cut mid-member ends with counted malformed rows, never a traceback.

    ``last_line_cut``: also cut the decompressed text so that its last JSON line breaks in
    two (0: at half the text; n > 0: n bytes before the end, trailing newlines dropped), which
    must be exactly one malformed row.
    """
    raw = src.read_bytes()
    cut = tmp / src.name
    cut.write_bytes(raw[: int(len(raw) * fraction)])
    stream = stream_events(cut)
    assert list(stream) and stream.stats.balanced()
    counts = stream.stats.counts
    assert counts.get(RowReject.MALFORMED, 0) + counts.get(RowReject.TRUNCATED, 0) >= 1
    if last_line_cut is None:
        return
    text = gzip.decompress(raw)
    if last_line_cut:
        text = text.rstrip(b"\n")
        text = text[: len(text) - last_line_cut]
    else:
        text = text[: len(text) // 2]
    half = tmp / f"half_{src.name}"
    half.write_bytes(gzip.compress(text))
    stream = stream_events(half)
    list(stream)
    assert stream.stats.balanced() and stream.stats.counts[RowReject.MALFORMED] == 1


def flip_bytes(seed: bytes, flips: list[tuple[int, int]]) -> bytes:
    buf = bytearray(seed)
    for pos, value in flips:
        if buf:
            buf[pos % len(buf)] = value
    return bytes(buf)


def consume(name: str, payload: bytes, *, gz: bool = True) -> None:
    """Any bytes under ``name``: a clear DataFileError or a balanced stream, nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(gzip.compress(payload) if gz else payload)
        try:
            stream = stream_events(path)
            list(stream)
        except DataFileError:
            return
        assert stream.stats.balanced()


def fuzz_tests(
    seeds: list[tuple[str, bytes]], names: list[str] | None = None, *, gz: bool = True
) -> tuple[Callable[..., None], Callable[..., None]]:
    """A venue's two fuzz tests, for ``test_mutated_..., test_random_bytes_... = fuzz_tests(...)``:
    real seeds with flipped bytes (per ``(file name, bytes)``), and random bytes under each of
    ``names`` (default: the seeds' names). Either gives counted rejects or one clear error.
    """

    def mutated(seed: tuple[str, bytes], flips: list[tuple[int, int]]) -> None:
        consume(seed[0], flip_bytes(seed[1], flips), gz=gz)

    def random_bytes(name: str, payload: bytes) -> None:
        consume(name, payload, gz=gz)

    flips = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12)
    choices = names if names is not None else [name for name, _ in seeds]
    return (
        FAST(given(st.sampled_from(seeds), flips)(mutated)),
        FAST(given(st.sampled_from(choices), st.binary(max_size=300))(random_bytes)),
    )


def seed_lines(rel: str, pick: Callable[[list[bytes]], list[bytes]]) -> bytes:
    """Fuzz seed: the lines ``pick`` keeps from a shared gzip log (empty without the data)."""
    from tests.conftest import shared_data_dir

    path = shared_data_dir() / rel
    if not path.is_file():
        return b""
    return b"\n".join(pick(gzip.decompress(path.read_bytes()).split(b"\n"))) + b"\n"


def check_detected_by_content(
    lines: list[str], tmp: Path, misnamed: str, fmt: str, venue: str
) -> None:
    """The venue comes from line 1's host under a wrong name, and from shapes without it."""
    assert detect(write_log(tmp, misnamed, lines)).name == fmt
    no_url = [line for line in lines if not line.startswith("wss://")]
    assert sniff_venue(write_log(tmp, "cryptofeed_x.log.gz", no_url)) == venue


def check_no_market_data(path: Path, *, stream: bool = True) -> None:
    from sapphire.data.registry import load_frames

    with pytest.raises(DataFileError, match="no market-data"):
        load_frames(path)
    if stream:
        with pytest.raises(DataFileError, match="no market-data"):
            stream_events(path)


def check_inspect(
    path: Path, fmt: str, sections: Iterable[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"format:  {fmt}" in out
    assert all(f"[{s}]" in out for s in sections) and "rejected" not in out
