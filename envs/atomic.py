"""Atomic file writes: checkpoints, models, videos and reports never exist half-written.

Everything is written to a temporary file beside its destination, flushed to disk, then renamed over
it with ``os.replace`` (atomic on POSIX and Windows). A write that fails leaves the old file, if
any, and no temporary file behind; a full disk says so (``OSError`` ENOSPC naming the file). The
temporary file gets the mode a plain ``open`` would (0666 less the umask), so labmates on a shared
filesystem can read what a run writes.

Temporary names follow one pattern, ``.<stem>.<random>.tmp<suffix>``; :func:`remove_stale_temps`
clears those a killed process left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block succeeds."""
    path = Path(path)
    # The temp name keeps the suffix: some writers (PIL, ffmpeg) pick the format by it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600, and the mode survives the rename
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            kept = "the previous file is kept" if path.exists() else "nothing was written"
            raise OSError(errno.ENOSPC, f"no space left on the device to write {path}; {kept}") from err
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temps(directory: str | os.PathLike, stems: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` for files named ``<stem>.*`` in ``directory``
    (left by a process killed mid-write); returns what was removed. Only call it while no other
    process writes there (the run dir's lock)."""
    removed = []
    for stem in stems:
        for tmp in Path(directory).glob(f".{stem}.*.tmp*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed
