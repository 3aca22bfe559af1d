"""Stopping a training run cleanly on a signal: Ctrl-C (SIGINT), SLURM preemption or ``scancel``
(SIGTERM), and submitit's warning before the time limit (SIGUSR1).

A signal does not interrupt the run where it happens to be (mid-update, the weights and the step
count would disagree). It sets a flag; the training loop checks it after each iteration, writes a
checkpoint of that consistent state, and then :meth:`StopSignals.finish` hands the signal on: to the
handler that was there before ours when it is a Python one (submitit's, which requeues the job and
exits), else it exits with the conventional status ``128 + signal number`` (130, 143, 138). A second
Ctrl-C stops at once, without a checkpoint (the last periodic one stays).
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


class StopRequested(KeyboardInterrupt):
    """Raised at a safe point after a stop signal. A ``KeyboardInterrupt``, so every handler that saves
    on Ctrl-C (our trainer's, the SB3 backend's) saves on it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While active (a context manager), records SIGINT, SIGTERM and SIGUSR1 instead of dying on them."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals can't be caught here
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if self.signum is None:
            self.signum = signum
            hint = " (Ctrl-C again to stop at once, without a checkpoint)" if signum == signal.SIGINT else ""
            log.warning("%s: stopping after this iteration, with a checkpoint%s", signal.Signals(signum).name, hint)

    def check(self) -> None:
        """Raise :class:`StopRequested` if a stop signal has arrived (call where the state is consistent)."""
        if self.signum is not None:
            raise StopRequested(self.signum)

    def finish(self, signum: int) -> None:
        """After the checkpoint: hand the signal to the handler before ours (submitit requeues and exits),
        else exit with status ``128 + signum``."""
        previous = self._previous.get(signum)
        self.__exit__()
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, None)
        sys.exit(128 + signum)
