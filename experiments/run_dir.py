"""A run dir's ownership: one process at a time, nothing left behind by a failed start, Hydra's files
written once the run is known to start.

- :func:`lock_run_dir` takes an exclusive ``fcntl.flock`` on ``<run dir>/.lock`` for the life of the
  run. The kernel releases it when the process ends however it ends (a crash, ``kill -9``), so a lock
  is never stale; a second run into the same dir fails at once naming the holder's PID and host.
  On a network filesystem this relies on its lock support (NFSv4 and Lustre have it).
- The entry points run Hydra with ``hydra.output_subdir: null`` and a job log opened lazily, so Hydra
  makes the run dir and nothing in it; :func:`write_hydra_files` writes ``.hydra/`` after the config
  has been validated (and, for training, the lock taken), and :func:`discard_if_unused` removes a
  dir a failed start made, so a sweep of typos leaves no tree of empty runs.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
HYDRA_DIR = ".hydra"
_made: set[Path] = set()  # what this process wrote into run dirs: all a failed start removes again


class RunDirLocked(RuntimeError):
    """Another process holds the run dir."""


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[Path]:
    """Hold ``run_dir`` exclusively while the block runs; raise :class:`RunDirLocked` at once if another
    process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one run per dir is then the user's to keep
        log.warning("no fcntl on this platform: %s is not locked against a second run", run_dir)
        yield run_dir
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise RunDirLocked(
                f"{run_dir} is in use by another run ({holder}); wait for it to finish, or give this run "
                "another dir (hydra.run.dir=...)"
            ) from None
        try:  # the file we locked must still be the lock file (a failed start may have removed it meanwhile)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since {stamp}\n".encode(), 0)
        _made.add(path)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock


def is_unused(run_dir: Path) -> bool:
    """Whether ``run_dir`` is missing or empty (what Hydra leaves with ``output_subdir: null``)."""
    return not run_dir.exists() or not any(run_dir.iterdir())


def discard_if_unused(run_dir: Path, was_unused: bool) -> None:
    """Remove ``run_dir`` if this process found it unused: a start that failed leaves nothing behind.

    Only what this process made there goes (its lock file, its ``.hydra/``, its job log), then the dir
    itself if that leaves it empty: another process that shares the dir (two runs started in the same
    second get the same default dir) keeps whatever it wrote. (:func:`lock_run_dir` checks that the file it
    locked is still the lock file, so removing it never lets two runs in.)"""
    if not (was_unused and run_dir.exists()):
        return
    for handler in _file_handlers_in(run_dir):
        logging.getLogger().removeHandler(handler)
        handler.close()
        Path(handler.baseFilename).unlink(missing_ok=True)
    for made in [p for p in _made if run_dir in p.parents]:
        if made.is_dir():
            shutil.rmtree(made, ignore_errors=True)
        else:
            made.unlink(missing_ok=True)
        _made.discard(made)
    try:
        run_dir.rmdir()
    except OSError:  # not empty: someone else's files are there
        pass


def write_hydra_files(run_dir: Path, task_cfg: Any, resumed: bool) -> Path:
    """Write Hydra's record of this invocation (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``).

    A fresh run writes ``<run dir>/.hydra/``; a resumed one keeps that and writes its own beside it,
    in ``.hydra/resumed-<time>/``, so the original invocation is never overwritten.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    where = run_dir / HYDRA_DIR
    if resumed:
        where = where / f"resumed-{datetime.datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}"
    where.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {"config.yaml": task_cfg}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        files["hydra.yaml"] = OmegaConf.create({"hydra": hydra_cfg})
        files["overrides.yaml"] = hydra_cfg.overrides.task
    for name, cfg in files.items():
        (where / name).write_text(OmegaConf.to_yaml(cfg))
    _made.add(where)
    return where


def move_log_files(src: Path, dst: Path) -> None:
    """Point the job's log file handlers from ``src`` (Hydra's run dir) to ``dst`` (the run's own dir,
    when resuming a run elsewhere), so one run keeps one dir."""
    for handler in _file_handlers_in(src):
        handler.acquire()
        try:
            handler.close()
            old, new = Path(handler.baseFilename), (dst / Path(handler.baseFilename).name).resolve()
            if old.is_file():  # lines logged before the move: appended to the run's own log
                with new.open("a") as f:
                    f.write(old.read_text())
                old.unlink()
            handler.baseFilename = str(new)
        finally:
            handler.release()


def _file_handlers_in(directory: Path) -> list[logging.FileHandler]:
    """The root logger's file handlers writing into ``directory`` (paths compared resolved: symlinks too)."""
    where = directory.resolve()
    handlers = logging.getLogger().handlers
    return [
        h for h in handlers if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().parent == where
    ]
