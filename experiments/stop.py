"""Stopping a training run cleanly on a signal: Ctrl-C (SIGINT), SLURM preemption or ``scancel``
(SIGTERM), and submitit's warning before the time limit or preemption (SIGUSR2 in current submitit,
SIGUSR1 in older ones, or what ``SUBMITIT_PREEMPT_SIGNAL`` names).

A signal does not interrupt the run where it happens to be (mid-update, the weights and the step
count would disagree). It sets a flag; the training loop checks it after each iteration, writes a
checkpoint of that consistent state, and then :meth:`StopSignals.finish` hands the signal on: to the
handler that was there before ours when it is a Python one (submitit's, which requeues the job and
exits), else it exits with the conventional status ``128 + signal number`` (130, 143, 138, 140). A
second Ctrl-C stops at once, without a checkpoint (the last periodic one stays).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

from agents.checkpoint import StopTraining

log = logging.getLogger(__name__)


def stop_signals() -> tuple[int, ...]:
    """The signals a run stops on: SIGINT, SIGTERM, SIGUSR1, SIGUSR2, and submitit's configured one."""
    names = ["SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "")]
    found = (getattr(signal, n if n.startswith("SIG") else f"SIG{n}", None) for n in names if n)
    return tuple(dict.fromkeys(s for s in found if s is not None))


class StopRequested(StopTraining):
    """Raised at a safe point after a stop signal (a ``StopTraining``: the SB3 backend saves its model on it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While active (a context manager), records the :func:`stop_signals` instead of dying on them; after
    it, :meth:`finish` hands the signal to the handler that was there before."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in stop_signals():
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals can't be caught here
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():  # kept: finish() hands the signal on to them
            signal.signal(signum, previous)

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
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, None)
        sys.exit(128 + signum)
