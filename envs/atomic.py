"""Atomic file writes: checkpoints, models, videos and reports never exist half-written.

Everything is written to a temporary file beside its destination, flushed to disk, then renamed over
it with ``os.replace`` (atomic on POSIX and Windows). A write that fails leaves the old file, if
any, and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block succeeds."""
    path = Path(path)
    # The temp name keeps the suffix: some writers (PIL, ffmpeg) pick the format by it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
