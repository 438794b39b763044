"""Whole-file writes that readers never see torn, and create-once files: the store's, the
checkpoints', the run claim's and the kill switch's.

Kept apart from the Parquet backend so that a process that only checkpoints (the venue
actor) never imports polars and pyarrow for them: about 0.2 s of CPU at its start, at every
system start."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# files made through a temporary get the mode a plain open() gives (mkstemp makes them
# 0600: another user sharing the store root could not read a run's claim or the kill switch)
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` so readers see the old file or the new one, never a torn one. Each
    writer has a temporary file of its own: with one fixed name, two writers at once (two
    kill-switch commands) wrote into the same file, one's rename took the other's, and a
    torn mix of both landed or a writer failed with FileNotFoundError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` in one step, only if it does not exist (False then):
    written to a file of this process's own, then linked, which fails or makes it whole. A
    file created empty and then written is seen empty by a competitor in between."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.link(name, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(name)
